"""Model-call failures translated into errors a user can act on (CLI exit 10, HTTP 503/504)."""

from __future__ import annotations

from cairn.errors import ModelUnreachable


def translate_model_error(exc: BaseException, *, model: str, timeout: float) -> ModelUnreachable | None:
    """Return a ModelUnreachable for a model client's connection/timeout error, or None for other errors."""
    import httpx
    import openai

    if isinstance(exc, ModelUnreachable):
        return exc
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException | TimeoutError):
        return ModelUnreachable(
            f"The model endpoint did not answer within {timeout:g}s",
            "raise CAIRN_MODEL_TIMEOUT, use a smaller model, or set CAIRN_MODEL_FALLBACK",
            timed_out=True,
        )
    if isinstance(exc, openai.APIConnectionError | httpx.ConnectError | ConnectionError):
        return ModelUnreachable(
            f"The model endpoint is unreachable ({model}): {exc}",
            "start the model server (cairn model serve, ollama serve, vllm serve) or set CAIRN_MODEL_FALLBACK",
        )
    if isinstance(exc, openai.NotFoundError):
        return ModelUnreachable(f"The model endpoint does not know the model: {exc}", "check CAIRN_MODEL")
    return None
