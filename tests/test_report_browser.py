"""The HTML report in headless Chromium (Debian's package, driven by playwright): the plots decode and show, the
tables are there, and model output carrying a script payload is shown as text, never run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import ScriptedBackend, write_greek_task
from optimizer.cache import Cache
from optimizer.lm import LM, Budget, LMRequest
from optimizer.report import write_reports
from optimizer.retry import RetryPolicy
from optimizer.search import SearchConfig, optimize
from optimizer.task import load_task

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAYLOAD = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
def hostile_model(request: LMRequest) -> str:
    """Right when the labels are listed; otherwise answers with an HTML/script payload."""
    system, user = request.messages[0]["content"], request.messages[-1]["content"]
    label = re.search(r"about (\w+)", user).group(1)
    return label if "Reply with exactly one label" in system else PAYLOAD


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    task = load_task(write_greek_task(root / "task", 60, 20, 20))
    lm = LM("fake/hostile", cache=Cache(root / "cache"), budget=Budget(400, charge_cache_hits=True),
            backend=ScriptedBackend(hostile_model), retry=RetryPolicy(base_s=0.001))
    test_lm = lm.with_budget(Budget())
    result = optimize(task, lm, config=SearchConfig(rounds=2, analysis_size=16, race_sizes=(8,), dev_size=20),
                      test_lm=test_lm)
    assert result.test_scores["baseline"] == 0.0 and result.test_scores["best"] == 1.0
    _, page = write_reports(result, root / "run")
    return page


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"headless Chromium not found at {CHROMIUM}: `make install` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()


def test_report_shows_plots_and_tables(report: Path, browser) -> None:
    page = browser.new_page()
    page.goto(report.as_uri())
    images = page.evaluate("Array.from(document.images).filter(i => i.classList.contains('plot'))"
                           ".map(i => [i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width])")
    assert len(images) == 3 and all(w > 100 and h > 100 and shown > 100 for w, h, shown in images)
    headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
    assert "Every candidate tried" in headings
    table_rows = page.evaluate("Array.from(document.querySelectorAll('table')).map(t => t.rows.length)")
    assert sum(n >= 2 for n in table_rows) >= 4  # header plus rows: scores, costs, candidates, groups
    assert "1.000" in page.inner_text("body")  # the optimized test score
    page.close()


def test_model_output_is_never_run(report: Path, browser) -> None:
    assert "<script>window.__pwned" not in report.read_text()
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(report.as_uri())
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None and not dialogs
    assert page.evaluate("document.scripts.length") == 0
    assert "window.__pwned = 1" in page.inner_text("body")  # shown as text
    page.close()
