"""A run folder of `formfit optimize`: its settings, checkpoint, result, program and reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConfigError, writing
from .lm import LM
from .report import write_reports
from .search import OptimizeResult
from .task import Task

SETTINGS_FILE = "run.json"


class RunFolder:
    """`runs/NAME/`: run.json (settings), checkpoint.json, result.json, program/, report.md, report.html."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path, self.settings = path, settings
        self.checkpoint = path / "checkpoint.json"

    @classmethod
    def open(cls, path: str | Path, resume: bool, settings: dict[str, Any]) -> RunFolder:
        """Start a new run folder, or reopen one with `resume` (its settings must match; a setting an older
        formfit did not record is not compared)."""
        path = Path(path)
        saved = path / SETTINGS_FILE
        if saved.is_file() and not resume:
            raise ConfigError(f"{path} holds a run already; pass --resume to continue it, or choose another --out")
        if resume and not saved.is_file():
            raise ConfigError(f"{path}: nothing to resume (no {SETTINGS_FILE})")
        if resume:
            before = _read_settings(saved)
            if isinstance(before.get("task"), str):  # older formfit recorded the path as typed
                before["task"] = str(Path(before["task"]).resolve())
            changed = [key for key in settings if key in before and before[key] != settings[key]]
            if changed:
                key = changed[0]
                raise ConfigError(f"{saved}: --resume with a different {key} ({before.get(key)!r} -> {settings[key]!r})")
        with writing(path, "the run folder"):
            path.mkdir(parents=True, exist_ok=True)
            temporary = saved.with_suffix(".tmp")  # atomic: a kill while writing leaves the old run.json
            temporary.write_text(json.dumps(settings, indent=2), encoding="utf-8")
            temporary.replace(saved)
        return cls(path, settings)

    def finish(self, task: Task, result: OptimizeResult, lm: LM) -> dict[str, str]:
        """Write result.json, the program and the reports; returns their paths. An OSError (a full disk, a folder
        where a file goes) is a ConfigError naming the run folder: its calls are cached, --resume writes them again."""
        with writing(self.path, "the run's result, program and reports"):
            result_json = json.dumps(result.to_dict(), indent=2, ensure_ascii=False)
            (self.path / "result.json").write_text(result_json, encoding="utf-8")
            program = result.save(self.path / "program", task, lm)
            md, page = write_reports(result, self.path)
        return {"program": str(program), "report_md": str(md), "report_html": str(page),
                "result": str(self.path / "result.json")}


def _read_settings(saved: Path) -> dict[str, Any]:
    """The settings a run folder was started with; a ConfigError naming the file when it is unreadable."""
    try:
        settings = json.loads(saved.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{saved}: cannot read the run's settings ({getattr(exc, 'strerror', None) or exc})") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"{saved}: cannot read the run's settings (not a JSON object)")
    return settings
