"""The agent over several repositories: one by name, all of them fused, sessions keeping to theirs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from cairn.errors import UnknownRepository
from graphs.agent.context import Context
from graphs.agent.graph import build_graph, graph
from graphs.agent.resources import load_indexes, resources_for
from graphs.agent.sessions import Recorded, recorded, repo_mismatch, session_metadata
from tests.conftest import SAMPLE_REPO, FakeEmbedder
from tests.repos import ingest_as, repo_settings, write_billing_repo


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with 'tinykv' (the sample), 'billing', and 'odd' (built with another embedding model)."""
    base = tmp_path_factory.mktemp("repos")
    tinykv = base / "src" / "tinykv"
    shutil.copytree(SAMPLE_REPO, tinykv)
    ingest_as(base / "data", tinykv)
    ingest_as(base / "data", write_billing_repo(base / "src" / "billing"))
    ingest_as(base / "data", write_billing_repo(base / "src" / "odd"), embedding_model="/models/other")
    return base / "data"


def context(data_dir: Path, **values) -> Context:
    settings = repo_settings(data_dir, model="instant", agent_retriever="keyword")
    return Context.from_settings(settings, **values)


def ask(question: str) -> dict:
    return {"messages": [HumanMessage(question)]}


def test_the_context_resolves_repositories_by_name(data_dir: Path) -> None:
    assert context(data_dir).repo == "*"  # several, none chosen: all of them
    assert context(data_dir, repo="billing").index_spec().index_dir == data_dir / "repos" / "billing" / "index"
    assert set(context(data_dir).index_specs()) == {"billing", "odd", "tinykv"}
    with pytest.raises(UnknownRepository, match="billing, odd, tinykv"):
        context(data_dir, repo="nope").index_spec()


async def test_a_named_repository_answers_from_its_own_code(data_dir: Path) -> None:
    state = await graph.ainvoke(ask("How is an invoice total rounded?"), context=context(data_dir, repo="billing"))
    assert state["citations"] and all(c.startswith(("billing/invoice.py:", "README.md:")) for c in state["citations"])
    assert all(not d.metadata["path"].startswith("tinykv/") for d in state["documents"])


async def test_all_repositories_fused_with_prefixed_citations_that_are_checked(data_dir: Path) -> None:
    run = context(data_dir, repo="*")
    indexes = load_indexes(run)
    assert set(indexes) == {"billing", "tinykv"}  # 'odd' (another embedding model) is left out; the others serve
    state = await graph.ainvoke(ask("round_invoice_total and the LRU cache eviction"), context=run)
    repos = {d.metadata["repo"] for d in state["documents"]}
    assert repos == {"billing", "tinykv"}
    assert all(d.metadata["citation"].startswith(f"{d.metadata['repo']}/") for d in state["documents"])
    # the instant model cites the first excerpt it is shown, prefixed; the check keeps it
    assert state["citations"] and state["citations"][0].split("/", 1)[0] in {"billing", "tinykv"}
    assert not state["dropped_citations"]
    assert all(s["citation"].split("/", 1)[0] in repos for s in state["sources"])


async def test_a_session_keeps_to_its_repository(data_dir: Path) -> None:
    saver = InMemorySaver()
    compiled = build_graph().compile(checkpointer=saver)
    billing = context(data_dir, repo="billing")
    config = {"configurable": {"thread_id": "s1"}, "metadata": session_metadata(billing)}
    assert await recorded(saver, "s1") == Recorded()
    await compiled.ainvoke(ask("How is an invoice total rounded?"), config, context=billing)
    # no title recorded (a session from before titles were): its first question stands for one
    assert await recorded(saver, "s1") == Recorded("billing", "How is an invoice total rounded?")
    assert repo_mismatch("billing", billing, "s1") is None
    message = repo_mismatch("billing", context(data_dir, repo="*"), "s1")
    assert message == "The session 's1' is about 'billing', and this turn asks about all repositories; " \
        "a session keeps to one repository"  # fmt: skip
    assert repo_mismatch(None, billing, "old") is None  # sessions from before names record nothing


def test_across_repositories_each_tool_takes_the_repository(data_dir: Path, monkeypatch) -> None:
    from retrievers import search_index

    # search_code searches hybrid: freshly loaded indexes embed queries with the fake embedder
    monkeypatch.setattr(search_index, "_open_indexes", type(search_index._open_indexes)())
    monkeypatch.setattr(search_index, "_embedder", lambda *args: FakeEmbedder())
    tools = {t.name: t for t in resources_for(context(data_dir, repo="*", use_tools=True)).tools}
    assert set(tools) == {"search_code", "read_file", "grep", "outline", "find_definition", "find_references",
                          "imports", "imported_by"}  # fmt: skip
    assert tools["read_file"].args["repo"]["enum"] == ["billing", "tinykv"]
    found = tools["search_code"].invoke({"type": "tool_call", "id": "1", "name": "search_code",
                                         "args": {"query": "invoice", "repo": "billing", "k": 2}})  # fmt: skip
    assert found.status == "success" and found.artifact
    assert all(d.metadata["citation"].startswith("billing/") for d in found.artifact)
    assert "[billing/billing/invoice.py:" in found.content
    args = {"path": "tinykv/cache.py", "repo": "tinykv", "end_line": 3}
    read = tools["read_file"].invoke({"type": "tool_call", "id": "2", "name": "read_file", "args": args})
    assert read.content.startswith("[tinykv/tinykv/cache.py:1-3]")
    grep = tools["grep"].invoke({"type": "tool_call", "id": "3", "name": "grep",
                                 "args": {"pattern": "def round_invoice", "repo": "billing"}})  # fmt: skip
    assert grep.content.startswith("billing/billing/invoice.py:1: def round_invoice_total")
    refused = tools["read_file"].invoke({"type": "tool_call", "id": "4", "name": "read_file",
                                         "args": {"path": "../tinykv/cache.py", "repo": "billing"}})  # fmt: skip
    assert refused.status == "error" and "billing:" in refused.content


def test_an_index_folder_given_for_a_run_is_searched_instead_of_the_repositories(data_dir: Path) -> None:
    run = context(data_dir, index_dir=str(data_dir / "repos" / "billing" / "index"))  # as the eval does
    assert run.repo is None and run.index_spec().index_dir == data_dir / "repos" / "billing" / "index"
