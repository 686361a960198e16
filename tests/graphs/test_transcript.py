"""A long session moves its older turns out of the state a turn loads, and its prompts stay the same."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from graphs.agent.budget import VERBATIM_TURNS, fit_history
from graphs.agent.graph import build_graph
from graphs.agent.transcript import (
    KEPT_TURNS,
    TranscriptUnavailable,
    aconversation,
    answered,
    conversation,
    history_of,
    move_out,
)
from ingest.pipeline import ingest_repository
from tests.conftest import SAMPLE_REPO, FakeEmbedder
from tests.fakes import QueuedChatModel
from tests.graphs.test_agent import PLAN_OK, context, fake_provider, models  # noqa: F401 (its autouse fixture)

WINDOW = 4096  # a 512-token history budget


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("transcript") / "index"
    from config import Settings

    ingest_repository(SAMPLE_REPO, Settings(index_dir=path), embedder_factory=FakeEmbedder)
    return str(path)


def answer_text(turn: int, lengths: tuple[int, ...] = (12, 60, 25, 300, 8)) -> str:
    """Answers of uneven length (some long enough that one alone fills the verbatim share)."""
    words = lengths[turn % len(lengths)]
    return f"Turn {turn}: decode_records checks the CRC32 " + " ".join(f"word{turn}x{i}" for i in range(words))


def pairs(messages: list[BaseMessage]) -> list[tuple[str, str]]:
    return [(m.type, m.text) for m in messages]


@pytest.mark.parametrize(("lengths", "window"), [((12, 60, 25, 300, 8), WINDOW), ((2,), 4 * WINDOW)],
                         ids=["uneven", "short"])  # fmt: skip
async def test_forty_turns_keep_a_bounded_state_the_whole_conversation_and_the_same_prompts(
    index_dir, lengths, window
) -> None:
    """Short answers in a large window: more turns fit than the policy gives word for word (VERBATIM_TURNS)."""
    turns = 40
    ctx = context(index_dir, plan="auto", context_tokens=window, **models(
        plan=QueuedChatModel(default=PLAN_OK),
        analyze=QueuedChatModel(default='{"relevant": [1], "sufficient": true}'),
        answer=QueuedChatModel(replies=[answer_text(t, lengths) for t in range(turns)]),
    ))  # fmt: skip
    memory = build_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "forty"}}
    whole: list[BaseMessage] = []
    for turn in range(turns):
        # with a line separator now and then: JSON leaves it unescaped in the transcript's lines
        question = f"how does decode_records detect torn writes? (turn {turn})" + "\u2028pasted" * (turn % 3 == 0)
        values = (await memory.aget_state(config)).values
        # the history the turn will be given is the policy's over the whole conversation, as before
        before = fit_history(whole, ctx.history_tokens)
        now = history_of(values.get("messages", []), ctx.history_tokens, values)
        assert pairs(now.messages) == pairs(before.messages) and now.as_dict() == before.as_dict(), turn

        state = await memory.ainvoke({"messages": [HumanMessage(question)]}, config, context=ctx)
        assert state["history"] == before.as_dict()
        whole += [HumanMessage(question), state["messages"][-1]]
        assert len(state["messages"]) <= 2 * KEPT_TURNS
        assert pairs(conversation(state)) == pairs(whole)
        assert answered(state) == turn + 1

    assert state["moved"] > 20 and state["history"]["summarised"] > 0
    assert len(state["digest"]) <= state["moved"]
    if window > WINDOW:
        assert state["history"]["verbatim"] == VERBATIM_TURNS and state["history"]["dropped"] == 0, state["history"]
    else:
        assert state["history"]["dropped"] > 0


async def test_a_run_without_a_session_keeps_every_message_it_was_sent(index_dir) -> None:
    ctx = context(index_dir, plan="auto", context_tokens=WINDOW, **models(
        plan=QueuedChatModel(default=PLAN_OK),
        analyze=QueuedChatModel(default='{"relevant": [1], "sufficient": true}'),
        answer=QueuedChatModel(default=answer_text(3)),
    ))  # fmt: skip
    sent: list[BaseMessage] = []
    for turn in range(30):
        sent += [HumanMessage(f"question {turn}"), AIMessage(answer_text(turn))]
    state = (
        await build_graph()
        .compile()
        .ainvoke({"messages": [*sent, HumanMessage("and how does decode_records check it?")]}, context=ctx)
    )
    assert len(state["messages"]) == 62 and state["transcript"] == "" and state["moved"] == 0


async def test_a_session_written_before_turns_moved_out_moves_them_on_its_next_turn(index_dir) -> None:
    ctx = context(index_dir, plan="auto", context_tokens=WINDOW, **models(
        plan=QueuedChatModel(default=PLAN_OK),
        analyze=QueuedChatModel(default='{"relevant": [1], "sufficient": true}'),
        answer=QueuedChatModel(default="It checks the CRC32."),
    ))  # fmt: skip
    memory = build_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "old"}}
    old: list[BaseMessage] = []
    for turn in range(30):
        old += [HumanMessage(f"question {turn}"), AIMessage(answer_text(turn))]
    await memory.aupdate_state(config, {"messages": old})  # every turn in messages, as older sessions are
    before = fit_history(old, ctx.history_tokens)

    question = HumanMessage("and how does decode_records check it?")
    state = await memory.ainvoke({"messages": [question]}, config, context=ctx)
    assert state["history"] == before.as_dict()
    assert len(state["messages"]) < 2 * KEPT_TURNS and state["moved"] + len(state["messages"]) // 2 == 31
    assert pairs(conversation(state)) == pairs([*old, question, state["messages"][-1]])


def test_moving_out_keeps_whole_turns_and_at_least_the_last_two() -> None:
    long = " ".join(["word"] * 2000)
    messages: list[BaseMessage] = []
    for turn in range(5):
        messages += [HumanMessage(f"q{turn}", id=f"h{turn}"), AIMessage(long, id=f"a{turn}")]
    update = move_out(messages, 512, {})
    assert [m.id for m in update["messages"]] == ["h0", "a0", "h1", "a1", "h2", "a2"]
    assert update["moved"] == 3 and len(update["digest"]) == 3 and update["transcript"].count("\n") == 6
    assert move_out(messages[-4:], 512, {}) == {}  # two turns always stay


class LoggingSaver(InMemorySaver):
    """An in-memory checkpointer that keeps a transcript log (``TranscriptLog``), as the Redis saver does.

    ``failing`` appends raise, as a Redis that went away would.
    """

    def __init__(self) -> None:
        super().__init__()
        self.logs: dict[str, list[str]] = {}
        self.failing = False

    async def aappend_transcript(self, thread_id: str, entry: str) -> int:
        if self.failing:
            raise TranscriptUnavailable("Redis went away")
        self.logs.setdefault(thread_id, []).append(entry)
        return len(self.logs[thread_id]) - 1

    async def aread_transcript(self, thread_id: str, count: int) -> list[str]:
        return self.logs.get(thread_id, [])[:count]


def logging_context(index_dir: str, turns: int, lengths: tuple[int, ...] = (12, 60, 25, 300, 8)):
    return context(index_dir, plan="auto", context_tokens=WINDOW, **models(
        plan=QueuedChatModel(default=PLAN_OK),
        analyze=QueuedChatModel(default='{"relevant": [1], "sufficient": true}'),
        answer=QueuedChatModel(replies=[answer_text(t, lengths) for t in range(turns)]),
    ))  # fmt: skip


async def test_a_checkpointer_with_a_transcript_log_keeps_the_moved_turns_out_of_the_state(index_dir) -> None:
    """The state names its latest entry; the log has the lines, in order; a failed append waits in the state."""
    turns = 30
    ctx = logging_context(index_dir, turns)
    saver = LoggingSaver()
    memory = build_graph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "logged"}}
    whole: list[BaseMessage] = []
    for turn in range(turns):
        saver.failing = turn in (20, 21)  # Redis away for two turns: their lines wait in the state
        if turn == 25:  # an entry of a turn that was taken back: in no state's chain
            saver.logs["logged"].append('3\n{"type": "human", "content": "taken back"}\n')
        question = f"how does decode_records detect torn writes? (turn {turn})"
        state = await memory.ainvoke({"messages": [HumanMessage(question)]}, config, context=ctx)
        whole += [HumanMessage(question), state["messages"][-1]]
        assert pairs(await aconversation(saver, "logged", state)) == pairs(whole), turn
        assert answered(state) == turn + 1
        if turn == 21:
            assert '"human"' in state["transcript"]  # the failed turns' lines, waiting for the log
        elif turn < 20:
            assert state["transcript"] == "", turn
    assert state["moved"] > 10 and state["transcript"] == "" and state["logged"] == len(saver.logs["logged"])
    assert 0 < len(saver.logs["logged"]) < state["moved"]  # the failed turns went in one entry, with the next's
    # without the log, the state alone has only what it kept
    assert len(conversation(state)) == len(state["messages"])


async def test_two_turns_from_one_checkpoint_leave_the_latest_its_own_conversation(index_dir) -> None:
    """Two turns on a session at once both start from its latest checkpoint (so does going back to it in time).

    Both append an entry after the same one; the checkpoint written last reads its own chain, not the other's.
    """
    turns = 12
    saver = LoggingSaver()
    memory = build_graph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "raced"}}
    ctx = logging_context(index_dir, turns, lengths=(300,))  # every turn moves one out
    whole: list[BaseMessage] = []
    for turn in range(turns - 2):
        question = f"how does decode_records detect torn writes? (turn {turn})"
        state = await memory.ainvoke({"messages": [HumanMessage(question)]}, config, context=ctx)
        whole += [HumanMessage(question), state["messages"][-1]]
    start = (await memory.aget_state(config)).config
    first = await memory.ainvoke({"messages": [HumanMessage("and decode_records? (raced 0)")]}, start, context=ctx)
    second = await memory.ainvoke({"messages": [HumanMessage("and decode_records? (raced 1)")]}, start, context=ctx)
    assert first["logged"] == state["logged"] + 1 and second["logged"] == state["logged"] + 2
    latest = (await memory.aget_state(config)).values
    assert latest["logged"] == second["logged"]
    shown = pairs(await aconversation(saver, "raced", latest))
    assert shown == pairs([*whole, HumanMessage("and decode_records? (raced 1)"), second["messages"][-1]])
    assert pairs(await aconversation(saver, "raced", first))[-2:] == pairs(
        [HumanMessage("and decode_records? (raced 0)"), first["messages"][-1]]
    )
