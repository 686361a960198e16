"""The run's Context: resolved from settings once, checked, and the one route settings reach nodes by."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage

from cairn.errors import CairnError, ModelConfigError
from config import Settings
from graphs.agent.context import Context
from graphs.agent.graph import graph
from tests.fakes import QueuedChatModel


def test_from_settings_takes_every_setting_then_the_overrides(tmp_path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, model="ollama/qwen", model_answer="ollama/big",
                        agent_k=3, model_timeout=9, embedded_port=9999, rrf_k=10)  # fmt: skip
    context = Context.from_settings(settings, k=5, temperature=None)
    assert context.index_dir == str(tmp_path / "index") and context.k == 5 and context.rrf_k == 10
    assert context.node_model("plan") == "ollama/qwen" and context.node_model("answer") == "ollama/big"
    assert context.model_timeout == 9 and context.embedded_url == "http://127.0.0.1:9999/v1"
    assert context.temperature == settings.model_temperature  # None overrides nothing
    assert context.model_config("answer").max_tokens == settings.model_max_tokens
    assert context.model_config("plan").max_tokens == settings.model_judge_max_tokens


def test_names_are_checked_when_the_context_is_resolved() -> None:
    with pytest.raises(CairnError, match=r"Unknown retriever 'fuzzy'.*dense, hybrid, keyword"):
        Context.from_settings(Settings(_env_file=None), retriever="fuzzy")
    with pytest.raises(ModelConfigError):
        Context.from_settings(Settings(_env_file=None, model="gpt-4"))
    with pytest.raises(ValueError):
        Context(k=0)  # the setting's bounds hold for the context too


def test_a_schema_with_defaults_fills_what_a_run_leaves_unset() -> None:
    defaults = Context.from_settings(Settings(_env_file=None, model="ollama/qwen", agent_k=4))
    schema = Context.with_defaults(defaults)
    assert schema(max_rounds=0).as_configurable() == defaults.override(max_rounds=0).as_configurable()
    assert issubclass(schema, Context)


async def test_without_a_context_the_run_reads_configurable(tmp_path, fake_models) -> None:
    """LangServe sends only a config: its `configurable` is read as the run's context."""
    from ingest.pipeline import ingest_repository
    from tests.conftest import SAMPLE_REPO, FakeEmbedder

    ingest_repository(SAMPLE_REPO, Settings(index_dir=tmp_path / "index"), embedder_factory=FakeEmbedder)
    model = QueuedChatModel(default='{"question": "q", "queries": ["wal"], "relevant": [1], "sufficient": true}')
    fake_models(lambda spec, config: model)
    configurable = {"model": "fake/any", "index_dir": str(tmp_path / "index"), "retriever": "keyword", "k": 2,
                    "plan": "model"}  # fmt: skip
    state = await graph.ainvoke({"messages": [HumanMessage("wal checksum")]}, {"configurable": configurable})
    assert len(model.prompts) == 3 and state["answer"]  # plan, analyze, answer all went to the configured model
    assert len(state["documents"]) <= 2 * len(state["queries"])
