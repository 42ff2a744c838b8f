"""Shards' results merged into the document one run over all their posts would have written (`tagger-eval merge`).

Each shard (`--tagger-shard=I/N`) evaluated every tagger on its own posts. The merge takes, per tagger, the post
entries of every file as they are, rebuilds the `PostResult`s from them and summarises those with the run's own code
(`results.build_document`), so the summaries are a single run's, runtimes aside. It refuses files that are not
shards of one evaluation: another dataset (`content_sha256`), tagger-eval version, commit or setting (any but the
shard itself), or the same tagger with another identity, threshold or score floor.

A post in two files (a shard run twice, a CI job retried) is kept once when both results are the same (runtimes
aside) and refused when they differ: no rule could say which one is right. Posts no file holds are listed (how
many per tagger; which shards were not given, or which file holds fewer than its shard's posts); the caller decides
whether partial results are written. `metrics` (`--tagger-metrics=full`) are computed over a run's per-post
probabilities, which the results do not keep: they are dropped, with a note (`METRICS_NOT_MERGED`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

from tagger_eval.records import PostEntry, PostResult, ResultsDocument, TaggerResults
from tagger_eval.reports.compare import settings_differences
from tagger_eval.reports.results import ResultsError, build_document, load
from tagger_eval.scoring.post_score import PostScore
from tagger_eval.shards import Shard
from tagger_eval.tags import printable

LISTED = 10  # posts named in a message; the rest are counted
METRICS_NOT_MERGED = ("the shards' metrics (--tagger-metrics=full) are not merged: each is computed over one shard's "
                      "per-post probabilities, which results files do not keep; for metrics over every post, run once "
                      "with --tagger-metrics=full over the whole dataset (the prediction store of a machine that "
                      "evaluated shards serves their posts without inference)")
_COUNTS = frozenset(field.name for field in fields(PostScore))  # a scored post entry's counts
_TIMING = ("runtime_s", "from_store")  # what may differ between two runs of the same post: its runtime, and whence
# Given by the tagger's entry, not the post's (what `results._post_entry` leaves out of a post entry).
_TAGGER_LEVEL = ("tagger", "post", "floor", "threshold", "character_threshold", "threshold_profile", "counts")
_RESULT_FIELDS = frozenset(field.name for field in fields(PostResult)) - set(_TAGGER_LEVEL)


class MergeError(ResultsError):
    """Files that are not shards of one evaluation, or that disagree about a post."""


@dataclass
class Merged:
    """The merged document, what the merge did that the reader should know, and the posts no file holds."""

    document: ResultsDocument
    results: list[PostResult]  # the per-post results it was summarised from (the leaderboard's input)
    notes: list[str] = field(default_factory=list)  # dropped metrics, duplicated posts kept once, machines
    missing: list[str] = field(default_factory=list)  # empty when every tagger has every post of the dataset


@dataclass(frozen=True)
class _Part:
    name: str  # the file, as given
    document: ResultsDocument
    shard: Shard | None  # None: a whole run


def merge_files(paths: Sequence[Path]) -> Merged:
    """Read (and validate) each results file, then `merge` them; a `ResultsError` names the file."""
    return merge([(str(path), load(path)) for path in paths])


def merge(documents: Sequence[tuple[str, ResultsDocument]]) -> Merged:
    """Merge named results documents (a name is what messages call the document: its file)."""
    if not documents:
        raise MergeError("no results to merge")
    parts = [_part(name, document) for name, document in documents]
    _check_one_evaluation(parts)
    first = parts[0].document
    notes: list[str] = []
    entries = _entries(parts, notes)
    results = [_post_result(label, tagger, post, entry)
               for label, (tagger, posts) in entries.items() for post, entry in posts.items()]
    identities = {label: tagger["identity"] for label, (tagger, _) in entries.items()}
    document = build_document(results, identities, copy.deepcopy(first["dataset"]), first["settings"]["tag_scope"])
    document["settings"] = cast(Any, {key: value for key, value in first["settings"].items() if key != "shard"})
    document["tagger_eval_version"] = first["tagger_eval_version"]
    document["created_at"] = max(part.document["created_at"] for part in parts)  # when the last shard ended
    document["commit"] = _commit(parts)
    for label, tagger in document["taggers"].items():
        tagger["posts"] = {str(post): entry for post, entry in sorted(entries[label][1].items())}  # as written
    _machine(parts, document, notes)
    not_run = {name: reason for part in parts for name, reason in part.document.get("not_run", {}).items()
               if name not in document["taggers"]}
    if not_run:
        document["not_run"] = not_run
    if any("metrics" in tagger for part in parts for tagger in part.document["taggers"].values()):
        notes.insert(0, METRICS_NOT_MERGED)
    paths = sorted({part.document["dataset"]["path"] for part in parts})
    if len(paths) > 1:
        notes.append(f"the files name the dataset at {len(paths)} paths ({', '.join(map(printable, paths))}); the "
                     f"merged results name the first file's, {printable(first['dataset']['path'])}")
    return Merged(document, results, notes, _missing(parts, document))


def _part(name: str, document: ResultsDocument) -> _Part:
    text = document["settings"].get("shard")
    if text is None:
        return _Part(name, document, None)
    try:
        return _Part(name, document, Shard.parse(str(text)))
    except ValueError as error:
        raise MergeError(f"{printable(name)}: settings.shard: {error}") from None


def _check_one_evaluation(parts: list[_Part]) -> None:
    """Every part against the first (and each tagger against the first part that has it): the same dataset, code,
    settings and taggers, or a `MergeError` naming both files and what differs."""
    first = parts[0]
    for part in parts[1:]:
        problems = []
        old, new = first.document["dataset"], part.document["dataset"]
        if old["content_sha256"] != new["content_sha256"] or old["posts"] != new["posts"]:
            problems.append(f"another dataset: {old['posts']} posts, content {printable(old['content_sha256'][:12])}"
                            f" -> {new['posts']} posts, content {printable(new['content_sha256'][:12])}")
        versions = first.document["tagger_eval_version"], part.document["tagger_eval_version"]
        if versions[0] != versions[1]:
            problems.append(f"another tagger-eval: {' -> '.join(map(printable, versions))}")
        commits = [(each.document.get("commit") or {}).get("id") for each in (first, part)]
        if None not in commits and commits[0] != commits[1]:
            problems.append(f"another commit: {' -> '.join(printable(str(commit))[:12] for commit in commits)}")
        problems += [line.strip() for line in settings_differences(_unsharded(first), _unsharded(part))[1:]]
        labels = [sorted(map(printable, each.document["taggers"])) for each in (first, part)]
        if first.document["settings"].get("tag_scope") == "shared" and labels[0] != labels[1]:
            problems.append(f"other taggers under --tag-scope=shared, where the truth is the tags every selected "
                            f"tagger can output: {', '.join(labels[0])} -> {', '.join(labels[1])}")
        if problems:
            raise _refusal(first.name, part.name, problems)
    seen: dict[str, tuple[str, TaggerResults]] = {}
    for part in parts:
        for label, tagger in part.document["taggers"].items():
            name, earlier = seen.setdefault(label, (part.name, tagger))
            problems = [f"{key} of {printable(label)}: {_shown(earlier.get(key))} -> {_shown(tagger.get(key))}"
                        for key in ("identity", "score_floor") if earlier.get(key) != tagger.get(key)]
            if problems:
                raise _refusal(name, part.name, problems)


def _unsharded(part: _Part) -> ResultsDocument:
    """The document with its settings but the shard (what `settings_differences` compares)."""
    settings = {key: value for key, value in part.document["settings"].items() if key != "shard"}
    return cast(ResultsDocument, {**part.document, "settings": settings})


def _refusal(first: str, other: str, problems: list[str]) -> MergeError:
    return MergeError(f"{printable(first)} and {printable(other)} are not shards of one evaluation, so they are not "
                      f"merged: {'; '.join(problems)}")


def _shown(value: object) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{printable(str(key))}: {printable(str(item))}" for key, item in value.items()) + "}"
    return printable(str(value))


def _entries(parts: list[_Part], notes: list[str]) -> dict[str, tuple[TaggerResults, dict[int, PostEntry]]]:
    """Per tagger (in first-seen order), its tagger-level fields (the first file's) and every post's entry, a post
    held by two files kept once when its results match (a note says so) and refused when they differ."""
    merged: dict[str, tuple[TaggerResults, dict[int, PostEntry]]] = {}
    holder: dict[tuple[str, int], str] = {}  # (tagger, post) -> the file its kept entry comes from
    kept_twice: dict[tuple[str, str, str], list[int]] = {}  # (tagger, kept from, also in) -> posts
    differing: list[str] = []
    for part in parts:
        for label, tagger in part.document["taggers"].items():
            _, posts = merged.setdefault(label, (tagger, {}))
            for key, entry in tagger["posts"].items():
                post = int(key)
                if post not in posts:
                    posts[post] = entry
                    holder[label, post] = part.name
                elif _untimed(posts[post]) == _untimed(entry):
                    kept_twice.setdefault((label, holder[label, post], part.name), []).append(post)
                else:
                    differing.append(f"{printable(label)} post {post} ({printable(holder[label, post])}, "
                                     f"{printable(part.name)})")
    if differing:
        raise MergeError(f"two files hold different results for the same post, so they are not merged (no rule can "
                         f"say which one is right; give each post's results once): {_listed(differing)}")
    for (label, kept, also), twice in kept_twice.items():
        notes.append(f"{printable(label)}: {len(twice)} posts are in both {printable(kept)} and {printable(also)} "
                     f"with the same results: kept once, from {printable(kept)} (with its runtimes): "
                     f"{_listed([str(post) for post in sorted(twice)])}")
    return merged


def _untimed(entry: PostEntry) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key not in _TIMING}


def _post_result(label: str, tagger: TaggerResults, post: int, entry: PostEntry) -> PostResult:
    """The `PostResult` a post entry was written from (`results._post_entry` in reverse): the tagger-level
    settings, the counts, and every other field the entry holds (status, runtime, tags, reason)."""
    values: Mapping[str, Any] = entry
    return PostResult(
        tagger=label, post=post, floor=tagger["score_floor"], threshold=tagger["threshold"],
        character_threshold=tagger["character_threshold"], threshold_profile=tagger["summary"].get("threshold_profile"),
        counts={key: value for key, value in values.items() if key in _COUNTS} or None,
        **{key: value for key, value in values.items() if key in _RESULT_FIELDS},
    )


def _commit(parts: list[_Part]) -> dict[str, Any] | None:
    """The commit the files record (the same, or they were refused); dirty when any file's checkout was."""
    commits = [commit for part in parts if (commit := part.document.get("commit")) is not None]
    if not commits:
        return None
    return {**commits[0], "dirty": any(bool(commit.get("dirty")) for commit in commits)}


def _machine(parts: list[_Part], document: ResultsDocument, notes: list[str]) -> None:
    """The machine every file was timed on; none when they differ, so `compare` shows the runtimes without gating
    them (a runtime gate across machines compares machines, not code)."""
    machines = [part.document.get("machine") for part in parts]
    if all(machine == machines[0] for machine in machines) and machines[0] is not None:
        document["machine"] = copy.deepcopy(machines[0])
        return
    del document["machine"]  # type: ignore[misc]
    notes.append("the files were timed on different machines (or one records none): the merged results record no "
                 "machine, so `tagger-eval compare` shows their runtimes without gating them")


def _missing(parts: list[_Part], document: ResultsDocument) -> list[str]:
    """What keeps the merged results from covering the dataset: the shards not given, then per tagger how many posts
    have no result and which file holds fewer than its shard's posts. Empty when every tagger has every post."""
    posts = document["dataset"]["posts"]
    lines = []
    counts = {part.shard.count if part.shard else 1 for part in parts}
    if len(counts) == 1 and (count := counts.pop()) > 1:
        given = {part.shard for part in parts}
        lines += [f"no file holds {shard.describe(posts)}" for index in range(1, count + 1)
                  if (shard := Shard(index, count)) not in given]
    labels = [*document["taggers"], *(label for part in parts for label in part.document["taggers"]
                                      if label not in document["taggers"])]
    for label in labels:
        have = len(document["taggers"][label]["posts"]) if label in document["taggers"] else 0
        if have >= posts:
            continue
        lines.append(f"{printable(label)}: {posts - have} of the dataset's {posts} posts have no result")
        for part in parts:
            expected = part.shard.size(posts) if part.shard else posts
            held = len(part.document["taggers"][label]["posts"]) if label in part.document["taggers"] else 0
            where = f"{printable(part.name)} ({f'shard {part.shard}' if part.shard else 'a whole run'})"
            if held == 0:
                lines.append(f"  {where} has no result of it: it was not selected there, or did not load")
            elif held < expected:
                lines.append(f"  {where} holds {held} of its {expected} posts: the run stopped early, or tests "
                             "were deselected (-x, -k, --deselect, --lf)")
    return lines


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - LISTED} more" if len(items) > LISTED else ""
    return ", ".join(items[:LISTED]) + more
