"""The question-answering agent graph."""
