"""One exception family. Messages are one line a user can act on; `exit_code` is what the CLI returns."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit


class FormfitError(Exception):
    """Base of every error formfit raises on purpose. Bad input from the user: exit code 2."""

    exit_code = 2


class TaskError(FormfitError):
    """A task folder or task.yaml is wrong."""


class DataError(FormfitError):
    """A data file is unreadable or malformed."""


class ConfigError(FormfitError):
    """A command-line option or argument has a bad value."""


class ModelError(FormfitError):
    """An unknown model name, or a model that cannot be loaded or reached."""


class PromptTooLong(FormfitError):
    """A prompt (instruction, demos and input) does not fit the model's context window. Evaluation scores such a
    row as a failure of kind `too_long` instead of stopping."""


class LMCallError(FormfitError):
    """An LM call kept failing after every retry (timeouts, 429, 5xx, dead server)."""

    exit_code = 1


class BudgetExhausted(FormfitError):
    """The LM-call (or dollar) budget is spent; what was computed before is kept."""

    exit_code = 1


@contextmanager
def writing(path: object, what: str) -> Iterator[None]:
    """An OSError while writing `what` at `path` becomes one ConfigError naming both."""
    try:
        yield
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write {what} ({exc.strerror or exc})") from None


def check_format(path: object, saved: object, supported: int) -> None:
    """A file a newer formfit saved (its "format" above `supported`) is a ConfigError saying so."""
    found = saved.get("format") if isinstance(saved, dict) else None
    if isinstance(found, int) and found > supported:
        raise ConfigError(f"{path}: saved by a newer formfit (format {found}; this one reads up to {supported}), "
                          "upgrade formfit to load it")


def located(path: object, line: int | None = None) -> str:
    """Render `file:line` (or just `file`) for error messages."""
    return f"{path}:{line}" if line else f"{path}"


# a word of an environment variable's name that says it holds a credential: OPENAI_API_KEY, WATSONX_APIKEY,
# AWS_BEARER_TOKEN_BEDROCK, VERTEXAI_CREDENTIALS, ... (not TOKENIZERS_PARALLELISM: whole words only)
_SECRET_NAME = re.compile(r"(?:^|_)(?:[A-Z]*KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(?:_|$)")


def secret_values() -> list[str]:
    """Values of environment variables that look like credentials (API keys, tokens)."""
    return [value for name, value in os.environ.items() if _SECRET_NAME.search(name.upper()) and len(value) >= 8]


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s]+@")
# the value of a query parameter named like a credential: ?api_key=..., &token=..., &sig=... (Azure SAS), ...
_QUERY_SECRET = re.compile(r"([?&][^=&#\s]*(?:key|token|secret|passw|sig|auth|credential)[^=&#\s]*=)[^&#\s]+",
                           re.IGNORECASE)


def redact(text: str) -> str:
    """Replace any credential from the environment, any user:password@ of a URL and the value of any credential
    query parameter in `text` with `***`."""
    for value in secret_values():
        text = text.replace(value, "***")
    return _QUERY_SECRET.sub(r"\1***", _URL_CREDENTIALS.sub("***@", text))


def public_url(url: str | None) -> str | None:
    """A URL without user:password and with `***` for the values of credential query parameters (`api_key=`,
    `token=`, `sig=`, ...), so no credential is written into a file or a message."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # an unparsable URL (bad IPv6 bracket): keep nothing before its last @
        url = _URL_CREDENTIALS.sub("", url)
    else:
        if "@" in parts.netloc:
            url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return _QUERY_SECRET.sub(r"\1***", url)
