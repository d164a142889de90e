"""Reports of an optimization run: `report.md` and a self-contained `report.html` (plots inlined as PNG).

Every text that came from a model or a data file is escaped before it reaches the HTML.
"""

from __future__ import annotations

import difflib
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .analyze import Analysis
from .render import figure, html_table, image, md_code, md_table, md_text, page, png
from .search import OptimizeResult




def write_reports(result: OptimizeResult, directory: str | Path) -> tuple[Path, Path]:
    """Write `report.md` and `report.html` into `directory`; returns their paths."""
    directory = Path(directory)
    md, page = directory / "report.md", directory / "report.html"
    directory.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown(result), encoding="utf-8")
    page.write_text(html_page(result), encoding="utf-8")
    return md, page


# --- shared pieces ---------------------------------------------------------------------------------------------


def score_rows(result: OptimizeResult) -> list[list[str]]:
    rows = []
    for split, scores in (("dev", result.dev_scores), ("test", result.test_scores)):
        if scores:
            gain = scores["best"] - scores["baseline"]
            rows.append([split, f"{scores['baseline']:.3f}", f"{scores['best']:.3f}", f"{gain:+.3f}"])
    return rows


def cost_rows(result: OptimizeResult) -> list[list[str]]:
    usage = result.usage
    return [
        ["LM calls charged to the budget", f"{result.calls}" + (f" of {result.budget}" if result.budget else "")],
        ["real LM calls / cache hits", f"{usage['lm_calls']} / {usage['cache_hits']}"],
        ["retries", str(usage["retries"])],
        ["prompt / completion tokens (real calls)", f"{usage['prompt_tokens']:,} / {usage['completion_tokens']:,}"],
        ["cost", f"${usage['cost_usd']:.4f}"],
        *usage_rows("test split and context probe (outside the budget)", result.test_usage),
        *usage_rows("proposer", result.proposer_usage),
        ["wall time", f"{result.wall_s:.1f} s (LM calls {call_seconds(result):.1f} s)"],
        ["stopped", result.stopped or "all rounds done"],
    ]


def call_seconds(result: OptimizeResult) -> float:
    """Seconds spent in real LM calls during the run: the search's, the proposer's and the test split's."""
    return sum(usage["call_seconds"] for usage in (result.usage, result.proposer_usage, result.test_usage)
               if usage is not None)


def usage_rows(name: str, usage: dict[str, Any] | None) -> list[list[str]]:
    """Calls, tokens and cost of another LM of the run, when there is one: the proposer (its calls count in the
    budget too) or the test split's and context probe's (outside it)."""
    if usage is None:
        return []
    return [[f"{name}: real LM calls / cache hits", f"{usage['lm_calls']} / {usage['cache_hits']}"],
            [f"{name}: prompt / completion tokens", f"{usage['prompt_tokens']:,} / {usage['completion_tokens']:,}"],
            [f"{name}: cost", f"${usage['cost_usd']:.4f}"]]


def candidate_rows(result: OptimizeResult) -> list[list[str]]:
    race: dict[str, list[float]] = {}
    for trial in result.trials:
        if trial.stage.startswith("race"):
            race.setdefault(trial.prompt_key, []).append(trial.score)
    rows = []
    for c in result.candidates:
        mean = f"{sum(race[c.key]) / len(race[c.key]):.3f}" if c.key in race else ""
        dev = f"{c.dev_score:.3f}" if c.dev_score is not None else ""
        rows.append([str(c.round), c.origin, str(c.prompt.k), c.prompt.strategy, "yes" if c.prompt.constrain else "",
                     mean, dev, "accepted" if c.accepted else "", c.prompt.instruction])
    return rows


CANDIDATE_HEADER = ["round", "origin", "k", "select", "constrained", "race mean", "dev", "", "instruction"]


def group_rows(analysis: Analysis) -> list[list[str]]:
    return [[g.kind, str(g.size), ", ".join(f"{a} -> {b} ({n})" for a, b, n in g.confusions[:3]), g.summary]
            for g in analysis.groups]


GROUP_HEADER = ["kind", "size", "confusions (gold -> predicted)", "summary"]


def instruction_diff(result: OptimizeResult) -> list[str]:
    return list(difflib.unified_diff(result.baseline.instruction.splitlines(), result.best.instruction.splitlines(),
                                     "baseline", "optimized", lineterm=""))


def settings_text(result: OptimizeResult) -> str:
    best = result.best
    return (f"demos: {best.k} ({best.strategy})" if best.k else "demos: none") + \
        f"; constrained output: {'yes' if best.constrain else 'no'}"


# --- Markdown --------------------------------------------------------------------------------------------------


def markdown(result: OptimizeResult) -> str:
    parts = [
        f"# formfit optimize: {result.task}",
        f"Model {md_text(result.model)}, seed {result.seed}, embedder {md_text(result.embedder)}. "
        f"Optimized prompt: {settings_text(result)}.",
        "## Scores", md_table(["split", "baseline", "optimized", "gain"], score_rows(result)),
        "## Score per round",
        md_table(["round", "dev before", "dev after", "candidates", "accepted"],
                 [[str(r.round), f"{r.dev_before:.3f}", f"{r.dev_after:.3f}", str(r.proposals),
                   "yes" if r.accepted else "no"] for r in result.rounds]),
        "## Instruction diff", md_code("\n".join(instruction_diff(result) or ["(unchanged)"]), "diff"),
        "## Error groups on dev, before", md_table(GROUP_HEADER, group_rows(result.analysis_before)),
        "## Error groups on dev, after", md_table(GROUP_HEADER, group_rows(result.analysis_after)),
        "## Every candidate tried", md_table(CANDIDATE_HEADER, candidate_rows(result)),
        "## LM calls, tokens, cost", md_table(["", ""], cost_rows(result)),
    ]
    return "\n\n".join(parts) + "\n"


# --- HTML ------------------------------------------------------------------------------------------------------


def html_diff(lines: Sequence[str]) -> str:
    def line(text: str) -> str:
        kind = "add" if text.startswith("+") and not text.startswith("+++") else \
            "del" if text.startswith("-") and not text.startswith("---") else ""
        return f'<span class="{kind}">{html.escape(text)}</span>'

    return "<pre>" + "\n".join(line(text) for text in lines or ["(unchanged)"]) + "</pre>"


def html_page(result: OptimizeResult) -> str:
    title = f"formfit optimize: {result.task}"
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Model <code>{html.escape(result.model)}</code>, seed {result.seed}, embedder "
        f"<code>{html.escape(result.embedder)}</code>. Optimized prompt: "
        f"{html.escape(settings_text(result))}.</p>",
        "<h2>Scores</h2>", html_table(["split", "baseline", "optimized", "gain"], score_rows(result), "scores"),
        image(scores_plot(result), "baseline vs optimized"),
        "<h2>Score per round</h2>", image(rounds_plot(result), "dev score per round"),
        "<h2>Instruction diff</h2>", html_diff(instruction_diff(result)),
        "<h2>Error groups on dev</h2>", image(errors_plot(result), "failures by kind, before and after"),
        "<h3>Before</h3>", html_table(GROUP_HEADER, group_rows(result.analysis_before), "groups"),
        "<h3>After</h3>", html_table(GROUP_HEADER, group_rows(result.analysis_after), "groups"),
        "<h2>Every candidate tried</h2>", html_table(CANDIDATE_HEADER, candidate_rows(result), "candidates"),
        "<h2>LM calls, tokens, cost</h2>", html_table(["", ""], cost_rows(result), "costs"),
    ]
    return page(title, sections)


# --- plots -----------------------------------------------------------------------------------------------------


def scores_plot(result: OptimizeResult) -> bytes:
    fig, ax = figure()
    splits = [(name, scores) for name, scores in (("dev", result.dev_scores), ("test", result.test_scores)) if scores]
    for offset, which in ((-0.2, "baseline"), (0.2, "best")):
        ax.bar([i + offset for i in range(len(splits))], [s[which] for _, s in splits], width=0.4,
               label="optimized" if which == "best" else which)
    ax.set_xticks(range(len(splits)), [name for name, _ in splits])
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.legend()
    return png(fig)


def rounds_plot(result: OptimizeResult) -> bytes:
    fig, ax = figure()
    rounds = [0, *(r.round for r in result.rounds)]
    dev = [result.dev_scores["baseline"], *(r.dev_after for r in result.rounds)]
    ax.plot(rounds, dev, marker="o", label="incumbent on dev")
    race = [(t.round, t.score) for t in result.trials if t.stage.startswith("race")]
    if race:
        ax.scatter(*zip(*race), s=12, alpha=0.4, color="gray", label="candidates on minibatches")
    ax.set_xlabel("round")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1)
    ax.legend()
    return png(fig)


def errors_plot(result: OptimizeResult) -> bytes:
    fig, ax = figure()
    kinds = list(dict.fromkeys([*result.analysis_before.kinds, *result.analysis_after.kinds]))
    for offset, (name, analysis) in zip((-0.2, 0.2), (("before", result.analysis_before),
                                                       ("after", result.analysis_after))):
        ax.bar([i + offset for i in range(len(kinds))], [analysis.kinds.get(k, 0) for k in kinds], width=0.4,
               label=name)
    ax.set_xticks(range(len(kinds)), kinds, rotation=20)
    ax.set_ylabel("failures on dev")
    ax.legend()
    return png(fig)
