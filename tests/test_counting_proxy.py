"""bench/_counting_proxy.py in front of the real SmolLM2 server: the counter every row of bench/vs_dspy.py is
measured by."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from _counting_proxy import UNMEASURED, CountingProxy, Meter

from conftest import free_port


def post(url: str, content: str) -> dict:
    body = json.dumps({"model": "smollm2", "max_tokens": 3, "temperature": 0,
                       "messages": [{"role": "user", "content": content}]}).encode()
    request = urllib.request.Request(f"{url}/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_calls_and_tokens_are_charged_to_the_current_tag_and_persisted(server, tmp_path):
    meter = Meter(tmp_path / "meter.json")
    with CountingProxy(server, meter) as proxy:
        meter.start("a")
        usages = [post(proxy.url, text)["usage"] for text in ("Hello", "Say yes")]
        meter.stop()
        with urllib.request.urlopen(f"{proxy.url}/models", timeout=30) as response:  # not an LM call
            assert json.loads(response.read())["data"]
        meter.start("b")
        post(proxy.url, "Hello")
        meter.stop()
        late = post(proxy.url, "One more")["usage"]  # answered after stop(): in flight at an interruption

    saved = Meter(tmp_path / "meter.json").counts
    assert saved["a"].calls == 2
    assert saved["a"].prompt_tokens == sum(u["prompt_tokens"] for u in usages)
    assert saved["a"].completion_tokens == sum(u["completion_tokens"] for u in usages)
    assert saved["a"].wall_s > 0
    assert saved["b"].calls == 1
    assert (saved[UNMEASURED].calls, saved[UNMEASURED].prompt_tokens) == (1, late["prompt_tokens"])


def test_an_unreachable_upstream_is_a_502_counted_as_an_error(tmp_path):
    meter = Meter(tmp_path / "meter.json")
    with CountingProxy(f"http://127.0.0.1:{free_port()}/v1", meter) as proxy:
        meter.start("a")
        with pytest.raises(urllib.error.HTTPError) as caught:
            post(proxy.url, "Hello")
        assert caught.value.code == 502
        assert "upstream failed" in json.loads(caught.value.read())["error"]["message"]
        meter.stop()
    assert (meter.counts["a"].calls, meter.counts["a"].errors) == (0, 1)
