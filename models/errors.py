"""Model-call failures translated into errors a user can act on (CLI exit 10, HTTP 503/504)."""

from __future__ import annotations

from cairn.errors import ModelUnreachable


def _transport_errors() -> tuple[type[BaseException], ...]:
    """httpx's transport errors, and those of its fork httpx2, which newer openai releases speak."""
    import httpx

    errors: list[type[BaseException]] = [httpx.TransportError]
    try:
        import httpx2

        errors.append(httpx2.TransportError)
    except ImportError:
        pass
    return tuple(errors)


def translate_model_error(
    exc: BaseException, *, model: str, timeout: float, retries: int = 0
) -> ModelUnreachable | None:
    """Return a ModelUnreachable for a model client's connection/timeout error, or None for other errors.

    ``retries`` is how many times the client tried again after a timeout, so the message says how long
    the caller really waited (each try waits up to ``timeout``).
    """
    import httpx
    import openai

    if isinstance(exc, ModelUnreachable):
        return exc
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException | TimeoutError):
        tries = f" on each of {retries + 1} tries (up to {timeout * (retries + 1):g}s in all)" if retries else ""
        return ModelUnreachable(
            f"The model endpoint did not answer within {timeout:g}s{tries}",
            "raise CAIRN_MODEL_TIMEOUT, use a smaller model, or set CAIRN_MODEL_FALLBACK",
            timed_out=True,
        )
    if isinstance(exc, openai.APIConnectionError | httpx.ConnectError | ConnectionError):
        return ModelUnreachable(
            f"The model endpoint is unreachable ({model}): {exc}",
            "start the model server (cairn model serve, ollama serve, vllm serve) or set CAIRN_MODEL_FALLBACK",
        )
    if isinstance(exc, _transport_errors()):  # a stream that broke off: the server closed or died mid-answer
        return ModelUnreachable(
            f"The model endpoint ({model}) stopped in the middle of its answer ({type(exc).__name__})",
            "check the model server's log (did it crash or restart?); ask again",
        )
    if isinstance(exc, openai.NotFoundError):
        return ModelUnreachable(f"The model endpoint does not know the model: {exc}", "check CAIRN_MODEL")
    if isinstance(exc, openai.InternalServerError):
        return ModelUnreachable(
            f"The model endpoint failed to answer ({model}): HTTP {exc.status_code}",
            "check the model server's log; ask again",
        )
    return None
