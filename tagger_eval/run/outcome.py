"""What happens when a run ends, independent of pytest: save its results, gate on a baseline, write a report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagger_eval.reports.compare import compare, failure_messages, format_comparison
from tagger_eval.reports.results import build_document, dataset_identity, save
from tagger_eval.run.evaluation import METRICS_FULL, EvaluationSession, PostResult


@dataclass
class RunOutcome:
    document: dict[str, Any]
    lines: list[str] = field(default_factory=list)  # for the terminal, after the leaderboard
    regressed: bool = False


def finish_run(
    session: EvaluationSession,
    results: list[PostResult],
    identities: Mapping[str, Mapping[str, Any]],
    *,
    tag_counts: Mapping[str, Mapping[str, int]] | None = None,
    results_path: Path | None,
    baseline: Mapping[str, Any] | None,
    tolerance: float,
    max_worse: float,
    report_dir: Path | None,
    rootdir: Path | None,
) -> RunOutcome:
    document = build_document(results, identities, dataset_identity(session.dataset), session.scope, rootdir)
    document["settings"].update(expand_implications=session.expand_implications, metrics=session.metrics)
    outcome = RunOutcome(document)
    if session.metrics == METRICS_FULL:
        from tagger_eval.scoring.tagger_metrics import compute, metrics_table

        computed = compute(results, session.dataset, tag_counts or {}, session.tag_aliases)
        for label, metrics in computed.items():
            document["taggers"][label]["metrics"] = metrics
        means = {label: tagger["summary"]["mean_score"] for label, tagger in document["taggers"].items()}
        outcome.lines += ["tagger metrics (P=R: the threshold where precision equals recall, micro over all tags "
                          "or macro per tag; AP: average precision)", *metrics_table(computed, means), ""]
    if results_path is not None:
        save(document, results_path)
        outcome.lines.append(f"results saved to {results_path}")
    if baseline is not None:
        rows = compare(baseline, document, tolerance, max_worse)
        outcome.lines += ["", "compared with the baseline (mean scores over the posts both runs scored):",
                          *format_comparison(rows)]
        messages = failure_messages(rows)
        outcome.regressed = bool(messages)
        outcome.lines += ["", *messages] if messages else ["no regression against the baseline"]
    if report_dir is not None:
        from tagger_eval.reports.html_report import write_report

        written = write_report(document, report_dir)
        outcome.lines.append(f"report written to {report_dir} ({len(written)} files)")
    return outcome
