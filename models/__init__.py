"""Chat models: one factory for OpenAI-compatible endpoints, Ollama and the embedded llama.cpp model."""

from models.factory import (
    PROVIDERS,
    AnswerProbe,
    ModelConfig,
    ModelSpec,
    answer_probe,
    available_providers,
    build_chat_model,
    build_judge,
    chat_model,
    clear_model_caches,
    embedded_base_url,
    judge_model,
    parse_model_spec,
    probe_url,
    register_provider,
)
from models.structured import Judgement

__all__ = [
    "PROVIDERS",
    "AnswerProbe",
    "Judgement",
    "ModelConfig",
    "ModelSpec",
    "answer_probe",
    "available_providers",
    "build_chat_model",
    "build_judge",
    "chat_model",
    "clear_model_caches",
    "embedded_base_url",
    "judge_model",
    "parse_model_spec",
    "probe_url",
    "register_provider",
]
