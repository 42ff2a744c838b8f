"""What happens when a run ends, independent of pytest: save its results, gate on a baseline, write a report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tagger_eval.config import AUTOSAVE_DIR, GateConfig, MetricsMode, OutputConfig
from tagger_eval.records import PostResult, PostStatus, ResultsDocument, group_by_tagger
from tagger_eval.reports.compare import GateReport, gate_report
from tagger_eval.reports.results import ResultsError, autosave_path, build_document, save
from tagger_eval.run.evaluation import Evaluation
from tagger_eval.tags import printable


@dataclass
class CollectedRun:
    """What the tests of a run reported, gathered by the plugin (from xdist workers too)."""

    results: list[PostResult] = field(default_factory=list)
    identities: dict[str, dict[str, str]] = field(default_factory=dict)  # label -> the tagger's identity
    tag_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> the model's tag counts
    load_errors: dict[str, tuple[int, str]] = field(default_factory=dict)  # label -> (tests errored, the error)

    def load_error(self, label: str, error: str) -> None:
        count, _ = self.load_errors.get(label, (0, error))
        self.load_errors[label] = (count + 1, error)


@dataclass
class RunOutcome:
    document: ResultsDocument
    lines: list[str] = field(default_factory=list)  # for the terminal, after the leaderboard
    failures: list[str] = field(default_factory=list)  # those of `lines` that fail the run
    gate: GateReport | None = None  # the comparison with the baseline, when the run had one

    @property
    def failed(self) -> bool:
        """A regression against the baseline, results or a report that could not be written, or a run that scored
        no post at all."""
        return bool(self.failures)

    def fail(self, *lines: str) -> None:
        self.lines += lines
        self.failures += lines


def finish_run(evaluation: Evaluation, collected: CollectedRun, baseline: ResultsDocument | None,
               rootdir: Path | None = None) -> RunOutcome:
    """Build the results document; then, as the run's config asks, add metrics, save it, gate and report."""
    config = evaluation.config
    document = build_document(collected.results, collected.identities, evaluation.identity, config.scope, rootdir)
    if config.unavailable:
        document["not_run"] = dict(config.unavailable)
    settings = document["settings"]
    settings["expand_implications"] = config.expand_implications
    settings["metrics"] = config.metrics.value
    if config.metrics == MetricsMode.FULL:
        settings["soft_score_matching"] = config.soft_score_matching.value
        settings["soft_score_similarity"] = config.soft_score_similarity.value
    if config.shard is not None:  # `tagger-eval merge` joins the shards
        settings["shard"] = str(config.shard)
    outcome = RunOutcome(document)
    outcome.lines += _store_notes(evaluation, collected, document)
    scored = any(result.status == PostStatus.SCORED for result in collected.results)
    if config.metrics == MetricsMode.FULL and scored:
        outcome.lines += _add_metrics(evaluation, collected, document)
    _save(outcome, config.output, rootdir)
    if baseline is not None:
        _gate(outcome, baseline, config.gate)
    if config.output.report_dir is not None:
        _write_report(outcome, config.output.report_dir)
    if not scored:
        outcome.fail("no post was scored: each one was skipped or errored (`pytest -rs` says why), so the run fails")
    return outcome


def _store_notes(evaluation: Evaluation, collected: CollectedRun, document: ResultsDocument) -> list[str]:
    """Each tagger's count of posts scored from the prediction store goes into the results (their runtimes were
    measured when they were inferred); a tagger whose threshold the store cannot serve is named, with why."""
    notes = []
    for label, group in group_by_tagger(collected.results).items():
        if stored := sum(result.from_store for result in group):
            document["taggers"][label]["posts_from_store"] = stored
        first = group[0]
        if (reason := evaluation.store_bypass(first.threshold, first.character_threshold)) is not None:
            notes.append(f"prediction store not read for {printable(label)}: its {reason} (a threshold below the "
                         "floor needs fresh inference)")
    return notes


def _gate(outcome: RunOutcome, baseline: ResultsDocument, gate: GateConfig) -> None:
    """The comparison with the baseline (`--tagger-baseline`), as `tagger-eval compare` prints it; a regressed or
    slower tagger, or a baseline over another tag scope, fails the run."""
    report = outcome.gate = gate_report(baseline, outcome.document, gate)
    outcome.lines += ["", *report.lines]
    if report.refused is not None:
        outcome.fail(f"not compared with the baseline: {report.refused}")
    elif report.failures:
        outcome.lines.append("")
        outcome.fail(*report.failures)
    else:
        outcome.lines.append("no regression against the baseline")


def _save(outcome: RunOutcome, output: OutputConfig, rootdir: Path | None) -> None:
    """Save the results where the run's config says; a failed write (a full disk) fails the run with its reason."""
    path = output.results_path
    if path is None and output.autosave and rootdir is not None:
        path = autosave_path(rootdir / AUTOSAVE_DIR)
    if path is None or not output.autosave:
        return
    try:
        save(outcome.document, path)
    except ResultsError as error:
        outcome.fail(f"results not saved: {error}")
        return
    outcome.lines.append(f"results saved to {path}")


def _write_report(outcome: RunOutcome, report_dir: Path) -> None:
    from tagger_eval.reports.html_report import ReportError, write_report

    try:
        written = write_report(outcome.document, report_dir)
    except ReportError as error:
        outcome.fail(f"report not written: {error}")
        return
    outcome.lines.append(f"report written to {report_dir} ({len(written)} files)")


def _add_metrics(evaluation: Evaluation, collected: CollectedRun, document: ResultsDocument) -> list[str]:
    from tagger_eval.reports.metrics_table import metrics_table
    from tagger_eval.scoring.tagger_metrics import compute

    config = evaluation.config
    computed = compute(collected.results, evaluation.dataset, collected.tag_counts, evaluation.tag_aliases,
                       config.soft_score_matching, config.soft_score_similarity)
    for label, metrics in computed.items():
        document["taggers"][label]["metrics"] = metrics
    means = {label: tagger["summary"]["mean_score"] for label, tagger in document["taggers"].items()}
    return ["tagger metrics (P=R: the threshold where precision equals recall, micro over all tags or macro per "
            "tag; AP: average precision)", *metrics_table(computed, means), ""]
