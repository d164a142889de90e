"""Retrying remote calls: which failures deserve another try, how long to wait, and the error a user sees."""

from __future__ import annotations

import math
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TypeVar

from .errors import ConfigError, FormfitError, LMCallError, ModelError, PromptTooLong, redact

T = TypeVar("T")
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}
_RETRYABLE_NAMES = {
    "Timeout", "APITimeoutError", "ReadTimeout", "RateLimitError", "ServiceUnavailableError", "InternalServerError",
    "BadGatewayError", "JSONDecodeError", "APIResponseValidationError", "MalformedResponse",
}
_CONNECTION_NAMES = {"APIConnectionError", "ConnectError", "ConnectionError", "RemoteProtocolError"}
_TOO_LONG = re.compile(r"exceeds? (the )?context window|maximum context length", re.IGNORECASE)
# raised by the client before any request (LiteLLM wraps them as a 500 or a connection error)
_NO_KEY = re.compile(r"missing ([\w-]+ )?(credentials|api key)|api_key client option must be set", re.IGNORECASE)
BASE_ENV = "FORMFIT_RETRY_BASE_S"


def default_base_s() -> float:
    """The first backoff step in seconds: 0.5, or `$FORMFIT_RETRY_BASE_S` (tests set it small)."""
    text = os.environ.get(BASE_ENV, "").strip()
    if not text:
        return 0.5
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{BASE_ENV} must be a number of seconds >= 0, got {text!r}")
    return value


class MalformedResponse(Exception):
    """A success status whose body lacks what every answer has (e.g. no choices): worth another try."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; a server's Retry-After wins when it asks for longer.
    `base_s` defaults to 0.5 s, or to `$FORMFIT_RETRY_BASE_S` when set."""

    max_retries: int = 5
    base_s: float = field(default_factory=default_base_s)
    cap_s: float = 30.0

    def delay(self, attempt: int, exc: BaseException) -> float:
        backoff = random.uniform(0, min(self.cap_s, self.base_s * 2**attempt))
        return min(self.cap_s, max(backoff, retry_after_of(exc) or 0.0))

    def run(self, call: Callable[[], T], on_retry: Callable[[], None] | None = None,
            stop: threading.Event | None = None) -> tuple[T, int]:
        """Call until it succeeds; returns (result, retries). Raises the last error if not retryable, out of tries,
        or once `stop` is set (a Ctrl-C: the call in flight ends, no further try starts)."""
        for attempt in range(self.max_retries + 1):
            try:
                return call(), attempt
            except Exception as exc:
                if not is_retryable(exc) or attempt == self.max_retries or stop is not None and stop.is_set():
                    raise
                if on_retry is not None:
                    on_retry()
                if stop is None:
                    time.sleep(self.delay(attempt, exc))
                elif stop.wait(self.delay(attempt, exc)):
                    raise
        raise AssertionError("unreachable")


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (litellm and openai errors have `status_code`)."""
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes (LiteLLM wraps a refused connection in a 500 `InternalServerError`)."""
    chain: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in chain):
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return chain


def is_connection_error(exc: BaseException) -> bool:
    """No answer from the endpoint at all: refused, reset, DNS failure (anywhere in the cause chain)."""
    return any(isinstance(cause, ConnectionError) or _names(cause) & _CONNECTION_NAMES for cause in _chain(exc))


def is_retryable(exc: BaseException) -> bool:
    """Timeouts, rate limits, server errors and dropped connections are worth another try; nothing else is."""
    if isinstance(exc, FormfitError) or is_missing_key(exc):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)) or _names(exc) & (_RETRYABLE_NAMES | _CONNECTION_NAMES):
        return True
    return status_of(exc) in RETRYABLE_STATUS


def is_missing_key(exc: BaseException) -> bool:
    """The provider's API key is not set (OpenAI's client, LiteLLM's Gemini route, ...): no try can succeed."""
    return any(_NO_KEY.search(str(cause)) for cause in _chain(exc))


def is_too_long(exc: BaseException) -> bool:
    """The prompt does not fit the context window: LiteLLM's `ContextWindowExceededError`, llama.cpp's
    "Requested tokens (N) exceed context window of M", or an OpenAI-style "maximum context length" 400."""
    return any("ContextWindowExceededError" in _names(cause) or _TOO_LONG.search(str(cause)) for cause in _chain(exc))


def retry_after_of(exc: BaseException) -> float | None:
    """Seconds the server asked to wait: `retry-after-ms` (OpenAI, Azure), else `Retry-After` as seconds or as an
    HTTP date; None when absent or unreadable."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    milliseconds = _number(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    text = headers.get("retry-after")
    seconds = _number(text)
    if seconds is not None or not isinstance(text, str):
        return seconds
    try:
        return parsedate_to_datetime(text).timestamp() - time.time()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _number(text: object) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def user_error(exc: Exception, target: str, endpoint: str, ever_answered: bool, max_retries: int) -> FormfitError:
    """The one-line error for a call that failed for good. `ever_answered`: did this endpoint ever reply?"""
    status = status_of(exc)
    if is_too_long(exc):
        return PromptTooLong(f"{target}: prompt does not fit the context window ({_first_line(exc)})")
    if status in (401, 403) or is_missing_key(exc):
        reason = "no API key" if is_missing_key(exc) else status
        return ConfigError(f"{target}: not authorised ({reason}); set the provider's API key in the environment")
    if status == 404:
        return ModelError(f"{target}: not found at the provider ({status})")
    what = f"{type(exc).__name__}: {_first_line(exc)}"
    if is_connection_error(exc) and not ever_answered:
        return ModelError(f"cannot reach {endpoint} ({what})")
    tries = f" after {max_retries + 1} attempts" if is_retryable(exc) else ""
    return LMCallError(f"{target}: call failed{tries} ({what})")


def _first_line(exc: BaseException) -> str:
    """The exception's message, redacted, first line, at most 200 characters."""
    return redact(str(exc)).splitlines()[0][:200] if str(exc).strip() else ""
