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
import math
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from tagger_eval import __version__
from tagger_eval.data.dataset import Dataset
from tagger_eval.records import (
    DatasetIdentity,
    PostEntry,
    PostResult,
    PostStatus,
    ResultsDocument,
    TaggerResults,
    TaggerSummary,
    group_by_tagger,
    summarise,
)
from tagger_eval.scoring.post_score import PostScore
from tagger_eval.tags import printable

SCHEMA = "tagger-eval/results"
SCHEMA_VERSION = 1
# Per post, what the tagger-level entry already says.
_TAGGER_LEVEL = ("tagger", "post", "floor", "threshold", "character_threshold", "threshold_profile")
# Per post, what only the run's metrics need (summarised under the tagger's "metrics").
_METRICS_INPUT = ("truth_tags", "probabilities", "categories")
# The bounds `load` accepts beyond the types (README "Results files").
MIN_SCORE = -1_000_000.0
MAX_SECONDS = 1_000_000.0  # a runtime per image of over eleven days is a broken clock, not a slow model


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
        "machine": machine(),
        "commit": _commit(rootdir) if rootdir else None,
        "dataset": dataset,
        "settings": {"tag_scope": str(scope)},
        "taggers": taggers,
    }


def machine() -> dict[str, Any]:
    """What the runtimes were measured on; the regression gate compares runtimes only between equal machines."""
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "processor": _processor()}


def _processor() -> str:
    """The CPU model: /proc/cpuinfo's on Linux, where `platform.processor()` names only the architecture (CI
    runners of one label may get different CPUs)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor()


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
    """Write atomically (a reader never sees half a file); a failed write leaves no temporary file behind."""
    text = json.dumps(document, indent=1, sort_keys=False) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path.parent, {path.name: text.encode("utf-8")}, prefix=f".{path.name}.")
    except OSError as error:
        raise ResultsError(f"cannot write the results to {path}: {error}") from error
    return path


def write_atomically(directory: Path, files: Mapping[str, bytes], prefix: str) -> None:
    """Each file written whole into a temporary directory inside `directory` (the same file system), then renamed
    into place; the temporary directory is removed whatever happens. Files get the usual permissions (umask)."""
    with tempfile.TemporaryDirectory(prefix=prefix, suffix=".tmp", dir=directory,
                                     ignore_cleanup_errors=True) as staging:
        for name, data in files.items():
            (Path(staging) / name).write_bytes(data)
        for name in files:
            os.replace(Path(staging) / name, directory / name)


def autosave_path(directory: Path) -> Path:
    """`NNNN_<UTC time>.json`, numbered after the files already there, like pytest-benchmark's autosave."""
    numbers = [int(match.group(1)) for file in directory.glob("*.json")
               if (match := re.match(r"(\d{4})_", file.name))] if directory.is_dir() else []
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return directory / f"{max(numbers, default=0) + 1:04d}_{stamp}.json"


def load(path: Path) -> ResultsDocument:
    """Read and validate a results file: everything `compare` and `report` read has the type they expect and every
    number is finite and in range, or a `ResultsError` names the file and the field (as a JSON path such as
    `taggers.demo-pixel.posts.3.score`)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"results file not found: {path}") from None
    except (OSError, ValueError, RecursionError) as error:
        raise ResultsError(f"{path} is not a readable results file: {error}") from error
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ResultsError(f"{path} is not a tagger-eval results file (no \"schema\": \"{SCHEMA}\")")
    if document.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(f"{path} has results schema version {document.get('schema_version')}; this tagger-eval "
                           f"reads version {SCHEMA_VERSION}")
    try:
        _DOCUMENT(document, "", "")
    except _Invalid as error:
        raise ResultsError(f"{path} is not a valid results file: {error} (was it edited, or written by "
                           "something other than tagger-eval?)") from None
    return cast(ResultsDocument, document)


# The schema `load` checks, from the outside in. Keys it does not know are allowed (a newer minor version's).
# A check gets a value and where it is, as its parent's JSON path and its key: the full path is only built for
# containers and errors, which keeps the check of a 100,000-post document to about a second.


class _Invalid(Exception):
    """One field that does not fit the schema: where it is (a JSON path) and what is wrong with it."""

    def __init__(self, parent: str, key: str, problem: str) -> None:
        where = printable(_join(parent, key))  # a hostile label cannot rewrite the terminal or span lines
        super().__init__(f"{where}: {problem}" if where else problem)


_Check = Callable[[Any, str, str], None]  # (value, parent path, key) -> None, or raises _Invalid


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent and key else parent or key


def _shown(value: Any) -> str:
    if isinstance(value, dict | list):
        return "an object" if isinstance(value, dict) else "a list"
    text = json.dumps(value)  # NaN and Infinity as Python's JSON writes them
    return text if len(text) <= 40 else f"{text[:37]}..."


def _kind(expected: str, test: Callable[[Any], bool]) -> _Check:
    def check(value: Any, parent: str, key: str) -> None:
        if not test(value):
            raise _Invalid(parent, key, f"expected {expected}, got {_shown(value)}")

    return check


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number_in(low: float, high: float, nullable: bool = False) -> _Check:
    """A finite number within bounds that keep every chart drawable (matplotlib fails on values near 1e308)."""
    expected = f"a number in [{low:,.15g}, {high:,.15g}]{' or null' if nullable else ''}"
    return _kind(expected, lambda value: (nullable and value is None) or (_is_number(value) and low <= value <= high))


_STATUSES = frozenset(PostStatus)
_NUMBER = _kind("a finite number", _is_number)
_NUMBER_OR_NULL = _kind("a finite number or null", lambda value: value is None or _is_number(value))
# The seed score is at most 1; below, a tagger would need a million wrong tags per true tag.
_SCORE = _number_in(MIN_SCORE, 1.0)
_SCORE_OR_NULL = _number_in(MIN_SCORE, 1.0, nullable=True)
_RATE_OR_NULL = _number_in(0.0, 1.0, nullable=True)
_SECONDS_OR_NULL = _number_in(0.0, MAX_SECONDS, nullable=True)
_COUNT = _kind("a whole number >= 0", lambda value: type(value) is int and value >= 0)
_TEXT = _kind("a string", lambda value: isinstance(value, str))
_TEXT_OR_NULL = _kind("a string or null", lambda value: value is None or isinstance(value, str))
_FLAG = _kind("true or false", lambda value: isinstance(value, bool))
_OBJECT = _kind("an object", lambda value: isinstance(value, dict))
_OBJECT_OR_NULL = _kind("an object or null", lambda value: value is None or isinstance(value, dict))
_TAGS = _kind("a list of tag names", lambda value: isinstance(value, list) and all(isinstance(t, str) for t in value))
_POST_ID = _kind("a post id (digits)", lambda key: key.isascii() and key.isdigit())
_STATUS = _kind(" or ".join(f'"{status}"' for status in PostStatus),
               lambda value: isinstance(value, str) and value in _STATUSES)
# A dataclass field's annotation (a string, under `from __future__ import annotations`) -> its check.
_BY_ANNOTATION = {"int": _COUNT, "bool": _FLAG, "float": _NUMBER, "str": _TEXT, "float | None": _NUMBER_OR_NULL}


def _dataclass_fields(cls: type, **narrower: _Check) -> dict[str, _Check]:
    """A check per field of a dataclass saved with `asdict`, by its annotation unless `narrower` gives one."""
    return {field.name: narrower[field.name] if field.name in narrower else _BY_ANNOTATION[str(field.type)]
            for field in fields(cls)}


def _fields(required: Mapping[str, _Check], optional: Mapping[str, _Check] | None = None) -> _Check:
    """An object with these keys (and maybe others, unchecked)."""
    optional = optional or {}

    def check(value: Any, parent: str, key: str) -> None:
        _OBJECT(value, parent, key)
        where = _join(parent, key)
        for name, check_field in required.items():
            if name not in value:
                raise _Invalid(where, name, "missing")
            check_field(value[name], where, name)
        for name, check_field in optional.items():
            if name in value:
                check_field(value[name], where, name)

    return check


def _each(expected: str, check_key: _Check | None, check_item: _Check) -> _Check:
    """An object used as a mapping: every key and value checked."""
    whole = _kind(expected, lambda value: isinstance(value, dict))

    def check(value: Any, parent: str, key: str) -> None:
        whole(value, parent, key)
        where = _join(parent, key)
        for name, item in value.items():
            if check_key is not None:
                check_key(name, where, name)
            check_item(item, where, name)

    return check


def _post(value: Any, parent: str, key: str) -> None:
    _POST_FIELDS(value, parent, key)
    if value["status"] == PostStatus.SCORED and "score" not in value:
        raise _Invalid(_join(parent, key), "score", "missing (a scored post has a score)")


_POST_FIELDS = _fields({"status": _STATUS}, {
    **_dataclass_fields(PostScore, score=_SCORE),
    "runtime_s": _SECONDS_OR_NULL, "missed_tags": _TAGS, "wrong_tags": _TAGS, "reason": _TEXT_OR_NULL,
})
_SUMMARY_FIELDS = _dataclass_fields(
    TaggerSummary, mean_score=_SCORE_OR_NULL, median_score=_SCORE_OR_NULL, mean_runtime_s=_SECONDS_OR_NULL,
    error_rate=_RATE_OR_NULL, practical_error_rate=_RATE_OR_NULL, rating_error_rate=_RATE_OR_NULL,
    threshold_profile=_TEXT_OR_NULL,
)
_SUMMARY = _fields({name: check for name, check in _SUMMARY_FIELDS.items() if name != "threshold_profile"},
                   {"threshold_profile": _TEXT_OR_NULL})  # absent from documents written before profiles
_TAGGER = _fields({
    "identity": _OBJECT, "threshold": _NUMBER_OR_NULL, "character_threshold": _NUMBER_OR_NULL, "score_floor": _NUMBER,
    "summary": _SUMMARY,
    "posts": _each("an object (post id -> its result)", _POST_ID, _post),
}, {"metrics": _OBJECT})
_DOCUMENT = _fields({
    "created_at": _TEXT, "tagger_eval_version": _TEXT, "commit": _OBJECT_OR_NULL,
    "dataset": _fields({"path": _TEXT, "posts": _COUNT, "content_sha256": _TEXT, "metadata": _OBJECT}),
    "settings": _OBJECT,
    "taggers": _each("an object (tagger label -> its results)", None, _TAGGER),
}, {"machine": _OBJECT})
