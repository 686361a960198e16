"""LangGraph graphs; each folder ends with `graph = builder.compile(...)`, which langgraph.json names."""
