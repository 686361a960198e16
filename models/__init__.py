"""Chat models: one factory for OpenAI-compatible endpoints, Ollama and the embedded llama.cpp model."""

from models.factory import (
    FailoverChatModel,
    ModelConfigError,
    ModelSpec,
    available_providers,
    build_chat_model,
    parse_model_spec,
    probe_url,
    register_provider,
)

__all__ = [
    "FailoverChatModel",
    "ModelConfigError",
    "ModelSpec",
    "available_providers",
    "build_chat_model",
    "parse_model_spec",
    "probe_url",
    "register_provider",
]
