"""What a DSPy row of bench/vs_dspy.py answered on its test rows, replayed from the row's DSPy cache with no server.

The row is compiled and run again exactly as vs_dspy.py did, against an address where nothing listens, so every
LM request must be a cache hit (a miss is an error: the cache does not hold that row). Prints the replayed score
(it must equal the row's in the results), how the answers were parsed (ChatAdapter's field markers, or DSPy's
JSONAdapter retry after they were missing) and what they were: a label of the task, a JSON object, other text.

    .venv/bin/python bench/dspy_answers.py --dataset sst2 --row "knn[chat]" --out cache/vs_dspy_B
    .venv/bin/python bench/dspy_answers.py --dataset sst2 --row "knn[chat]" --out cache/vs_dspy_B --json > answers.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dspy  # noqa: E402
from vs_dspy import (TASK_MAX_TOKENS, bench_splits, compile_dspy, dspy_lm, dspy_metric,  # noqa: E402
                     label_score, use_row)

from optimizer.prompt import normalize_label  # noqa: E402
from optimizer.task import Task  # noqa: E402

NOWHERE = "http://127.0.0.1:9/v1"  # the discard port: a cache miss fails at once


def replay(task: Task, method: str, adapter: str, folder: Path, seed: int, embedder: str) -> list[dict[str, Any]]:
    """Each test row's gold, answer, score and the adapter that parsed the final reply."""
    lm = dspy_lm(NOWHERE, TASK_MAX_TOKENS)
    lm.num_retries = 0
    use_row(folder, lm, adapter)
    program = compile_dspy(method, task, dspy_metric(task), lm, seed, embedder)
    rows = []
    for example in task.split("test"):
        try:
            answer = program(text=example.inputs["text"]).label
            retried = "JSON object" in lm.history[-1]["messages"][0]["content"]  # JSONAdapter's system message
            parsed_by = "JSONAdapter retry" if retried else type(dspy.settings.adapter).__name__
        except dspy.utils.exceptions.LMError:
            raise  # a request the cache does not hold
        except Exception as exc:  # noqa: BLE001 - unparseable even on the retry: a failed prediction, as in the row
            answer, parsed_by = None, f"raised {type(exc).__name__}"
        rows.append({"id": example.id, "gold": example.gold, "answer": None if answer is None else str(answer),
                     "score": label_score(task, answer, example.gold), "parsed_by": parsed_by})
    return rows


def kind(task: Task, answer: str | None) -> str:
    if answer is None:
        return "none"
    if normalize_label(answer) in {normalize_label(label) for label in task.labels}:
        return "a label"
    return "a JSON/dict object" if re.match(r"\s*[{\[]", answer) else "other text"


def summary(task: Task, rows: list[dict[str, Any]]) -> dict[str, Any]:
    counts = collections.Counter((row["parsed_by"], kind(task, row["answer"]), row["score"]) for row in rows)
    return {"score": sum(row["score"] for row in rows) / len(rows), "n": len(rows),
            "answers": [{"parsed_by": by, "answer": what, "score": score, "rows": n}
                        for (by, what, score), n in counts.most_common()],
            "examples": [row["answer"][:160] for row in rows
                         if kind(task, row["answer"]) in ("a JSON/dict object", "other text")][:5]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--row", required=True, help='a DSPy row key of the results, e.g. "knn[chat]"')
    parser.add_argument("--out", default="cache/vs_dspy", help="vs_dspy.py's --out that ran the row")
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--dev", type=int, default=100)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embedder", choices=("tfidf", "minilm"), default="tfidf")
    parser.add_argument("--json", action="store_true", help="print every row, not the summary")
    args = parser.parse_args(argv)
    match = re.fullmatch(r"(\w+)\[(\w+)\](?:\+\w+)?", args.row)
    folder = Path(args.out) / args.dataset / args.row
    if not match or not (folder / "cache").is_dir():
        parser.error(f"--row {args.row!r}: no DSPy cache at {folder / 'cache'}")
    task = bench_splits(args.dataset, args.pool, args.dev, args.test, args.seed)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # DSPy prints its bootstrapping progress
            rows = replay(task, match.group(1), match.group(2), folder, args.seed, args.embedder)
    except dspy.utils.exceptions.LMError as exc:
        parser.exit(2, f"{folder}: a request is not in the row's cache (other --pool/--dev/--test/--seed?): {exc}\n")
    print(json.dumps(rows if args.json else summary(task, rows), indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
