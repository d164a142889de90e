"""A fault-injecting HTTP proxy for tests (stdlib only; not a test module).

`FaultProxy(upstream)` listens on 127.0.0.1 and forwards every request to an upstream OpenAI-compatible server,
unless a fault is due for it. Faults come from a per-request `plan` (request number -> kind) and/or a seeded
random `schedule` (`rate`, `kinds`, `seed`); `down()` / `up()` close and reopen the listening socket on the same
port, as if the server were killed and restarted (clients get "connection refused" meanwhile).

Fault kinds (an injected fault never reaches the upstream server, so the upstream sees exactly the requests a
fault-free client would send, in the same order when the client runs one call at a time):

    429       "429 Too Many Requests" with `Retry-After: <retry_after>`
    500, 503  a server error with a small JSON error body
    timeout   sleeps `timeout_s` (longer than the client's timeout), then closes the connection unanswered
    truncated "200", `Content-Length` of a full body, half a body sent, then the connection is closed
    garbage   "200" with `Content-Type: application/json` and a body that is not JSON
    empty     "200" with a well-formed chat completion that has no choices
    reset     closes the socket without answering, with an RST (SO_LINGER 0): "connection reset by peer"

Counters: `requests` (requests received), `injected` (faults by kind), `completed` (requests that reached
upstream and were answered by it in full), `completed_bodies` (their request bodies, in order).
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler

from _forwarding_proxy import ForwardingProxy

FAULT_KINDS = ("429", "500", "503", "timeout", "truncated", "garbage", "empty", "reset")


class FaultProxy(ForwardingProxy):
    """`with FaultProxy("http://127.0.0.1:PORT/v1", rate=0.3, seed=1) as proxy: proxy.url` -> the proxy's base URL
    (same path as the upstream's, e.g. `/v1`)."""

    def __init__(self, upstream: str, *, plan: Mapping[int, str] | None = None, rate: float = 0.0,
                 kinds: Iterable[str] = FAULT_KINDS, seed: int = 0, timeout_s: float = 3.0,
                 retry_after: str = "1", upstream_timeout: float = 300.0) -> None:
        super().__init__(upstream, upstream_timeout)
        self.timeout_s, self.retry_after = timeout_s, retry_after
        self.schedule(plan=plan, rate=rate, kinds=kinds, seed=seed)
        self.requests = 0
        self.injected: Counter[str] = Counter()
        self.completed = 0
        self.completed_bodies: list[bytes] = []
        self._down_after: int | None = None

    def schedule(self, *, plan: Mapping[int, str] | None = None, rate: float = 0.0,
                 kinds: Iterable[str] = FAULT_KINDS, seed: int = 0) -> None:
        """Replace the faults: `plan` (request number, counted from the last `reset_counts()` -> kind) and/or a
        seeded random choice of `kinds` for a `rate` of the other requests. `schedule()` alone: no faults."""
        kinds = tuple(kinds)
        unknown = (set(plan.values()) if plan else set()) | set(kinds)
        unknown -= set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")
        with self._lock:
            self.plan, self.rate, self.kinds = dict(plan or {}), rate, kinds
            self._rng = random.Random(seed)

    def down_after(self, completed: int | None) -> None:
        """Go down by itself once `completed` requests have been answered by upstream (later ones are refused or,
        if already received, reset)."""
        with self._lock:
            self._down_after = completed

    # --- counters ---------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {"requests": self.requests, "completed": self.completed, "injected": dict(self.injected)}

    def reset_counts(self) -> None:
        with self._lock:
            self.requests, self.completed = 0, 0
            self.injected.clear()
            self.completed_bodies.clear()

    # --- handling ---------------------------------------------------------------------------------------------

    def _fault_for(self, number: int) -> str | None:
        if number in self.plan:
            return self.plan[number]
        if self.rate and self._rng.random() < self.rate:
            return self._rng.choice(self.kinds)
        return None

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        body = self.read_body(handler)
        with self._lock:
            self.requests += 1
            fault = self._fault_for(self.requests)
            gone = self._down_after is not None and self.completed >= self._down_after
            if fault:
                self.injected[fault] += 1
        if gone:
            fault = "reset"
            threading.Thread(target=self.down, daemon=True).start()
        if fault:
            self._inject(handler, fault)
            return
        try:
            status, content_type, payload = self.forward(handler, method, body)
        except OSError:
            _reset(handler)
            return
        with self._lock:
            self.completed += 1
            self.completed_bodies.append(body)
            if self._down_after is not None and self.completed >= self._down_after:
                threading.Thread(target=self.down, daemon=True).start()
        self.send(handler, status, payload, content_type)

    def _inject(self, handler: BaseHTTPRequestHandler, fault: str) -> None:
        def error(status: int, message: str) -> bytes:
            return json.dumps({"error": {"message": message, "type": "injected", "code": status}}).encode()

        if fault == "429":
            self.send(handler, 429, error(429, "rate limited (injected)"), extra={"Retry-After": self.retry_after})
        elif fault in ("500", "503"):
            self.send(handler, int(fault), error(int(fault), f"server error {fault} (injected)"))
        elif fault == "timeout":
            time.sleep(self.timeout_s)
            handler.close_connection = True
        elif fault == "truncated":
            full = json.dumps({"id": "x", "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "never delivered in full"},
                 "finish_reason": "stop"}]}).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(full)))
            handler.end_headers()
            handler.wfile.write(full[: len(full) // 2])
            handler.wfile.flush()
            _reset(handler)
        elif fault == "garbage":
            self.send(handler, 200, b"<html><body>502 proxy says hello {not json", "application/json")
        elif fault == "empty":
            self.send(handler, 200, json.dumps({"id": "x", "object": "chat.completion", "created": 0,
                                                "model": "injected", "choices": []}).encode(), "application/json")
        elif fault == "reset":
            _reset(handler)
        else:  # pragma: no cover - checked in __init__
            raise ValueError(fault)


def _reset(handler: BaseHTTPRequestHandler) -> None:
    """Drop the connection with an RST, answering nothing (more)."""
    handler.close_connection = True
    try:
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.rfile.close()  # the last reference to the socket's file: close() below really closes it
        handler.connection.close()
    except OSError:
        pass
