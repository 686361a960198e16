"""The agent as LangGraph Studio and ``langgraph dev`` load it (``langgraph.json`` points here).

This module is where that command starts: the ``CAIRN_*`` settings (and ``.env``) are resolved
once, at load, into the defaults of the graph's context schema. Studio shows them, and a run's
context takes every field the user did not set from them.
"""

from __future__ import annotations

from config import Settings
from graphs.agent.context import Context
from graphs.agent.graph import GRAPH_NAME, build_graph

defaults = Context.from_settings(Settings())
graph = build_graph(Context.with_defaults(defaults)).compile(name=GRAPH_NAME)
