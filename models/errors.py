"""Model-call failures translated into errors a user can act on (CLI exit 10, HTTP 503/504)."""

from __future__ import annotations

from cairn.errors import CairnError
from config import Settings


class ModelUnreachable(CairnError):
    """The model endpoint did not answer (down, timing out, or not serving the model)."""

    exit_code = 10

    def __init__(self, message: str, hint: str = "", *, timed_out: bool = False) -> None:
        super().__init__(message, hint)
        self.timed_out = timed_out

    @property
    def http_status(self) -> int:
        """504 when the endpoint timed out, 503 when it is down or refused."""
        return 504 if self.timed_out else 503


def translate_model_error(exc: BaseException, settings: Settings) -> ModelUnreachable | None:
    """Return a ModelUnreachable for a model client's connection/timeout error, or None for other errors."""
    import httpx
    import openai

    if isinstance(exc, ModelUnreachable):
        return exc
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException | TimeoutError):
        return ModelUnreachable(
            f"The model endpoint did not answer within {settings.model_timeout:g}s",
            "raise CAIRN_MODEL_TIMEOUT, use a smaller model, or set CAIRN_MODEL_FALLBACK",
            timed_out=True,
        )
    if isinstance(exc, openai.APIConnectionError | httpx.ConnectError | ConnectionError):
        return ModelUnreachable(
            f"The model endpoint is unreachable ({settings.model}): {exc}",
            "start the model server (cairn model serve, ollama serve, vllm serve) or set CAIRN_MODEL_FALLBACK",
        )
    if isinstance(exc, openai.NotFoundError):
        return ModelUnreachable(f"The model endpoint does not know the model: {exc}", "check CAIRN_MODEL")
    return None
