"""The agent graph: plan → retrieve → analyze → (refine → retrieve)* → answer."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from config import Node
from graphs.agent.context import Context
from graphs.agent.nodes import analyze, answer, plan, refine, retrieve, route_after_analyze
from graphs.agent.state import AgentState, InputState

GRAPH_NAME = "cairn-agent"


def build_graph(context_schema: type[Context] = Context) -> StateGraph[AgentState, Context, InputState, AgentState]:
    """Return the uncompiled agent graph (compile it with the checkpointer of your choice).

    ``context_schema`` is ``Context`` or a subclass with other defaults (``Context.with_defaults``),
    which is what LangGraph Studio shows and fills a run's unset fields from.
    """
    builder = StateGraph(AgentState, input_schema=InputState, context_schema=context_schema)
    builder.add_node(Node.PLAN, plan)
    builder.add_node(Node.RETRIEVE, retrieve)
    builder.add_node(Node.ANALYZE, analyze)
    builder.add_node(Node.REFINE, refine)
    builder.add_node(Node.ANSWER, answer)
    builder.add_edge(START, Node.PLAN)
    builder.add_edge(Node.PLAN, Node.RETRIEVE)
    builder.add_edge(Node.RETRIEVE, Node.ANALYZE)
    builder.add_conditional_edges(Node.ANALYZE, route_after_analyze)
    builder.add_edge(Node.REFINE, Node.RETRIEVE)
    builder.add_edge(Node.ANSWER, END)
    return builder


graph = build_graph().compile(name=GRAPH_NAME)
