"""`advice.md`, `advice.html` (the curves and the error taxonomy as plots) and `advice.json` of `formfit advise`."""

from __future__ import annotations

import html
import json
import tempfile
from pathlib import Path

from .advise import Advice, Measurements
from .errors import writing
from .render import figure, html_table, image, md_table, md_text, page, png


WHAT = "the advice report"


def advice_folder(directory: str | Path) -> Path:
    """Make `directory` and check it takes files, before anything is measured (an unwritable --out fails at once)."""
    directory = Path(directory)
    with writing(directory, WHAT):
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    return directory


def write_advice(advice: Advice, directory: str | Path) -> dict[str, str]:
    """Write the three files into `directory`; returns their paths by kind."""
    directory = Path(directory)
    paths = {"advice_md": directory / "advice.md", "advice_html": directory / "advice.html",
             "advice_json": directory / "advice.json"}
    with writing(directory, WHAT):
        directory.mkdir(parents=True, exist_ok=True)
        paths["advice_md"].write_text(markdown(advice), encoding="utf-8")
        paths["advice_html"].write_text(html_page(advice), encoding="utf-8")
        paths["advice_json"].write_text(json.dumps(advice.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    return {kind: str(path) for kind, path in paths.items()}


def curve_rows(m: Measurements) -> list[list[str]]:
    rows = [[f"{strategy} demos", str(p.x), p.score.text(), f"{p.prompt_tokens:.0f}"]
            for strategy, points in m.demo_curves.items() for p in points]
    rows += [[f"pool size (knn, k={m.best_k})", str(p.x), p.score.text(), f"{p.prompt_tokens:.0f}"]
             for p in m.pool_curve]
    return rows


def measurement_rows(advice: Advice) -> list[list[str]]:
    m = advice.measurements
    gain = lambda e: e.text(points=True) if e else "n/a"  # noqa: E731
    monthly = advice.break_even.monthly(advice.months)
    break_even_text = "never" if monthly is None else f"{monthly:,.0f} over {advice.months:g} months"
    beaten = [[m.program_origin, m.program.text()]] if m.program and m.best_origin != m.program_origin else []
    return [
        ["best prompt-only program", f"{m.best.text()} ({m.best_origin})"], *beaten,
        ["gain, last doubling of k (knn)", gain(m.demo_gain)],
        ["gain per doubling of the pool", gain(m.pool_gain)],
        ["with constrained output", gain(m.constrained_gain)],
        ["with the context shown (oracle retrieval)", gain(m.context_gain)],
        ["failures: form / content / fact", " / ".join(f"{m.shares[k]:.0%}" for k in ("form", "content", "fact"))],
        ["examples with form errors", f"{m.form_rate:.0%}"],
        ["labels / pool / test examples", f"{m.n_labels} / {m.n_pool} / {m.n_eval}"],
        ["prompt tokens per call: now / fine-tuned", f"{m.prompt_tokens_now:.0f} / {m.prompt_tokens_tuned:.0f}"],
        ["training cost (estimated)", f"${advice.break_even.training_cost:,.2f}"],
        ["break-even calls per month", break_even_text],
        ["prices", advice.prices.source],
        ["LM calls made", str(m.calls)],
    ]


def expected_text(advice: Advice) -> str:
    """The expected gain as shown in the reports, with its note when it is an assumption."""
    if advice.expected_gain is None:
        return "n/a"
    return advice.expected_gain.text(points=True) + (f" ({advice.gain_note})" if advice.gain_note else "")


def markdown(advice: Advice) -> str:
    m = advice.measurements
    parts = [
        f"# formfit advise: {m.task}", f"Model {md_text(m.model)}.",
        f"## Verdict: {advice.title}", "\n".join(f"- {md_text(reason)}" for reason in advice.reasons),
        f"Expected gain: {expected_text(advice)}.",
        "## Measurements", md_table(["", ""], measurement_rows(advice)),
        "## Curves (score with 95% bootstrap interval)", md_table(["curve", "x", "score", "prompt tokens"],
                                                                 curve_rows(m)),
    ]
    return "\n\n".join(parts) + "\n"


def html_page(advice: Advice) -> str:
    m = advice.measurements
    sections = [
        f"<h1>formfit advise: {html.escape(m.task)}</h1><p>Model <code>{html.escape(m.model)}</code>.</p>",
        f"<h2>Verdict: {html.escape(advice.title)}</h2>",
        "<ul>" + "".join(f"<li>{html.escape(reason)}</li>" for reason in advice.reasons) + "</ul>",
        f"<p>Expected gain: {html.escape(expected_text(advice))}.</p>",
        "<h2>Measurements</h2>", html_table(["", ""], measurement_rows(advice), "measurements"),
        "<h2>Curves</h2>", image(curves_plot(m), "score against demos and pool size"),
        html_table(["curve", "x", "score", "prompt tokens"], curve_rows(m), "curves"),
        "<h2>Failures of the best program</h2>", image(taxonomy_plot(m), "failures by kind"),
    ]
    return page(f"formfit advise: {m.task}", sections)


def curves_plot(m: Measurements) -> bytes:
    fig, (demos, pool) = figure(columns=2)
    for strategy, points in m.demo_curves.items():
        xs = [p.x for p in points]
        demos.errorbar(xs, [p.score.value for p in points], marker="o", capsize=3, label=strategy,
                       yerr=[[p.score.value - p.score.low for p in points], [p.score.high - p.score.value for p in points]])
    demos.set_xscale("symlog", base=2)
    demos.set(xlabel="demos (k)", ylabel="score", ylim=(0, 1))
    demos.legend()
    if m.pool_curve:
        pool.errorbar([p.x for p in m.pool_curve], [p.score.value for p in m.pool_curve], marker="o", capsize=3,
                      yerr=[[p.score.value - p.score.low for p in m.pool_curve],
                            [p.score.high - p.score.value for p in m.pool_curve]])
        pool.set_xscale("log", base=2)
    pool.set(xlabel=f"pool size (knn, k={m.best_k})", ylim=(0, 1))
    return png(fig)


def taxonomy_plot(m: Measurements) -> bytes:
    fig, ax = figure()
    kinds = list(m.kinds) or ["none"]
    ax.bar(kinds, [m.kinds.get(kind, 0) for kind in kinds])
    ax.set_ylabel(f"failures of {m.n_eval} examples")
    ax.tick_params(axis="x", rotation=20)
    return png(fig)
