"""Pieces shared by the HTML and Markdown reports: tables, escaped HTML pages, matplotlib figures as PNG.

Every text that came from a model or a data file goes through `html.escape` here; pages carry no scripts. In
Markdown it is escaped too (`md_text`, `md_table`, `md_code`), so it shows as written and cannot break the document.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from typing import Any

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}pre{background:#f7f7f7;padding:1em;white-space:pre-wrap}
.add{background:#e6ffec}.del{background:#ffebe9}img{max-width:100%}.num{text-align:right}"""


# Markdown table cells: `\\` and `|` keep the cell whole, `` ` `` opens no code span (where the entities would show
# as typed), `&<>` as entities start no HTML.
MD_CELL = str.maketrans({"\\": "\\\\", "|": "\\|", "`": "\\`", "&": "&amp;", "<": "&lt;", ">": "&gt;"})


def md_text(text: object) -> str:
    """`text` as one line of Markdown shown as written (whitespace runs and newlines become one space)."""
    return " ".join(str(text).split()).translate(MD_CELL)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table whose cells are `md_text`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def md_code(text: str, info: str = "") -> str:
    """`text` as a fenced code block, its fence one backtick longer than any run of backticks in it (at least 3)."""
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall("`+", text)), default=0))
    return f"{fence}{info}\n{text}\n{fence}"


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], css_class: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def page(title: str, sections: Sequence[str]) -> str:
    """A self-contained HTML page (sections are HTML built with the functions here)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>")


def image(data: bytes, alt: str) -> str:
    """A PNG inlined as a data URI (the page stays one self-contained file)."""
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def figure(columns: int = 1) -> Any:
    """A matplotlib figure and its axes (one per column), drawn off-screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, columns, figsize=(7 if columns == 1 else 10, 3.2), dpi=100)


def png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
