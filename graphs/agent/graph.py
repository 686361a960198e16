"""The agent graph: plan → retrieve → analyze → (refine → retrieve)* → answer."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from graphs.agent.context import Context
from graphs.agent.nodes import analyze, answer, plan, refine, retrieve, route_after_analyze
from graphs.agent.state import AgentState, InputState


def build_graph() -> StateGraph:
    """Return the uncompiled agent graph (compile it with the checkpointer of your choice)."""
    builder = StateGraph(AgentState, input_schema=InputState, context_schema=Context)
    builder.add_node("plan", plan)
    builder.add_node("retrieve", retrieve)
    builder.add_node("analyze", analyze)
    builder.add_node("refine", refine)
    builder.add_node("answer", answer)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "retrieve")
    builder.add_edge("retrieve", "analyze")
    builder.add_conditional_edges("analyze", route_after_analyze)
    builder.add_edge("refine", "retrieve")
    builder.add_edge("answer", END)
    return builder


graph = build_graph().compile(name="cairn-agent")
