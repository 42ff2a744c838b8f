"""Reading saved runs needs no backend: `tagger-eval compare` and `report` work where onnxruntime, TensorFlow and
the taggers cannot even be imported (a CI job that only gates on results files installs none of them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from blocked_imports import refusing

from tagger_eval.config import parse_run_config
from tagger_eval.reports.results import build_document, dataset_identity, save
from tagger_eval.run.evaluation import Evaluation

BLOCKED = ("onnxruntime", "tensorflow", "tf_keras", "torch", "tagger_eval.taggers", "tagger_eval.run")
# Runs the CLI with an import hook that refuses the blocked modules, then reports what got imported.
RUNNER = refusing(BLOCKED) + """
import json
from tagger_eval.cli import main
status = main(sys.argv[1:])
print(json.dumps(sorted(name for name in sys.modules if any(name.startswith(b) for b in blocked))))
sys.exit(status)
"""


@pytest.fixture(scope="module")
def results_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real results document of demo-histogram on the bundled demo, made by the library."""
    evaluation = Evaluation(parse_run_config(["--tagger=demo-histogram"]))
    try:
        run = evaluation.load(evaluation.specs[0])
        results = [run.evaluate(evaluation.dataset, post_id) for post_id in evaluation.dataset.post_ids()[:12]]
        run.close()
        document = build_document(results, {run.label: run.tagger.identity()}, dataset_identity(evaluation.dataset),
                                  evaluation.config.scope)
    finally:
        evaluation.close()
    return save(document, tmp_path_factory.mktemp("results") / "run.json")


def run_blocked(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", RUNNER, *args],
                          capture_output=True, text=True, timeout=120)


def test_compare_imports_no_backend(results_file: Path) -> None:
    completed = run_blocked("compare", str(results_file), str(results_file))
    assert completed.returncode == 0, completed.stderr
    assert "demo-histogram" in completed.stdout and "ok" in completed.stdout
    assert json.loads(completed.stdout.splitlines()[-1]) == []


def test_report_imports_no_backend(results_file: Path, tmp_path: Path) -> None:
    completed = run_blocked("report", str(results_file), "--out", str(tmp_path / "report"))
    assert completed.returncode == 0, completed.stderr
    assert "demo-histogram" in (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert json.loads(completed.stdout.splitlines()[-1]) == []


def test_the_blocker_really_blocks(results_file: Path) -> None:
    """The check above can fail: a command that needs the taggers dies under the same hook."""
    completed = run_blocked("list")
    assert completed.returncode != 0
    assert "blocked in this test: tagger_eval.taggers" in completed.stderr
