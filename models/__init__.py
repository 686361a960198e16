"""Chat models: one factory for OpenAI-compatible endpoints, Ollama and the embedded llama.cpp model."""

from models.factory import (
    PROVIDERS,
    ModelConfig,
    ModelSpec,
    available_providers,
    build_chat_model,
    chat_model,
    embedded_base_url,
    parse_model_spec,
    probe_url,
    register_provider,
)

__all__ = [
    "PROVIDERS",
    "ModelConfig",
    "ModelSpec",
    "available_providers",
    "build_chat_model",
    "chat_model",
    "embedded_base_url",
    "parse_model_spec",
    "probe_url",
    "register_provider",
]
