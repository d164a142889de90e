"""`formfit advise` on real data: the verdict and its numbers for each task, with the real local model.

Tasks: the built-in fictional_facts; trec, sst2 and banking77 as in bench/optimize.py (pool = train, test = 200
seeded held-out rows; the best prompt-only program is the one `optimize` found at 1000 calls in
bench/results/optimize.json when there is one); viggo in the text -> meaning-representation direction (structured
output: the MR as a JSON object of dialogue act and slots, scored by json_match); country_capital (facts: country ->
capital, exact match) with an oracle-retrieval context, a one-line record of the country built from the dataset's
own fields (it states the capital, like fictional_facts' passages state their answers). Datasets are read from
../shared/datasets (never copied). LM answers are cached in --cache-dir, so an interrupted run resumes.

    .venv/bin/python bench/advise.py --tasks fictional_facts,trec,sst2,banking77,viggo,country_capital
    .venv/bin/python bench/advise.py --report bench/results/advise.json      # markdown table
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from optimize import bench_task  # noqa: E402
from selector import DATA, SPECS, read_jsonl  # noqa: E402

from optimizer.advise import AdviseConfig, decide, measure  # noqa: E402
from optimizer.advice_report import write_advice  # noqa: E402
from optimizer.cache import Cache  # noqa: E402
from optimizer.costs import model_prices  # noqa: E402
from optimizer.lm import LM  # noqa: E402
from optimizer.prompt import Prompt  # noqa: E402
from optimizer.task import Example, Task, load_task  # noqa: E402

MR = re.compile(r"^\s*(\w+)\((.*)\)\s*$")
SLOT = re.compile(r"(\w+)\[([^\]]*)\]")


def mr_object(mr: str) -> dict[str, str]:
    """A ViGGO meaning representation, `act(slot[value], ...)`, as {"dialogue_act": act, slot: value, ...}."""
    match = MR.match(mr)
    if match is None:
        raise ValueError(f"not a meaning representation: {mr[:60]!r}")
    return {"dialogue_act": match.group(1), **dict(SLOT.findall(match.group(2)))}


def viggo_task(test_size: int, seed: int) -> Task:
    """Text -> MR: the model must emit the dialogue act and the slots the sentence expresses, as JSON."""
    train, test = (read_jsonl(DATA / "viggo" / f"{split}.jsonl") for split in ("train", "test"))
    random.Random(f"{seed}-viggo-test").shuffle(test)
    slots = sorted({slot for row in train for slot in mr_object(row["input"])} - {"dialogue_act"})

    def examples(rows: list[dict], split: str) -> tuple[Example, ...]:
        return tuple(Example(id=f"viggo-{split}-{i}", inputs={"sentence": row["output"]},
                             gold=mr_object(row["input"])) for i, row in enumerate(rows))

    acts = sorted({mr_object(row["input"])["dialogue_act"] for row in train})
    instruction = ("Convert the sentence about a video game into its meaning representation, as a JSON object: "
                   f"\"dialogue_act\" (one of {', '.join(acts)}) and only the slots the sentence expresses, among: "
                   f"{', '.join(slots)}.")
    return Task(name="viggo", description="ViGGO, sentence -> meaning representation (JSON)", inputs=("sentence",),
                output="mr", output_type="json", metric="json_match", instruction=instruction,
                output_schema={"dialogue_act": "string"},  # the one required key; a slot is there when expressed
                splits={"train": examples(train, "train"), "test": examples(test[:test_size], "test")})


def country_record(row: dict) -> str:
    kind = "an independent country" if row["independent"] else "a territory"
    capitals = " and ".join(row["aliases"]) or "none"
    return (f"{row['input']} (official name: {row['official_name']}) is {kind} in {row['subregion'] or row['region']}."
            f" Capital: {capitals}.")


def country_capital_task(seed: int) -> Task:
    """Country -> capital, exact match on the first listed capital; the context field is the country's record."""
    train, test = (read_jsonl(DATA / "country_capital" / f"{split}.jsonl") for split in ("train", "test"))
    random.Random(f"{seed}-country_capital-test").shuffle(test)

    def examples(rows: list[dict], split: str) -> tuple[Example, ...]:
        return tuple(Example(id=f"country-{split}-{i}", inputs={"country": row["input"]}, gold=row["output"],
                             context=country_record(row)) for i, row in enumerate(rows))

    return Task(name="country_capital", description="country -> capital (facts)", inputs=("country",),
                output="capital", output_type="text", metric="exact_match", context_field="record",
                instruction="Name the capital city of the country. Answer with the city name only.",
                splits={"train": examples(train, "train"), "test": examples(test, "test")})


def build(name: str, test_size: int, seed: int) -> Task:
    if name == "viggo":
        return viggo_task(test_size, seed)
    if name == "country_capital":
        return country_capital_task(seed)
    if name in SPECS:
        return bench_task(name, 0, test_size, seed)
    return load_task(name)


def optimized_prompt(name: str, optimize_json: Path) -> Prompt | None:
    """The best prompt bench/optimize.py found for this task at its largest budget, if it ran."""
    if not optimize_json.exists():
        return None
    block = json.loads(optimize_json.read_text())["tasks"].get(name, {})
    runs = sorted((int(key.split("-")[1]), run) for key, run in block.items() if key.startswith("optimize-"))
    return Prompt(**runs[-1][1]["best"]) if runs else None


def advise_one(task: Task, args: argparse.Namespace, cache: Cache) -> dict:
    lm = LM(args.model, threads=1, cache=cache)
    program = optimized_prompt(task.name, Path(args.optimize_json))
    ks = tuple(k for k in (0, 1, 2, 4, 8, 16) if k <= args.max_k)
    start = time.perf_counter()
    config = AdviseConfig(limit=args.limit, ks=ks, seed=args.seed, embedder="tfidf")  # as the published results
    m = measure(task, lm, program=program, config=config)
    advice = decide(m, model_prices(lm.model))
    paths = write_advice(advice, Path(args.runs) / task.name)
    return {"verdict": advice.verdict, "title": advice.title, "reasons": list(advice.reasons),
            "expected_gain": advice.expected_gain.to_dict() if advice.expected_gain else None,
            "measurements": m.to_dict(), "limit": args.limit, "ks": list(ks), "real_calls": lm.usage.calls,
            "wall_s": time.perf_counter() - start,
            "report": paths["advice_md"]}


def report(data: dict) -> str:
    head = ["task", "labels", "pool", "n", "k up to", "best prompt-only [95% CI]", "best from", "form errors",
            "gain, last demo doubling", "gain per pool doubling", "context gain", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in data["tasks"].items():
        m = row["measurements"]
        cells = [name, str(m["n_labels"] or "-"), f"{m['n_pool']:,}", str(m["n_eval"]), str(max(p["x"] for points in m["demo_curves"].values() for p in points)),
                 _ci(m["best"]),
                 m["best_origin"], f"{m['form_rate']:.0%}", _gain(m["demo_gain"]), _gain(m["pool_gain"]),
                 _gain(m["context_gain"]), f"**{row['title']}**"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ci(estimate: dict) -> str:
    return f"{estimate['value']:.3f} [{estimate['low']:.3f}, {estimate['high']:.3f}]"


def _gain(estimate: dict | None) -> str:
    if not estimate:
        return "-"
    return f"{100 * estimate['value']:+.1f} [{100 * estimate['low']:+.1f}, {100 * estimate['high']:+.1f}] pts"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="fictional_facts,trec,sst2,banking77,viggo,country_capital",
                        type=lambda text: text.split(","))
    parser.add_argument("--model", default="local/smollm2-135m")
    parser.add_argument("--limit", type=int, default=60, help="test examples each measurement runs on")
    parser.add_argument("--max-k", type=int, default=16)
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=str(ROOT / "cache" / "bench"))
    parser.add_argument("--optimize-json", default=str(ROOT / "bench" / "results" / "optimize.json"))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "bench-advise"), help="advice reports go here")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "advise.json"))
    parser.add_argument("--report", metavar="JSON", help="Print the markdown table of a finished run and exit.")
    args = parser.parse_args()
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {"meta": {}, "tasks": {}}
    data["meta"].update(model=args.model, seed=args.seed, test_size=args.test_size, date=dt.date.today().isoformat())
    cache = Cache(args.cache_dir)
    for name in args.tasks:
        if name not in data["tasks"]:
            data["tasks"][name] = advise_one(build(name, args.test_size, args.seed), args, cache)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(data, indent=2))
        print(name, data["tasks"][name]["title"], flush=True)
    print(report(data))


if __name__ == "__main__":
    main()
