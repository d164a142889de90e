"""No credential ever reaches an artifact or a message.

Sentinel API keys sit in the environment and a user:password sits in `--api-base`; an optimize run goes through
the CLI on a scripted model, evaluations and failing calls echo the secrets in their exception texts, and LiteLLM
itself tries an unreachable server. Then every artifact is searched byte by byte for the sentinels: the cache
database (with its WAL and shared-memory files), every file of the run folder (run.json, checkpoint.json,
result.json, program/*, report.md, report.html), stdout, stderr and every log record.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cli
from conftest import ScriptedBackend, free_port, last_user_text, write_greek_task
from optimizer.cache import Cache
from optimizer.embed import LiteLLMEmbedder
from optimizer.errors import FormfitError, LMCallError, ModelError, public_url, redact
from optimizer.lm import LM, Budget, LMRequest
from optimizer.retry import RetryPolicy

OPENAI_KEY = "sk-SENTINEL-openai-7f3a9c21d4e8b6"
OTHER_KEY = "SENTINEL-provider-token-55aa77"
PASSWORD = "SENTINEL-PASSW0RD-9911"
USER = "sentinel-user"
SENTINELS = [OPENAI_KEY, OTHER_KEY, PASSWORD, USER]


def planted(request: LMRequest) -> str:
    """Right when the labels are listed in the instruction, else wrong on even items."""
    user = last_user_text(request)
    number, label = int(re.search(r"item (\d+)", user)[1]), re.search(r"about (\w+)", user)[1]
    system = request.messages[0]["content"] if request.messages else ""
    return label if "Reply with exactly one label from this list" in system or number % 2 else "I cannot tell."


class LeakyBackend(ScriptedBackend):
    """Fails like a careless provider SDK: its exception text quotes the key and the full URL with password."""

    def __init__(self, url: str, status: int | None = None) -> None:
        super().__init__(planted)
        self.url, self.status = url, status

    def call(self, request, timeout):
        error = RuntimeError(f"request to {self.url} with Authorization: Bearer {OPENAI_KEY} "
                             f"(x-api-key {OTHER_KEY}) was refused")
        error.status_code = self.status  # type: ignore[attr-defined]
        raise error


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> Iterator[str]:
    """Sentinel keys in the environment; yields an api_base carrying user:password. Logs are captured at DEBUG."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("MYPROVIDER_API_TOKEN", OTHER_KEY)
    monkeypatch.setenv("FORMFIT_RETRY_BASE_S", "0.01")
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    yield f"http://{USER}:{PASSWORD}@127.0.0.1:{free_port()}/v1"


def assert_clean(where: str, data: bytes | str) -> None:
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")
    for sentinel in SENTINELS:
        for form in {sentinel.encode(), sentinel.encode("utf-16-le")}:
            assert form not in raw, f"{sentinel!r} found in {where}"


def assert_tree_clean(root: Path) -> int:
    """Every file under `root`, byte by byte; returns how many files were searched."""
    files = [path for path in root.rglob("*") if path.is_file()]
    for path in files:
        assert_clean(str(path), path.read_bytes())
    return len(files)


def assert_logs_clean(caplog: pytest.LogCaptureFixture) -> None:
    assert_clean("log text", caplog.text)
    for record in caplog.records:
        assert_clean(f"log record {record.name}", record.getMessage() + repr(record.__dict__))


@pytest.fixture
def fake_cli_model(monkeypatch: pytest.MonkeyPatch):
    """Make the CLI build its LMs (model strings fake/...) on a scripted backend; returns the backends made."""
    made: list[ScriptedBackend] = []

    def make(model: str, **kwargs: Any) -> LM:
        made.append(ScriptedBackend(planted))
        return LM(model, backend=made[-1], retry=RetryPolicy(max_retries=1, base_s=0.001), **kwargs)

    monkeypatch.setattr(cli, "LM", make)
    return made


def test_optimize_run_folder_cache_and_output_hold_no_secret(secrets: str, run_cli, tmp_path: Path, fake_cli_model,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    root = write_greek_task(tmp_path / "task", 60, 20, 12)
    run = tmp_path / "run"
    code, out, err = run_cli("optimize", str(root), "--model", "fake/x", "--api-base", secrets, "--budget", "300",
                             "--rounds", "2", "--out", str(run), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["dev"]["best"] == 1.0  # a real run: it found the fix, wrote everything
    assert fake_cli_model[0].calls > 0
    names = {path.relative_to(run).as_posix() for path in run.rglob("*") if path.is_file()}
    assert {"run.json", "checkpoint.json", "result.json", "program/program.json", "report.md",
            "report.html"} <= names
    program = json.loads((run / "program" / "program.json").read_text())
    assert program["api_base"] == public_url(secrets) and "@" not in program["api_base"]
    assert json.loads((run / "run.json").read_text())["api_base"] == public_url(secrets)

    # resuming with the same settings is accepted (the stored api_base is compared without its credentials)
    code, _, err = run_cli("optimize", str(root), "--model", "fake/x", "--api-base", secrets, "--budget", "300",
                           "--rounds", "2", "--out", str(run), "--resume", "--json")
    assert code == 0, err
    # an evaluation through the same CLI, and the cache listing
    code, eval_out, eval_err = run_cli("eval", str(root), "--model", "fake/x", "--api-base", secrets, "--json")
    assert code == 0, eval_err
    stats_out = run_cli("cache", "stats", "--json")[1]
    # the exports: a fine-tuning file and a DSPy program
    for fmt in ("openai-jsonl", "dspy"):
        code, _, export_err = run_cli("export", str(run), "--format", fmt)
        assert code == 0, export_err
    assert {"export/train.jsonl", "export/dspy_predict.json"} <= {
        path.relative_to(run).as_posix() for path in run.rglob("*") if path.is_file()}

    assert_tree_clean(run) >= 8
    cache_files = assert_tree_clean(tmp_path / "cli-cache")
    assert cache_files >= 1 and (tmp_path / "cli-cache" / "formfit.sqlite3").stat().st_size > 0
    for where, text in (("stdout", out), ("stderr", err), ("eval stdout", eval_out), ("eval stderr", eval_err),
                        ("cache stats", stats_out)):
        assert_clean(where, text)
    assert_logs_clean(caplog)


@pytest.mark.parametrize("status", [None, 400, 401, 404, 503])
def test_failing_calls_echo_no_secret(secrets: str, tmp_path: Path, status: int | None,
                                      caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    """Library path: whatever the provider's exception says, the error raised names no credential."""
    lm = LM("fake/x", api_base=secrets, cache=Cache(tmp_path / "c"), budget=Budget(50),
            backend=LeakyBackend(secrets, status), retry=RetryPolicy(max_retries=2, base_s=0.001))
    with pytest.raises(FormfitError) as info:
        lm(LMRequest(messages=({"role": "user", "content": "item 1 is about beta"},)))
    message = str(info.value)
    assert "\n" not in message and message
    assert_clean("error message", message)
    assert_clean("error repr", repr(info.value) + repr(info.value.args))
    if status in (None, 400, 503):  # these quote the provider's text, redacted
        assert isinstance(info.value, LMCallError) and "***" in message
    assert_tree_clean(tmp_path / "c")
    captured = capsys.readouterr()
    assert_clean("stdout/stderr", captured.out + captured.err)
    assert_logs_clean(caplog)


def test_cli_error_line_echoes_no_secret(secrets: str, run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    def make(model: str, **kwargs: Any) -> LM:
        return LM(model, backend=LeakyBackend(secrets), retry=RetryPolicy(max_retries=0), **kwargs)

    monkeypatch.setattr(cli, "LM", make)
    root = write_greek_task(tmp_path / "task", 6, 3, 3)
    code, out, err = run_cli("eval", str(root), "--model", "fake/x", "--api-base", secrets)
    assert code == 1 and err.startswith("formfit: error: fake/x: call failed") and "***" in err
    assert_clean("stderr", err + out)
    assert_tree_clean(tmp_path / "cli-cache")
    assert_logs_clean(caplog)


def test_litellm_paths_echo_no_secret(secrets: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The real LiteLLM client against a closed port (key from the environment, password in the URL), an
    embedding model on the same URL, and an unknown provider: the messages name the endpoint without credentials."""
    lm = LM("openai/x", api_base=secrets, cache=Cache(tmp_path / "c"), timeout=1,
            retry=RetryPolicy(max_retries=1, base_s=0.01))
    with pytest.raises(ModelError, match=re.escape(f"cannot reach {public_url(secrets)}")) as reach:
        lm(LMRequest(messages=({"role": "user", "content": "hello"},)))
    embedder = LiteLLMEmbedder("openai/emb", api_base=secrets, timeout=1, retry=RetryPolicy(max_retries=0))
    with pytest.raises(FormfitError) as embed:
        embedder.embed(["hello"])
    assert_clean("embedder spec", json.dumps(embedder.spec()) + embedder.id)
    with pytest.raises(ModelError) as unknown:
        LM("nosuchprovider/some-model")  # with an api_base it is a model on that server
    for info in (reach, embed, unknown):
        assert_clean("error message", str(info.value))
    assert_tree_clean(tmp_path / "c")
    captured = capsys.readouterr()
    assert_clean("stdout/stderr", captured.out + captured.err)
    assert_logs_clean(caplog)


def test_redact_and_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_SERVICE_SECRET", OTHER_KEY)
    monkeypatch.setenv("SHORT_KEY", "abc")  # too short to be a credential: left alone (it would mangle text)
    assert redact(f"key={OTHER_KEY}; url=https://{USER}:{PASSWORD}@h.example:8443/v1 abc") == \
        "key=***; url=https://***@h.example:8443/v1 abc"
    assert redact("token in url http://tok3n@h/v1 and mail a@b.c") == "token in url http://***@h/v1 and mail a@b.c"
    assert public_url(f"https://{USER}:{PASSWORD}@h.example:8443/v1?x=1") == "https://h.example:8443/v1?x=1"
    assert public_url("http://h:1/v1") == "http://h:1/v1" and public_url(None) is None
    assert public_url(f"http://{USER}:{PASSWORD}@h:notaport/v1") == "http://h:notaport/v1"
    assert public_url(f"http://{USER}:{PASSWORD}@[::1]:8080/v1") == "http://[::1]:8080/v1"


@pytest.mark.parametrize("name", ["WATSONX_APIKEY", "WATSONX_ZENAPIKEY", "AWS_BEARER_TOKEN_BEDROCK",
                                  "VERTEXAI_CREDENTIALS", "GIGACHAT_CREDENTIALS", "DB_PASSWD", "openai_api_key"])
def test_credentials_under_provider_specific_names_are_masked(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, "s3cr3t-value-123")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false-but-long")  # a word containing TOKEN is no credential
    assert redact("sent s3cr3t-value-123 with false-but-long") == "sent *** with false-but-long"


def test_credential_query_parameters_are_masked() -> None:
    """Google-style `?key=`, `api_key`, tokens and Azure SAS signatures; other parameters stay as they are."""
    url = f"https://h.example/v1?api-version=2024-10-01&api_key={OTHER_KEY}&sig=s1gn&access_token=t0k#top"
    assert public_url(url) == "https://h.example/v1?api-version=2024-10-01&api_key=***&sig=***&access_token=***#top"
    assert public_url(f"https://h.example/v1beta?key={OTHER_KEY}") == "https://h.example/v1beta?key=***"
    assert redact(f"cannot reach https://h.example/v1?key={OTHER_KEY} (timeout)") == \
        "cannot reach https://h.example/v1?key=*** (timeout)"
