"""The results document of a run: what was evaluated, on what, and every per-post outcome, as versioned JSON.

Schema (`schema_version` 1), documented in README.md ("Results of a run"):

    {"schema": "tagger-eval/results", "schema_version": 1, "created_at": ISO-8601, "tagger_eval_version": str,
     "machine": {...}, "commit": {...} or null,
     "dataset": {"path", "posts", "content_sha256", "metadata"},
     "settings": {"tag_scope", "expand_implications", "metrics"},
     "taggers": {LABEL: {"identity": {...}, "threshold", "character_threshold", "score_floor",
                         "summary": {TaggerSummary fields}, "metrics": {...} (with --tagger-metrics=full),
                         "posts": {POST_ID: {"status", "score", counts..., "runtime_s", "missed_tags",
                                             "wrong_tags", "reason"}}}}}
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from tagger_eval import __version__
from tagger_eval.data.dataset import Dataset
from tagger_eval.records import (
    DatasetIdentity,
    PostEntry,
    PostResult,
    ResultsDocument,
    TaggerResults,
    group_by_tagger,
    summarise,
)

SCHEMA = "tagger-eval/results"
SCHEMA_VERSION = 1
# Per post, what the tagger-level entry already says.
_TAGGER_LEVEL = ("tagger", "post", "floor", "threshold", "character_threshold")
# Per post, what only the run's metrics need (summarised under the tagger's "metrics").
_METRICS_INPUT = ("truth_tags", "probabilities", "categories")


class ResultsError(Exception):
    """A results file that cannot be used: unreadable, another schema, or from another dataset."""


def dataset_identity(dataset: Dataset) -> DatasetIdentity:
    return {"path": str(dataset.path), "posts": len(dataset), "content_sha256": dataset.content_hash(),
            "metadata": dataset.metadata()}


def build_document(
    results: Iterable[PostResult],
    identities: Mapping[str, Mapping[str, str]],
    dataset: DatasetIdentity,
    scope: str,
    rootdir: Path | None = None,
) -> ResultsDocument:
    """The document for one run; taggers and posts in a fixed order, so equal runs give equal documents."""
    results = list(results)
    by_tagger = group_by_tagger(results)
    summaries = {summary.tagger: summary for summary in summarise(results)}
    taggers: dict[str, TaggerResults] = {}
    for label in sorted(by_tagger):
        group = sorted(by_tagger[label], key=lambda result: result.post)
        first = group[0]
        taggers[label] = {
            "identity": dict(identities.get(label, {})),
            "threshold": first.threshold,
            "character_threshold": first.character_threshold,
            "score_floor": first.floor,
            "summary": asdict(summaries[label]),
            "posts": {str(result.post): _post_entry(result) for result in group},
        }
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tagger_eval_version": __version__,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpu_count": os.cpu_count()},
        "commit": _commit(rootdir) if rootdir else None,
        "dataset": dataset,
        "settings": {"tag_scope": str(scope)},
        "taggers": taggers,
    }


def _post_entry(result: PostResult) -> PostEntry:
    entry = {key: value for key, value in result.to_dict().items() if key not in _TAGGER_LEVEL + _METRICS_INPUT}
    counts = entry.pop("counts") or {}
    return cast(PostEntry, {"status": entry.pop("status"), **counts, **entry})


def _commit(rootdir: Path) -> dict[str, Any] | None:
    """The git commit the run was made from, when the rootdir is a checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=rootdir, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return {"id": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def save(document: ResultsDocument, path: Path) -> Path:
    """Write atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def autosave_path(directory: Path) -> Path:
    """`NNNN_<UTC time>.json`, numbered after the files already there, like pytest-benchmark's autosave."""
    numbers = [int(match.group(1)) for file in directory.glob("*.json")
               if (match := re.match(r"(\d{4})_", file.name))] if directory.is_dir() else []
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return directory / f"{max(numbers, default=0) + 1:04d}_{stamp}.json"


def load(path: Path) -> ResultsDocument:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"results file not found: {path}") from None
    except (OSError, ValueError) as error:
        raise ResultsError(f"{path} is not a readable results file: {error}") from error
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ResultsError(f"{path} is not a tagger-eval results file (no \"schema\": \"{SCHEMA}\")")
    if document.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(f"{path} has results schema version {document.get('schema_version')}; this tagger-eval "
                           f"reads version {SCHEMA_VERSION}")
    return cast(ResultsDocument, document)
