"""The HTTP service: FastAPI app (``serving.app.create_app``), OpenAI-compatible chat, LangServe routes,
the Redis checkpointer for sessions (``serving.checkpoint``), access control (``serving.security``)."""
