"""`formfit`: the command line. Thin: parse options, call the library, render tables and progress with rich."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from optimizer.advice_report import advice_folder, write_advice
from optimizer.advise import AdviseConfig, check_budgets, decide, measure
from optimizer.cache import Cache
from optimizer.costs import model_prices
from optimizer.export import FORMATS, export_run
from optimizer.errors import FormfitError, public_url, redact, writing
from optimizer.evaluate import EvalResult, evaluate
from optimizer.lm import CACHE_NAMESPACE as LM_NAMESPACE, DEFAULT_MODEL, LM, LOCAL_MODELS, Budget
from optimizer.data import SUFFIXES
from optimizer.embed import CACHE_NAMESPACE as EMBEDDING_NAMESPACE, EMBEDDERS, embedder_name, make_embedder
from optimizer.embedder_choice import task_embedder
from optimizer.errors import ConfigError
from optimizer.program import Prediction, load_program
from optimizer.run import RunFolder
from optimizer.search import SearchConfig, default_dev_size, optimize, round_budget, search_embedder, split_dev
from optimizer.select import DEDUPE, STRATEGIES, DemoSource, ExampleSelector, demo_source, example_record, file_pool
from optimizer.task import BUILTIN_DIR, Task, builtin_tasks, load_task

err = Console(stderr=True)
out = Console()


def lm_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that calls a model shares."""
    options = [
        click.option("--model", default=DEFAULT_MODEL, show_default=True,
                     help=f"local/... ({', '.join(LOCAL_MODELS)}) or any LiteLLM model string."),
        click.option("--api-base", default=None, help="Base URL of an OpenAI-compatible server."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="llama.cpp threads for local models (default 1: fastest on 2-core machines)."),
        click.option("--concurrency", type=click.IntRange(min=1), default=None,
                     help="Parallel LM calls (default 1 for local models, 8 otherwise)."),
        click.option("--timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
                     help="Seconds per call to a LiteLLM model before it is retried (local calls are bounded "
                          "by their max_tokens)."),
        click.option("--budget", type=click.IntRange(min=0), default=None, help="Hard cap on real LM calls."),
        click.option("--max-dollars", type=click.FloatRange(min=0), default=None, help="Hard cap on spend."),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None, envvar="FORMFIT_CACHE_DIR",
                     help="Cache folder [default: ./cache, or $FORMFIT_CACHE_DIR]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def embedder_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--embedder", default="auto", show_default=True,
                        help=f"{', '.join(EMBEDDERS)} (offline), or a LiteLLM embedding model. auto: minilm where "
                             "its extra is installed, unless a label task's train split votes for tfidf.")(command)


def make_lm(model: str, api_base: str | None, threads: int | None, concurrency: int | None, timeout: float,
            budget: int | None, max_dollars: float | None, cache_dir: str | None, charge_cache_hits: bool = False) -> LM:
    lm = LM(model, api_base=api_base, cache=Cache(cache_dir),
            budget=Budget(budget, max_dollars, charge_cache_hits=charge_cache_hits),
            threads=threads, concurrency=concurrency, timeout=timeout)
    _ = lm.mode  # checks a local model's name and file now; its weights load on the first call
    return lm


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on a terminal (stderr); nothing elsewhere. Yields an `update(done, total)` callback."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as progress:
        task_id = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task_id, completed=done, total=total)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="formfit")
def cli() -> None:
    """Optimize prompts and few-shot examples on your data, and measure whether fine-tuning would still help."""


@cli.command("tasks")
@click.argument("task_refs", metavar="[TASK]...", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: {\"tasks\": [...]}.")
def tasks_command(task_refs: tuple[str, ...], as_json: bool) -> None:
    """List the built-in tasks, or check and describe the given task folders (no model is called)."""
    tasks = [load_task(ref) for ref in task_refs] if task_refs else builtin_tasks()
    if not tasks:
        err.print(f"no built-in tasks in {BUILTIN_DIR} (is formfit installed completely?)", style="yellow",
                  markup=False, highlight=False)
    rows = [{"name": t.name, "output_type": t.output_type, "metric": t.metric, "labels": len(t.labels),
             **{f"n_{split}": len(examples) for split, examples in t.splits.items()},
             "description": t.description} for t in tasks]
    if as_json:
        click.echo(json.dumps({"tasks": rows}, indent=2))
        return
    table = Table("task", "output", "metric", "labels", "train/dev/test", "description")
    table.columns[0].no_wrap = True
    for row in rows:
        sizes = "/".join(str(row.get(f"n_{split}", 0)) for split in ("train", "dev", "test"))
        first_sentence = row["description"].split(": ")[0].split(". ")[0].rstrip(".")
        table.add_row(*map(literal, (row["name"], row["output_type"], row["metric"], row["labels"] or "", sizes,
                                     first_sentence)))
    out.print(table)


@cli.command("eval")
@click.argument("task_ref", metavar="TASK")
@lm_options
@click.option("--split", default="test", show_default=True, help="Which split to evaluate.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the first N examples.")
@click.option("--k", "k", type=click.IntRange(min=0), default=0, show_default=True,
              help="Demos per input, from the train split.")
@click.option("--select", "strategy", type=click.Choice(["random", *STRATEGIES]), default="random",
              show_default=True, help="How the k demos are chosen for each input.")
@embedder_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--instruction", default=None, help="Use this instruction instead of the task's.")
@click.option("--with-context", is_flag=True, help="Show the task's context field to the model (oracle retrieval).")
@click.option("--program", "program_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Score a saved program (a `formfit optimize` run or its program/) instead: its instruction, demos "
                   "and output constraint, on --model.")
@click.option("--show", type=click.IntRange(min=0), default=10, show_default=True, help="Failures to list.")
@click.option("--rows", "rows_path", type=click.Path(dir_okay=False), default=None,
              help="Write every scored row (input, output, prediction, gold, score, error kind) to this JSONL file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object on stdout.")
def eval_command(task_ref: str, split: str, limit: int | None, k: int, strategy: str, embedder: str, seed: int,
                 instruction: str | None, with_context: bool, program_dir: str | None, show: int,
                 rows_path: str | None, as_json: bool, **lm_args: Any) -> None:
    """Evaluate TASK's instruction (a task folder or built-in name), or a saved program, on one split."""
    if program_dir:
        check_program_options(k=k, instruction=instruction, with_context=with_context)
    task = load_task(task_ref)
    if with_context:
        task = task.with_context()
    examples = task.split(split)[:limit]
    lm = make_lm(**lm_args)
    with progress_bar(f"eval {task.name}/{split}") as update:
        if program_dir:
            program = load_program(program_path(program_dir), lm=lm)
            result = program.evaluate(examples, task=task, on_progress=update)
            settings = {"program": program_dir, "k": program.prompt.k, "select": program.prompt.strategy,
                        "embedder": embedder_name(program.selector.embedder) if program.selector else None}
        else:
            demos, settings = eval_demos(task, k, strategy, embedder, seed, lm, lm_args["api_base"])
            result = evaluate(task, instruction or task.instruction, lm, examples, demos=demos, seed=seed,
                              on_progress=update)
    if rows_path:
        with writing(Path(rows_path), "the rows"):
            Path(rows_path).write_text("".join(json.dumps(row.to_dict(), ensure_ascii=False) + "\n"
                                               for row in result.rows), encoding="utf-8")
    summary = {"task": task.name, "split": split, "model": lm.model, **settings, **result.to_dict(),
               **{key: value for key, value in lm.usage.to_dict().items() if key not in result.to_dict()}}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        render_eval(result, summary, show)
    if result.stopped:
        err.print(f"[yellow]stopped early: {result.stopped}; rerun with a larger --budget to finish "
                  "(completed calls are cached)[/]")


def check_program_options(**given: Any) -> None:
    """A saved program brings its own instruction and demos: eval options that set them are refused with it."""
    clash = [name.replace("_", "-") for name, value in given.items() if value]
    if clash:
        raise ConfigError(f"--program sets the instruction and demos; drop --{', --'.join(clash)}")


def eval_demos(task: Task, k: int, strategy: str, embedder: str, seed: int, lm: LM,
               api_base: str | None) -> tuple[DemoSource, dict[str, Any]]:
    """The demo source of `formfit eval --k K --select STRATEGY` and the settings it reports (`auto` decided)."""
    if k and strategy != "random":  # auto is decided on the demo pool
        embedder = task_embedder(embedder, task, task.split("train"), cache=lm.cache, seed=seed)
    demos = demo_source(task, task.split("train"), k, strategy, seed=seed,
                        embedder=make_embedder(embedder, cache=lm.cache, api_base=api_base))
    return demos, {"k": k, "select": strategy, "embedder": embedder if k and strategy != "random" else None}


def render_eval(result: EvalResult, summary: dict[str, Any], show: int) -> None:
    table = Table("id", "kind", "gold", "prediction", "output", title=f"failures (first {show})", show_lines=False)
    for row in result.failures[:show]:
        table.add_row(literal(row.id), literal(row.error_kind), _short(row.gold), _short(row.prediction),
                      _short(row.output))
    if show and result.failures:
        out.print(table)
    kinds = ", ".join(f"{kind} {count}" for kind, count in result.error_counts().items()) or "none"
    out.print(f"[bold]{summary['task']}[/] {summary['split']}: score [bold]{result.score:.3f}[/] on "
              f"{summary['n']} examples | failures: {kinds}")
    out.print(f"LM calls {summary['lm_calls']}, cache hits {summary['cache_hits']}, retries {summary['retries']}, "
              f"tokens {summary['prompt_tokens']:,} prompt + {summary['completion_tokens']:,} completion, "
              f"cost ${summary['cost_usd']:.4f}, {summary['wall_s']:.1f}s")


def _short(value: Any, width: int = 60) -> Text:
    """`value` on one line of at most `width` characters, as `literal` text."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(str(text).split())
    return literal(text if len(text) <= width else text[: width - 1] + "…")


def literal(value: Any, style: str = "") -> Text:
    """`value` (model output, data) as text rich shows as is: `[/INST]` in it is text, not markup."""
    return Text(str(value), style=style)


@cli.command("optimize")
@click.argument("task_ref", metavar="TASK")
@lm_options
@click.option("--proposer-model", default=None,
              help="A model that critiques failures and rewrites the instruction (served by --api-base too, unless "
                   "--proposer-api-base says otherwise).")
@click.option("--proposer-api-base", default=None,
              help="The proposer's server [default: --api-base]; `none` for its provider's own endpoint (e.g. a "
                   "hosted proposer beside a local --api-base).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--demo-sets", type=click.IntRange(min=0), default=8, show_default=True,
              help="Fixed demo sets (16 train examples each) raced in the first round; later rounds race two.")
@click.option("--dev-size", type=click.IntRange(min=1), default=None,
              help="Dev examples that decide acceptance [default: 100, or budget/8 (at least 20) for small budgets].")
@embedder_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder [default: runs/TASK-MODEL-sSEED-bBUDGET].")
@click.option("--resume", is_flag=True, help="Continue the run in --out (completed LM calls are not repeated).")
@click.option("--test/--no-test", "run_test", default=True, show_default=True,
              help="Score baseline and optimized prompt on the test split and, for a task with a context field, "
                   "find dev failures the context fixes (fact errors); both outside the budget.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object on stdout.")
def optimize_command(task_ref: str, proposer_model: str | None, proposer_api_base: str | None, seed: int,
                     rounds: int, demo_sets: int, dev_size: int | None, embedder: str, out_dir: str | None,
                     resume: bool, run_test: bool, as_json: bool, **lm_args: Any) -> None:
    """Optimize TASK's prompt: analyze failures, propose fixes, race them, keep what helps on dev."""
    task = load_task(task_ref)
    dev_size = dev_size or default_dev_size(lm_args["budget"])
    check_budget(task, dev_size, seed, lm_args["budget"])
    # Models and embedder are checked before the run folder is written: a typo must not leave a run.json behind.
    lm = make_lm(**{**lm_args, "charge_cache_hits": True})
    proposer = make_proposer(proposer_model, proposer_api_base, lm, lm_args)
    # The run folder records the embedder that runs (auto decided here), so a resume elsewhere cannot differ.
    name = search_embedder(task, SearchConfig(dev_size=dev_size, embedder=embedder), seed, lm.cache)
    vectors = make_embedder(name, api_base=lm_args["api_base"], cache=lm.cache)
    run = RunFolder.open(out_dir or default_run_dir(task.name, lm_args, seed), resume,
                         {"task": str(task.root.resolve()), "model": lm_args["model"],
                          "api_base": public_url(lm_args["api_base"]),
                          "proposer_model": proposer_model,
                          "proposer_api_base": public_url(proposer.api_base) if proposer else None,
                          "seed": seed, "budget": lm_args["budget"],
                          "rounds": rounds, "demo_sets": demo_sets, "dev_size": dev_size, "embedder": name,
                          "cache": str(lm.cache.directory.resolve())})  # another cache would repeat every call
    unlimited = lm.with_budget(Budget())
    config = SearchConfig(rounds=rounds, demo_sets=demo_sets, dev_size=dev_size, embedder=name)
    with live_progress(lm_args["budget"]) as update:
        result = optimize(task, lm, proposer=proposer, config=config, seed=seed, test_lm=unlimited if run_test else None,
                          on_event=update, checkpoint=run.checkpoint, embedder=vectors)
    paths = run.finish(task, result, lm)
    summary = {"task": task.name, "model": lm.model, "embedder": result.embedder, "out": str(run.path),
               "dev": result.dev_scores, "test": result.test_scores, "calls": result.calls, "budget": result.budget,
               "stopped": result.stopped, "best": result.best.to_dict(), **paths,
               "usage": result.usage, "proposer_usage": result.proposer_usage, "test_usage": result.test_usage}
    if as_json:
        click.echo(json.dumps(summary))
        return
    table = Table("split", "baseline", "optimized", title=f"{task.name}: {result.stopped or 'all rounds done'}")
    for split, scores in (("dev", result.dev_scores), ("test", result.test_scores)):
        if scores:
            table.add_row(split, f"{scores['baseline']:.3f}", f"{scores['best']:.3f}")
    out.print(table)
    out.print(f"calls charged {result.calls}" + (f" of {result.budget}" if result.budget else "") +
              f"; program {paths['program']}; report {paths['report_html']}", markup=False, highlight=False)


def make_proposer(model: str | None, api_base: str | None, lm: LM, lm_args: dict[str, Any]) -> LM | None:
    """The proposer's LM, on the task model's budget: at `api_base` (default: the task model's `--api-base`;
    `none`: the provider's own endpoint)."""
    if model is None:
        return None
    base = lm_args["api_base"] if api_base is None else None if api_base == "none" else api_base
    proposer = make_lm(**{**lm_args, "model": model, "api_base": base, "charge_cache_hits": True})
    proposer.budget = lm.budget  # one budget for the task model and the proposer
    return proposer


def check_budget(task: Task, dev_size: int, seed: int, budget: int | None) -> None:
    """A budget below the baseline's dev evaluation (the search's first spend) is a bad --budget, refused before
    the run folder is written, so the corrected command needs no --resume; one too small for a round is a warning."""
    if budget is None:
        return
    needed = len(split_dev(task, dev_size, seed)[1])
    if budget < needed:
        raise ConfigError(f"--budget {budget} cannot cover the baseline's evaluation on {needed} dev examples; "
                          "raise --budget or lower --dev-size")
    one_round = round_budget(task, SearchConfig(dev_size=dev_size), seed)
    if budget < one_round:
        err.print(f"note: --budget {budget} leaves no room for a round of the search here (one needs {one_round} "
                  "calls); the task's own prompt will be kept", style="yellow", markup=False, highlight=False,
                  soft_wrap=True)


def default_run_dir(task: str, lm_args: dict[str, Any], seed: int) -> str:
    model = lm_args["model"].split("/")[-1].replace(".gguf", "")
    return f"runs/{task}-{model}-s{seed}-b{lm_args['budget'] or 'inf'}"


@contextmanager
def live_progress(budget: int | None) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A live line on a terminal: round, stage, best dev score, calls used of the budget."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as progress:
        task_id = progress.add_task("optimize", total=budget)

        def update(event: dict[str, Any]) -> None:
            best = f"{event['best_dev']:.3f}" if event["best_dev"] is not None else "-"
            stage = f"{event['stage']} {event['done']}/{event['total']}" if "done" in event else event["stage"]
            progress.update(task_id, completed=event["calls"],
                            description=f"round {event['round']} {stage:<15} best dev {best} calls")

        yield update


def key_values(_: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """Repeated KEY=VALUE options as a dict; one without `=` is a bad option value."""
    bad = next((value for value in values if "=" not in value), None)
    if bad is not None:
        raise click.BadParameter(f"{bad!r} is not KEY=VALUE", param=param)
    return dict(value.split("=", 1) for value in values)


def input_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--input", "fields", multiple=True, metavar="KEY=VALUE", callback=key_values, help=help_text)


@cli.command("run")
@click.argument("program_dir", metavar="PROGRAM", type=click.Path(exists=True))
@click.argument("text", required=False)
@input_option("Input fields (for several inputs).")
@click.option("--model", default=None, help="Run on another model than the one it was optimized for.")
@click.option("--api-base", default=None)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, envvar="FORMFIT_CACHE_DIR")
@click.option("--file", "records_path", type=click.Path(dir_okay=False), default=None,
              help="Run on every record of this JSONL/CSV/JSON file (one answer per line; --json: one object).")
@click.option("--json", "as_json", is_flag=True)
def run_command(program_dir: str, text: str | None, fields: dict[str, str], model: str | None,
                api_base: str | None, threads: int | None, cache_dir: str | None, records_path: str | None,
                as_json: bool) -> None:
    """Run a saved PROGRAM (a `formfit optimize` run or its program/) on TEXT (its first input field), on --input
    KEY=VALUE fields, or on a --file."""
    program = load_program(program_path(program_dir), model=model, api_base=api_base, cache=Cache(cache_dir),
                           threads=threads)
    if records_path is None:
        prediction = program.predict(**({program.task.inputs[0]: text, **fields} if text is not None else fields))
        click.echo(json.dumps(asdict(prediction), ensure_ascii=False) if as_json else answer_text(prediction))
        return
    records = file_pool(records_path, program.task.inputs, label_key=None)[0]  # a missing field names file:line
    predictions = []
    with progress_bar(f"run {program.task.name}") as update:
        for done, record in enumerate(records, start=1):
            try:
                predictions.append(program.predict(**record))
            except ConfigError as exc:  # a value no data file may hold (null): name the record
                raise ConfigError(f"{records_path}: record {done}: {exc}") from None
            update(done, len(records))
    if as_json:
        click.echo(json.dumps({"predictions": [{"id": record.get("id"), **asdict(prediction)}
                                               for record, prediction in zip(records, predictions)]},
                              ensure_ascii=False))
    else:
        click.echo("\n".join(answer_text(prediction) for prediction in predictions))


def answer_text(prediction: Prediction) -> str:
    """A prediction's value as one line of output: the text itself, else its JSON."""
    return prediction.value if isinstance(prediction.value, str) else json.dumps(prediction.value, ensure_ascii=False)


@cli.command("advise")
@click.argument("task_ref", metavar="TASK")
@lm_options
@click.option("--program", "program_dir", type=click.Path(exists=True, file_okay=False),
              help="A `formfit optimize` run (or its program/): the best prompt-only program unless a demo-curve "
                   "point scores higher on the same examples.")
@click.option("--optimize-budget", type=click.IntRange(min=1), default=None,
              help="Without --program: optimize here first, with this many LM calls.")
@click.option("--limit", type=click.IntRange(min=10), default=60, show_default=True,
              help="Test examples each measurement runs on.")
@click.option("--max-k", type=click.IntRange(min=1), default=16, show_default=True,
              help="Largest number of demos on the curve (doubling from 1; capped by the context window).")
@click.option("--monthly-calls", type=click.IntRange(min=0), default=None, help="Calls a month you expect.")
@click.option("--months", type=click.FloatRange(min=0.1), default=12.0, show_default=True,
              help="Period in which a fine-tune must pay back its training.")
@click.option("--ft-price-train", type=click.FloatRange(min=0), default=None, help="$ per 1M training tokens.")
@click.option("--ft-price-input", type=click.FloatRange(min=0), default=None,
              help="$ per 1M prompt tokens of the fine-tuned model.")
@click.option("--ft-price-output", type=click.FloatRange(min=0), default=None,
              help="$ per 1M completion tokens of the fine-tuned model.")
@embedder_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for advice.md/.html/.json [default: runs/advise-TASK-MODEL].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object on stdout.")
def advise_command(task_ref: str, program_dir: str | None, optimize_budget: int | None, limit: int, max_k: int,
                   monthly_calls: int | None, months: float, ft_price_train: float | None,
                   ft_price_input: float | None, ft_price_output: float | None, embedder: str, seed: int,
                   out_dir: str | None, as_json: bool, **lm_args: Any) -> None:
    """Measure the prompt-only approaches on TASK and say whether fine-tuning would still help."""
    task = load_task(task_ref)
    lm = make_lm(**lm_args)
    prompt = load_program(program_path(program_dir), lm=lm).prompt if program_dir else None
    prices = model_prices(lm.model, ft_input=ft_price_input, ft_output=ft_price_output, ft_train=ft_price_train)
    ks = tuple(k for k in (0, 1, 2, 4, 8, 16, 32, 64, 128) if k <= max_k)
    config = AdviseConfig(limit=limit, ks=ks, seed=seed, embedder=embedder)
    check_budgets(task, lm, config, program=prompt, optimize_budget=optimize_budget)  # before --out is made
    folder = advice_folder(out_dir or f"runs/advise-{task.name}-{lm.model.split('/')[-1]}")
    with stage_progress("advise") as update:
        measurements = measure(task, lm, program=prompt, optimize_budget=optimize_budget, config=config,
                               on_event=update)
    advice = decide(measurements, prices, monthly_calls=monthly_calls, months=months)
    paths = write_advice(advice, folder)
    if as_json:
        click.echo(json.dumps({"task": task.name, "model": lm.model, "verdict": advice.verdict,
                               "title": advice.title, "reasons": list(advice.reasons),
                               "expected_gain": advice.expected_gain.to_dict() if advice.expected_gain else None,
                               "expected_gain_note": advice.gain_note, "best": measurements.best.to_dict(),
                               "best_origin": measurements.best_origin,
                               **lm.usage.to_dict(), **paths}))
        return
    out.print(f"[bold]{advice.title}[/bold]")
    for reason in advice.reasons:
        out.print(f"  - {reason}", markup=False, highlight=False)
    out.print(f"report {paths['advice_html']}", markup=False, highlight=False)


def program_path(path: str) -> Path:
    """A run folder or its program/ folder -> the program folder."""
    return Path(path) / "program" if (Path(path) / "program").is_dir() else Path(path)


@contextmanager
def stage_progress(description: str) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A live line on a terminal naming the current stage and the LM calls so far."""
    with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True,
                  disable=not err.is_terminal) as progress:
        task_id = progress.add_task(description)
        yield lambda event: progress.update(task_id, description=f"{description}: {event['stage']}, "
                                                                 f"{event['calls']} LM calls")


@cli.command("export")
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Output file [default: RUN/export/train.jsonl or RUN/export/dspy_predict.json].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object on stdout.")
def export_command(run_dir: str, fmt: str, out_path: str | None, as_json: bool) -> None:
    """Export a `formfit optimize` RUN: a chat fine-tuning file (openai-jsonl) or a DSPy program (dspy)."""
    default = "train.jsonl" if fmt == "openai-jsonl" else "dspy_predict.json"
    summary = export_run(run_dir, fmt, out_path or Path(run_dir) / "export" / default)
    if as_json:
        click.echo(json.dumps(summary))
        return
    out.print(" ".join(f"{key}: {value}" for key, value in summary.items() if value is not None),
              markup=False, highlight=False)


@cli.command("select")
@click.argument("pool")
@click.argument("text")
@click.option("-k", "k", type=click.IntRange(min=1), default=None, help="[default: 4, or a saved selector's]")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None, help="[default: knn, or a saved selector's]")
@embedder_option
@click.option("--input-key", "input_keys", multiple=True, help="Fields embedded (data files; default: all but label).")
@input_option("The pool's other input fields, when it has several (TEXT is the first).")
@click.option("--label-key", default=None, help="The label/output field of a data file [default: label or output].")
@click.option("--save", "save_dir", type=click.Path(file_okay=False), default=None, help="Save the selector here.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, envvar="FORMFIT_CACHE_DIR")
@click.option("--api-base", default=None, help="Base URL for a LiteLLM embedding model on an OpenAI-compatible server.")
@click.option("--json", "as_json", is_flag=True)
def select_command(pool: str, text: str, k: int | None, strategy: str | None, embedder: str,
                   input_keys: tuple[str, ...],
                   fields: dict[str, str], label_key: str | None, save_dir: str | None, cache_dir: str | None,
                   api_base: str | None, as_json: bool) -> None:
    """Show the K demos chosen for TEXT from POOL (a task's train split, a data file, or a saved selector)."""
    selector = build_selector(pool, k, strategy, embedder, input_keys, label_key, Cache(cache_dir), api_base)
    keys = selector.config.input_keys or ("text",)
    query = {keys[0]: text, **fields}
    missing = [key for key in keys if key not in query]
    if missing:
        unlabelled = "" if selector.config.label_key else "; no label field was found: name it with --label-key"
        raise ConfigError(f"the pool's input fields are {', '.join(keys)}: give {', '.join(missing)} with "
                          f"--input KEY=VALUE{unlabelled}")
    chosen = selector.select_scored(query)
    if save_dir:
        selector.save(save_dir)
    if as_json:
        click.echo(json.dumps({"query": query, "strategy": selector.config.strategy, "embedder": selector.embedder.id,
                               "demos": [{"similarity": c.similarity, "example": c.example} for c in chosen]},
                              ensure_ascii=False))
        return
    table = Table("#", "similarity", "example",
                  title=literal(f"{len(chosen)} demos for {text!r} ({selector.config.strategy})", "table.title"))
    for rank, choice in enumerate(chosen, start=1):
        table.add_row(str(rank), f"{choice.similarity:.3f}", _short(choice.example, 100))
    out.print(table)


def build_selector(pool: str, k: int | None, strategy: str | None, embedder: str, input_keys: tuple[str, ...],
                   label_key: str | None, cache: Cache, api_base: str | None) -> ExampleSelector:
    """A fitted selector from a saved selector folder (k and strategy as saved unless given), a data file, or a
    task's train split."""
    path = Path(pool)
    if (path / "selector.json").is_file():
        overrides = {key: value for key, value in (("k", k), ("strategy", strategy)) if value is not None}
        return ExampleSelector.load(path, cache=cache, **overrides)
    if path.suffix in SUFFIXES and path.is_file():
        records, keys, label_key = file_pool(path, input_keys, label_key)
    else:
        task = load_task(pool)
        embedder = task_embedder(embedder, task, task.split("train"), cache=cache)
        records = [example_record(task, example) for example in task.split("train")]
        label_key, keys = task.output, input_keys or task.inputs
    selector = ExampleSelector(make_embedder(embedder, cache=cache, api_base=api_base), k or 4, input_keys=keys,
                               strategy=strategy or "knn", label_key=label_key, dedupe=DEDUPE)
    return selector.fit(records)


@cli.group("cache")
def cache_group() -> None:
    """Inspect or clear the on-disk cache."""


@cache_group.command("stats")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, envvar="FORMFIT_CACHE_DIR")
@click.option("--json", "as_json", is_flag=True)
def cache_stats(cache_dir: str | None, as_json: bool) -> None:
    """Entries per kind and size on disk."""
    stats = Cache(cache_dir).stats()
    if as_json:
        click.echo(json.dumps(stats.to_dict()))
        return
    out.print(f"{stats.path}: {stats.bytes_on_disk / 1e6:.1f} MB", markup=False, highlight=False)
    for namespace, count in stats.entries.items():
        out.print(f"  {namespace}: {count:,} entries")


@cache_group.command("clear")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, envvar="FORMFIT_CACHE_DIR")
@click.option("--kind", "namespace", type=click.Choice([LM_NAMESPACE, EMBEDDING_NAMESPACE]), default=None,
              help="Only this kind of entry.")
@click.option("--json", "as_json", is_flag=True)
def cache_clear(cache_dir: str | None, namespace: str | None, as_json: bool) -> None:
    """Delete cached entries."""
    deleted = Cache(cache_dir).clear(namespace)
    click.echo(json.dumps({"deleted": deleted}) if as_json else f"deleted {deleted:,} entries")


INTERRUPTED = ("interrupted; rerun the same command to resume, adding --resume for optimize (completed LM calls are "
               "cached)")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors are one line on stderr with exit 2; Ctrl-C keeps what is cached."""
    try:
        cli.main(args=argv, prog_name="formfit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        _fail(INTERRUPTED, 130)
    except click.ClickException as exc:
        _fail(exc.format_message(), 2)
    except FormfitError as exc:
        _fail(str(exc), exc.exit_code)


def _fail(message: str, code: int) -> None:
    click.echo(f"formfit: error: {redact(' '.join(message.split()))}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
