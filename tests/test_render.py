"""report.md: model output and data in its tables and its instruction diff show as written (rendered here with
markdown-it, as GitHub-flavoured tables) and cannot break the document; report.html escapes them once."""

from __future__ import annotations

from markdown_it import MarkdownIt

from optimizer.analyze import Analysis, ErrorGroup
from optimizer.lm import Usage
from optimizer.prompt import Prompt
from optimizer.render import html_table, md_code, md_table
from optimizer.report import html_page, markdown
from optimizer.search import CandidateRecord, OptimizeResult

HOSTILE = 'maybe </td></tr></table><h1>x</h1> & <script>alert(1)</script> C:\\temp\\|x `<b>` a\nb'
SHOWN = 'maybe </td></tr></table><h1>x</h1> & <script>alert(1)</script> C:\\temp\\|x `<b>` a b'


def render(text: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(text)


def test_a_markdown_table_cell_shows_html_pipes_backslashes_and_newlines_as_written() -> None:
    page = render(md_table(["kind", "output"], [["content", HOSTILE], ["form", "ok"]]))
    assert page.count("<table>") == 1 and page.count("<tr>") == 3 and page.count("<td>") == 4
    assert "<h1>" not in page and "<script>" not in page and "<code>" not in page
    cell = page.split("<td>")[2].split("</td>")[0]
    assert cell == SHOWN.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_the_html_table_escapes_each_text_once() -> None:
    table = html_table(["output"], [["a < b & c"]])
    assert table.endswith("<tbody><tr><td>a &lt; b &amp; c</td></tr></tbody></table>")


def test_a_code_block_fence_is_longer_than_any_backtick_run_in_it() -> None:
    assert md_code("plain", "diff") == "```diff\nplain\n```"
    text = "+Reply in a ```json fence, or ````sql````.\n# not a heading"
    block = md_code(text, "diff")
    assert block.startswith("`````diff\n") and block.endswith("\n`````")
    page = render(block + "\n\n## after")
    assert page.count("<pre>") == 1 and "<h1>" not in page and "<h2>after</h2>" in page


def test_report_md_keeps_its_sections_whatever_the_instructions_and_outputs_hold() -> None:
    baseline = Prompt('Answer as JSON, like\n```\n{"label": "yes"}\n```\n# Not a heading')
    best = Prompt(baseline.instruction + "\nNever add text around the ```json``` block.")
    group = ErrorGroup("content", 1, ("r1",), (("yes", "maybe </td></tr></table>", 1),), (), f"e.g. output {HOSTILE}")
    analysis = Analysis(n=4, kinds={"content": 1}, groups=(group,))
    result = OptimizeResult(
        task="mini", model="fake/<b>x</b>", seed=0, budget=None, embedder="tfidf", dev_size=4, baseline=baseline,
        best=best, dev_scores={"baseline": 0.5, "best": 0.75}, test_scores={},
        candidates=(CandidateRecord("c1", best, "rewrite", 1, 0.75, True),), trials=(), rounds=(),
        analysis_before=analysis, analysis_after=analysis, calls=8, usage=Usage().to_dict(), stopped=None, wall_s=1.0)
    page = render(markdown(result))
    assert page.count("<h1>") == 1 and "<script>" not in page and "<b>" not in page
    assert [line for line in page.splitlines() if line.startswith("<h2>")] == [
        "<h2>Scores</h2>", "<h2>Score per round</h2>", "<h2>Instruction diff</h2>",
        "<h2>Error groups on dev, before</h2>", "<h2>Error groups on dev, after</h2>",
        "<h2>Every candidate tried</h2>", "<h2>LM calls, tokens, cost</h2>"]
    assert page.count("<table>") == 6 and page.count("<pre>") == 1
    assert " ```\n # Not a heading\n+Never add text around the ```json``` block." in page
    html = html_page(result)
    assert "&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;&lt;h1&gt;x&lt;/h1&gt; &amp; &lt;script&gt;" in html
    assert "&amp;lt;" not in html and "<script>" not in html
