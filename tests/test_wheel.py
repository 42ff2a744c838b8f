"""The wheel carries the bundled demo: pyproject's package data names every file of it, so an installed tagger-eval
evaluates the demo from any directory (`.ci/run` builds the wheel and runs the demo from it in a fresh environment)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import pytest

from tagger_eval.data import demo_dataset as demo

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tagger_eval"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_package_data_names_every_file_of_the_bundled_demo() -> None:
    if not demo.DEFAULT_DIR.is_relative_to(PACKAGE):
        pytest.skip(f"tagger_eval is imported from {demo.DEFAULT_DIR.parents[1]}, not from this checkout")
    patterns = pyproject()["tool"]["setuptools"]["package-data"]["tagger_eval"]
    files = sorted(path.relative_to(PACKAGE).as_posix() for path in demo.DEFAULT_DIR.rglob("*") if path.is_file())
    assert len(files) == demo.POSTS + 1  # data.db and one image per post, nothing else
    # setuptools' `*` stops at `/`; fnmatch's does not, so the patterns are also checked to name one folder each.
    assert [pattern for pattern in patterns if "*" in pattern.rpartition("/")[0]] == []
    assert [file for file in files if not any(fnmatch.fnmatchcase(file, pattern) for pattern in patterns)] == []


def test_the_package_is_all_the_wheel_holds() -> None:
    assert pyproject()["tool"]["setuptools"]["packages"]["find"]["include"] == ["tagger_eval*"]
    assert not (ROOT / "datasets" / "demo").exists(), "the demo is package data now: tagger_eval/data/demo/"
