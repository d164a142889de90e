"""A counting HTTP proxy in front of an OpenAI-compatible server (stdlib only), for bench/vs_dspy.py.

Every request is forwarded to the upstream server unchanged. Each POST to `.../chat/completions` or
`.../completions` that the upstream answers is one LM call: it is charged to the meter's current tag with the
`usage.prompt_tokens` / `usage.completion_tokens` of the response. Cache hits of the clients never get here, so the
meter counts real LM calls only, the same way for every client.

The meter persists its counters (and each tag's accumulated wall time) to a JSON file after every call, so a run
that is interrupted in the middle of a tag and resumed adds to the counts it had instead of starting over.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from _forwarding_proxy import ForwardingProxy

LM_PATHS = ("/chat/completions", "/completions")
UNMEASURED = "unmeasured"


@dataclass
class Counts:
    """Real LM calls charged to one tag, their tokens, and the tag's wall time so far."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    wall_s: float = 0.0


class Meter:
    """Per-tag counters, persisted to `path` (a JSON object tag -> Counts) after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        saved = json.loads(path.read_text()) if path.exists() else {}
        self.counts = {tag: Counts(**value) for tag, value in saved.items()}
        self._tag: str | None = None
        self._since = 0.0
        self._lock = threading.Lock()

    def start(self, tag: str) -> None:
        """Charge what follows to `tag`, on top of what an interrupted earlier run counted for it."""
        with self._lock:
            self.counts.setdefault(tag, Counts())
            self._tag, self._since = tag, time.perf_counter()

    def stop(self) -> Counts:
        """Stop charging the current tag; returns its final counts."""
        with self._lock:
            tag, self._tag = self._tag, None
            if tag is None:
                raise RuntimeError("Meter.stop() without start()")
            self.counts[tag].wall_s += time.perf_counter() - self._since
            self._save()
            return self.counts[tag]

    def adopt(self, counts: dict[str, dict]) -> None:
        """Take over tags counted on another machine (bench/_carry.py); a tag counted here already is kept."""
        with self._lock:
            for tag, value in counts.items():
                self.counts.setdefault(tag, Counts(**value))
            self._save()

    def record(self, prompt_tokens: int, completion_tokens: int, ok: bool) -> None:
        """One answered request; one that ends after `stop()` (in flight at an interruption) goes to UNMEASURED."""
        with self._lock:
            counts = self.counts.setdefault(self._tag or UNMEASURED, Counts())
            counts.calls += ok
            counts.errors += not ok
            counts.prompt_tokens += prompt_tokens
            counts.completion_tokens += completion_tokens
            if self._tag is not None:
                now = time.perf_counter()
                counts.wall_s += now - self._since
                self._since = now
            self._save()

    def _save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({tag: asdict(c) for tag, c in self.counts.items()}, indent=1))
        temporary.replace(self.path)


class CountingProxy(ForwardingProxy):
    """`with CountingProxy("http://127.0.0.1:PORT/v1", meter) as proxy: proxy.url` -> the proxy's base URL."""

    def __init__(self, upstream: str, meter: Meter, timeout_s: float = 600.0) -> None:
        super().__init__(upstream, upstream_timeout=timeout_s)
        self.meter = meter

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        body = self.read_body(handler)
        try:
            status, content_type, payload = self.forward(handler, method, body)
        except OSError as exc:
            status, content_type = 502, "application/json"
            payload = json.dumps({"error": {"message": f"proxy: upstream failed: {exc}"}}).encode()
        if method == "POST" and handler.path.split("?")[0].endswith(LM_PATHS):
            self.meter.record(*_usage(payload), ok=status == 200)
        self.send(handler, status, payload, content_type)


def _usage(payload: bytes) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) of an OpenAI-style response body; zeros if it has none."""
    try:
        usage = json.loads(payload).get("usage") or {}
    except (ValueError, AttributeError):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
