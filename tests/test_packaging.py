"""A non-editable install (`pip install .`) ships the built-in tasks, and `formfit tasks` lists them from there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cli
import optimizer.task
from optimizer.task import BUILTIN_DIR

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "cli.py", "optimizer", "tasks")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """formfit installed with pip into a folder of its own, built from a copy of the sources (so no build/ or
    egg-info lands in the checkout); a few seconds."""
    tmp = tmp_path_factory.mktemp("install")
    for name in SOURCES:
        source, target = ROOT / name, tmp / "src" / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(tmp / "site"), str(tmp / "src")], check=True, cwd=tmp)
    return tmp / "site"


def test_the_install_ships_every_builtin_task_file(installed: Path) -> None:
    folders = [folder for folder in BUILTIN_DIR.iterdir() if (folder / "task.yaml").is_file()]
    assert len(folders) >= 3
    for folder in folders:
        shipped = installed / "optimizer" / "builtin_tasks" / folder.name
        for file in folder.iterdir():
            assert (shipped / file.name).read_bytes() == file.read_bytes(), file


def test_formfit_tasks_lists_them_from_the_install(installed: Path, tmp_path: Path) -> None:
    code = ("import cli, optimizer, sys; "
            f"assert optimizer.__file__.startswith({str(installed)!r}), optimizer.__file__; "
            "cli.main(['tasks', '--json'])")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(installed)})
    assert done.returncode == 0, done.stderr
    names = {row["name"] for row in json.loads(done.stdout)["tasks"]}
    assert names == {folder.name for folder in BUILTIN_DIR.iterdir() if (folder / "task.yaml").is_file()}


def test_formfit_tasks_without_the_folder_lists_none(run_cli, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optimizer.task, "BUILTIN_DIR", tmp_path / "missing")
    monkeypatch.setattr(cli, "BUILTIN_DIR", tmp_path / "missing")
    code, out, err = run_cli("tasks", "--json")
    assert code == 0 and json.loads(out) == {"tasks": []} and "no built-in tasks in" in err
