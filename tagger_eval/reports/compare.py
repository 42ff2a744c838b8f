"""Two runs side by side, and the regression gate CI fails on.

A tagger regresses when, over the posts both runs scored, its mean score fell by more than the tolerance, or when
more than `max_worse` of those posts got a lower score. Posts scored in only one run, and taggers of the baseline
that this run did not select, are listed, never dropped silently; runs on different ground truth are not compared.
A NaN or infinite score in either run fails the comparison: no mean or count can say it did not regress.

A tagger is also slower when the median of its per-image times over those posts rose by more than the relative
runtime tolerance *and* by more than the absolute slack. Each post is timed once, so one post's time is noise; the
median over all of them is not moved by a few slow posts (the first call's warm-up, a pause, another process taking
the core for a moment), and the slack keeps sub-millisecond taggers from failing on timer jitter. Runtimes are gated
only between runs on the same machine (the documents' `machine`); across machines they are shown with a warning.

The settings the two runs were made with are compared too: differing ones are listed above the table, and runs over
different tag scopes are refused unless the gate allows it (their scores count different tags).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tagger_eval.config import GateConfig
from tagger_eval.records import DatasetIdentity, PostStatus, ResultsDocument, TaggerResults, scored_posts
from tagger_eval.reports.results import ResultsError
from tagger_eval.reports.text_table import format_table, number
from tagger_eval.tags import printable

LISTED_POSTS = 10  # posts named in a message; the rest are counted
PYTEST_FLAGS = "--tagger-"  # `--tagger-allow-different-scope`; `tagger-eval compare` takes the same without "tagger-"
# Run settings (the document's `settings`) and per-tagger ones, by the option that sets them.
_RUN_SETTINGS = {"tag_scope": "--tag-scope", "expand_implications": "--expand-implications",
                 "metrics": "--tagger-metrics", "soft_score_matching": "--soft-score-matching",
                 "soft_score_similarity": "--soft-score-similarity"}
_TAGGER_SETTINGS = {"threshold": "--threshold", "character_threshold": "--character-threshold",
                    "threshold_profile": "--threshold-profile"}
_NOT_RECORDED = object()


@dataclass
class TaggerComparison:
    tagger: str
    baseline_mean: float | None = None  # over the posts both runs scored
    new_mean: float | None = None
    compared: int = 0
    worse: list[tuple[int, float, float]] = field(default_factory=list)  # (post, baseline score, new score)
    better: int = 0
    only_baseline: list[int] = field(default_factory=list)
    only_new: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # why it regressed (score or runtime); empty when it did not
    missing: bool = False  # in the baseline, not selected in this run: reported, not a regression
    baseline_runtime_s: float | None = None  # median time per image over the posts both runs scored
    new_runtime_s: float | None = None
    slower: bool = False  # the runtime gate failed (its reason is in `problems`)

    @property
    def delta(self) -> float | None:
        if self.baseline_mean is None or self.new_mean is None:
            return None
        return self.new_mean - self.baseline_mean

    @property
    def runtime_ratio(self) -> float | None:
        if self.baseline_runtime_s is None or self.new_runtime_s is None or self.baseline_runtime_s <= 0:
            return None
        return self.new_runtime_s / self.baseline_runtime_s

    @property
    def regressed(self) -> bool:
        return bool(self.problems)


def check_same_dataset(baseline: DatasetIdentity, new: DatasetIdentity) -> None:
    old_hash, new_hash = baseline["content_sha256"], new["content_sha256"]
    if old_hash != new_hash:
        raise ResultsError(
            f"the baseline was made on another dataset ({printable(baseline['path'])}, {baseline['posts']} posts, "
            f"content {printable(old_hash[:12])}) than this run ({printable(new['path'])}, {new['posts']} posts, "
            f"content {printable(new_hash[:12])}): "
            "scores on different ground truth cannot be compared"
        )


def scope_refusal(baseline: ResultsDocument, scope: object, gate: GateConfig | None = None,
                  flags: str = PYTEST_FLAGS) -> str | None:
    """Why a run with tag scope `scope` is not compared with `baseline`, or None when it is: scores over different
    tags are not comparable unless the gate allows it (`flags` + `allow-different-scope` names the opt-in)."""
    old = baseline["settings"].get("tag_scope", _NOT_RECORDED)
    if (gate or GateConfig()).allow_different_scope or old == scope:
        return None
    return (f"the baseline was evaluated with --tag-scope={_setting(old)} and this run with "
            f"--tag-scope={_setting(scope)}: scores over different tags cannot be compared "
            f"(pass {flags}allow-different-scope to compare them anyway)")


def machine_difference(baseline: ResultsDocument, new: ResultsDocument) -> str | None:
    """How the machines the two runs were timed on differ (the fields both record), or None when they match."""
    old, now = baseline.get("machine"), new.get("machine")
    if not isinstance(old, Mapping) or not isinstance(now, Mapping):
        which = "the baseline does" if not isinstance(old, Mapping) else "this run does"
        return f"{which} not record the machine it ran on"
    differing = [f"{printable(str(key))} {_setting(old[key])} -> {_setting(now[key])}"
                 for key in old if key in now and old[key] != now[key]]
    return "; ".join(differing) or None


def compare(baseline: ResultsDocument, new: ResultsDocument, gate: GateConfig | None = None) -> list[TaggerComparison]:
    """One comparison per tagger of either run, in the new run's order, then taggers only the baseline had.

    Nothing when the runs' tag scopes differ and the gate does not allow it (`scope_refusal` says why)."""
    gate = gate or GateConfig()
    check_same_dataset(baseline["dataset"], new["dataset"])
    if scope_refusal(baseline, new["settings"].get("tag_scope", _NOT_RECORDED), gate):
        return []
    gate_runtimes = gate.runtime_across_machines or machine_difference(baseline, new) is None
    old_taggers, new_taggers = baseline["taggers"], new["taggers"]
    rows = []
    for label in [*new_taggers, *(label for label in old_taggers if label not in new_taggers)]:
        row = TaggerComparison(label)
        rows.append(row)
        if label not in old_taggers:
            continue  # new in this run: nothing to regress from
        if label not in new_taggers:
            row.missing = True
            continue
        old, now = scored_posts(old_taggers[label]), scored_posts(new_taggers[label])
        shared = sorted(old.keys() & now.keys())
        row.only_baseline, row.only_new = sorted(old.keys() - now.keys()), sorted(now.keys() - old.keys())
        row.compared = len(shared)
        row.problems += _compare_scores(row, old, now, shared, gate)
        slower = _compare_runtimes(row, old_taggers[label], new_taggers[label], shared, gate)
        if slower is not None and gate_runtimes:
            row.problems.append(slower)
            row.slower = True
    return rows


def _compare_scores(row: TaggerComparison, old: dict[int, float], now: dict[int, float], shared: list[int],
                    gate: GateConfig) -> list[str]:
    """Fill in the row's score columns; what makes the scores a regression."""
    problems = _non_finite(old, "the baseline") + _non_finite(now, "this run")
    if not shared:
        problems.append("no post scored in both runs")
    if problems:
        return problems
    row.baseline_mean = statistics.fmean(old[post] for post in shared)
    row.new_mean = statistics.fmean(now[post] for post in shared)
    row.worse = [(post, old[post], now[post]) for post in shared if now[post] < old[post]]
    row.better = sum(now[post] > old[post] for post in shared)
    if row.new_mean - row.baseline_mean < -gate.tolerance:
        problems.append(f"mean score fell from {row.baseline_mean:.4f} to {row.new_mean:.4f} "
                        f"({row.delta:+.4f}, tolerance {gate.tolerance})")
    if len(row.worse) > gate.max_worse * len(shared):
        problems.append(f"{len(row.worse)} of {len(shared)} posts scored lower "
                        f"(more than {gate.max_worse:.0%} allowed)")
    return problems


def runtimes(tagger: TaggerResults) -> dict[int, float]:
    """Post id -> time per image (`runtime_s`) of one tagger's scored posts that have one."""
    return {int(post): float(runtime) for post, entry in tagger["posts"].items()
            if entry["status"] == PostStatus.SCORED and (runtime := entry.get("runtime_s")) is not None}


def _compare_runtimes(row: TaggerComparison, old_tagger: TaggerResults, new_tagger: TaggerResults,
                      shared: list[int], gate: GateConfig) -> str | None:
    """Fill in the row's runtime columns (medians over the shared posts timed in both runs); why it is slower.

    Slower means both limits are passed: more than `runtime_tolerance` slower relative to the baseline, and more
    than `runtime_slack_ms` slower per image. Exactly at a limit passes."""
    old, now = runtimes(old_tagger), runtimes(new_tagger)
    timed = [post for post in shared if post in old and post in now]
    if not timed:
        return None
    base = row.baseline_runtime_s = statistics.median(old[post] for post in timed)
    new = row.new_runtime_s = statistics.median(now[post] for post in timed)
    if not (math.isfinite(base) and math.isfinite(new)):
        return f"non-finite runtimes, which cannot be compared: {_ms(base)} ms -> {_ms(new)} ms"
    if new <= base * (1 + gate.runtime_tolerance) or (new - base) * 1000 <= gate.runtime_slack_ms:
        return None
    ratio = "" if row.runtime_ratio is None else f"x{row.runtime_ratio:.2f}, "
    return (f"median time per image rose from {_ms(base)} ms to {_ms(new)} ms over {len(timed)} posts "
            f"({ratio}+{_ms(new - base)} ms: past both limits, x{1 + gate.runtime_tolerance:g} "
            f"and +{gate.runtime_slack_ms:g} ms)")


def _ms(seconds: float | None) -> str:
    return number(None if seconds is None else seconds * 1000, "{:.2f}")


def _non_finite(scores: dict[int, float], run: str) -> list[str]:
    """A NaN or infinite score never passes the gate: the run that has one is broken, whatever the mean says."""
    bad = [f"post {post} ({score})" for post, score in sorted(scores.items()) if not math.isfinite(score)]
    return [f"non-finite scores in {run}, which cannot be compared: {_listed(bad)}"] if bad else []


def _listed(items: list[str]) -> str:
    """The first LISTED_POSTS items, then how many more."""
    more = f" and {len(items) - LISTED_POSTS} more" if len(items) > LISTED_POSTS else ""
    return ", ".join(items[:LISTED_POSTS]) + more


def _setting(value: object) -> str:
    """A setting's value as the options write it."""
    if value is _NOT_RECORDED:
        return "(not recorded)"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return printable(str(value))


def settings_differences(baseline: ResultsDocument, new: ResultsDocument) -> list[str]:
    """One line per setting the two runs differ in: the run's (`settings`), then per tagger of both runs its
    threshold, character threshold and threshold profile; each named by the option that sets it."""
    lines = []
    old_settings: Mapping[str, Any] = baseline["settings"]
    new_settings: Mapping[str, Any] = new["settings"]
    for key in [*old_settings, *(key for key in new_settings if key not in old_settings)]:
        old, now = old_settings.get(key, _NOT_RECORDED), new_settings.get(key, _NOT_RECORDED)
        if old != now:
            lines.append(f"  {_RUN_SETTINGS.get(key, printable(key))}: {_setting(old)} -> {_setting(now)}")
    for label, now_tagger in new["taggers"].items():
        old_tagger = baseline["taggers"].get(label)
        if old_tagger is None:
            continue
        for key, flag in _TAGGER_SETTINGS.items():
            old, now = _tagger_setting(old_tagger, key), _tagger_setting(now_tagger, key)
            if old != now:
                lines.append(f"  {flag} of {printable(label)}: {_setting(old)} -> {_setting(now)}")
    return ["settings that differ (baseline -> this run):", *lines] if lines else []


def _tagger_setting(tagger: TaggerResults, key: str) -> object:
    if key == "threshold_profile":  # in the summary; absent from documents written before profiles, as None
        return tagger["summary"].get(key)
    return tagger.get(key, _NOT_RECORDED)


def failure_messages(rows: list[TaggerComparison]) -> list[str]:
    """One paragraph per regressed tagger: what fell or slowed, by how much, and which posts got worse."""
    messages = []
    for row in rows:
        if not row.regressed:
            continue
        lines = [f"{printable(row.tagger)} regressed: " + "; ".join(row.problems)]
        if row.worse:
            worst_first = sorted(row.worse, key=lambda w: w[2] - w[1])
            lines.append("  worse: " + _listed([f"post {post} {old:.3f} -> {new:.3f}"
                                                for post, old, new in worst_first]))
        messages.append("\n".join(lines))
    return messages


def _verdict(row: TaggerComparison) -> str:
    if row.regressed:
        scores = len(row.problems) > row.slower
        return ", ".join(word for word, on in (("REGRESSED", scores), ("SLOWER", row.slower)) if on)
    if row.missing:
        return "not run"
    return "new" if row.baseline_mean is None and row.baseline_runtime_s is None else "ok"


def format_comparison(rows: list[TaggerComparison]) -> list[str]:
    """The per-tagger deltas as a table, then the posts only one run scored; labels escaped (`printable`)."""
    header = ("tagger", "score base", "new", "delta", "posts", "worse", "better", "ms/image base", "new", "ratio",
              "verdict")
    cells = [(printable(row.tagger), number(row.baseline_mean, "{:.4f}"), number(row.new_mean, "{:.4f}"),
              number(row.delta, "{:+.4f}"), str(row.compared), str(len(row.worse)), str(row.better),
              _ms(row.baseline_runtime_s), _ms(row.new_runtime_s), number(row.runtime_ratio, "{:.2f}"),
              _verdict(row))
             for row in rows]
    lines = format_table(header, cells)
    for row in rows:
        for which, posts in (("only in the baseline", row.only_baseline), ("only in this run", row.only_new)):
            if posts:
                shown = ", ".join(map(str, posts[:LISTED_POSTS])) + (" ..." if len(posts) > LISTED_POSTS else "")
                lines.append(f"{printable(row.tagger)}: {len(posts)} posts scored {which}: {shown}")
    return lines


@dataclass
class GateReport:
    """What a comparison prints, and whether it fails: the same in `--tagger-baseline` and `tagger-eval compare`."""

    lines: list[str] = field(default_factory=list)  # warnings, the differing settings, the table
    failures: list[str] = field(default_factory=list)  # one paragraph per regressed tagger
    refused: str | None = None  # why the runs were not compared at all (another tag scope)
    rows: list[TaggerComparison] = field(default_factory=list)


def gate_report(baseline: ResultsDocument, new: ResultsDocument, gate: GateConfig | None = None,
                flags: str = PYTEST_FLAGS) -> GateReport:
    """Compare `new` with `baseline` under `gate`; `flags` is how the options are spelled where it runs (pytest's
    `--tagger-runtime-tolerance`, `tagger-eval compare --runtime-tolerance`). Raises `ResultsError` for another
    dataset."""
    gate = gate or GateConfig()
    check_same_dataset(baseline["dataset"], new["dataset"])
    report = GateReport(lines=settings_differences(baseline, new))
    report.refused = scope_refusal(baseline, new["settings"].get("tag_scope", _NOT_RECORDED), gate, flags)
    if report.refused is not None:
        return report
    machines = machine_difference(baseline, new)
    if machines is not None:
        gated = "gated anyway" if gate.runtime_across_machines else (
            f"shown, not gated (pass {flags}runtime-across-machines to gate them)")
        report.lines.insert(0, f"warning: the runs were timed on different machines ({machines}): their runtimes "
                               f"are {gated}")
    report.rows = compare(baseline, new, gate)
    report.lines += ["compared with the baseline over the posts both runs scored (mean score; median time per "
                     "image):", *format_comparison(report.rows)]
    report.failures = failure_messages(report.rows)
    return report
