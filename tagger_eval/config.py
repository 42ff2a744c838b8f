"""A run's settings, parsed once at the boundary: every command-line option is declared here, its value checked by
an argparse `type=` callable (`option_types`), and the whole run described by one frozen `RunConfig` that the
evaluation, the end of the run and the CLI share.

Bad values are usage errors before any test runs. The pytest plugin adds these options to pytest's parser;
`parse_run_config` parses the same options without pytest (for scripts and tests).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, TypeVar

from tagger_eval.option_types import (
    choice,
    fraction,
    non_negative_float,
    positive_int,
    tagger_float,
    tagger_profile,
    tagger_threshold,
    timeout_seconds,
)
from tagger_eval.scoring.scope import TagScope
from tagger_eval.scoring.tag_distance import SimilarityMeasure, SoftScoreMatching
from tagger_eval.shards import Shard, shard_option

V = TypeVar("V", float, str)
# Decoded pixels per image above which a post is skipped: 40 megapixels (a 6300x6300 image, 120 MB as RGB) holds
# every ordinary Danbooru post; Pillow itself only warns below 89 megapixels and refuses above twice that.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
DEFAULT_TOLERANCE = 0.01
DEFAULT_MAX_WORSE = 0.10  # share of the compared posts that may score lower
# The runtime gate fails a tagger whose median time per image rose by more than both (README "Regression gate"):
# 50 % is past what unchanged code drifts between runs and short of the 2x of a real slowdown; 10 ms is twice the
# drift measured for the few-millisecond demo taggers on a busy 2-core machine, far below a real model's time on a CPU.
DEFAULT_RUNTIME_TOLERANCE = 0.5
DEFAULT_RUNTIME_SLACK_MS = 10.0
AUTOSAVE_DIR = ".tagger-eval"


class ConfigError(ValueError):
    """An option value or combination that cannot run; the message names the option."""


class MetricsMode(StrEnum):
    OFF = "off"
    FULL = "full"  # P=R thresholds, F1, F2, MCC, average precision, best threshold, soft score


class ExecutionProvider(StrEnum):
    AUTO = "auto"  # the fastest one installed
    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"


@dataclass(frozen=True)
class TaggerSpec:
    """One selected tagger: `name` or `name:argument`."""

    name: str
    argument: str | None = None

    @property
    def label(self) -> str:
        return self.name if self.argument is None else f"{self.name}:{self.argument}"


@dataclass(frozen=True)
class TaggerOptions:
    """Run-wide settings a backend may need to build its model or client."""

    execution_provider: ExecutionProvider = ExecutionProvider.AUTO
    threads: int | None = None  # intra-op threads for in-process models; None = one per core
    http_timeout: float = 60.0  # seconds, for tagger servers


# The options, declared once for pytest's parser and for argparse.


@dataclass(frozen=True)
class Option:
    flag: str
    help: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, add_argument: Callable[..., Any], flag: str | None = None) -> None:
        """Declare it with `add_argument` (argparse's or pytest's `addoption`), under another flag if given."""
        add_argument(flag or self.flag, dest=self.dest if flag is None else flag.lstrip("-").replace("-", "_"),
                     help=self.help, **self.settings)


def _values(metavar: str, parse: Callable[[str], tuple[str | None, float | str]]) -> dict[str, Any]:
    return {"action": "append", "default": [], "metavar": metavar, "type": parse}


TOLERANCE = Option("--tagger-tolerance",
                   f"largest allowed fall of a tagger's mean score (default: {DEFAULT_TOLERANCE})",
                   {"type": non_negative_float, "default": DEFAULT_TOLERANCE, "metavar": "FLOAT"})
MAX_WORSE = Option("--tagger-max-worse",
                   f"largest share of posts allowed to score lower (default: {DEFAULT_MAX_WORSE})",
                   {"type": fraction, "default": DEFAULT_MAX_WORSE, "metavar": "FRACTION"})
RUNTIME_TOLERANCE = Option(
    "--tagger-runtime-tolerance", "largest allowed rise of a tagger's median time per image, relative: 0.5 fails a "
    f"tagger more than 50%% slower than the baseline (default: {DEFAULT_RUNTIME_TOLERANCE})",
    {"type": non_negative_float, "default": DEFAULT_RUNTIME_TOLERANCE, "metavar": "FLOAT"})
RUNTIME_SLACK = Option(
    "--tagger-runtime-slack-ms", "a rise of the median time per image up to this many milliseconds never fails, "
    f"whatever the ratio (default: {DEFAULT_RUNTIME_SLACK_MS:g})",
    {"type": non_negative_float, "default": DEFAULT_RUNTIME_SLACK_MS, "metavar": "MS"})
ALLOW_DIFFERENT_SCOPE = Option(
    "--tagger-allow-different-scope", "compare with a baseline evaluated under another --tag-scope (refused by "
    "default: the scores count different tags)", {"action": "store_true"})
RUNTIME_ACROSS_MACHINES = Option(
    "--tagger-runtime-across-machines", "gate runtimes even when the baseline ran on another machine (by default "
    "they are shown with a warning, not gated)", {"action": "store_true"})
# GateConfig's fields, by the option that sets each.
GATE_FIELDS = {"tolerance": TOLERANCE, "max_worse": MAX_WORSE, "runtime_tolerance": RUNTIME_TOLERANCE,
               "runtime_slack_ms": RUNTIME_SLACK, "allow_different_scope": ALLOW_DIFFERENT_SCOPE,
               "runtime_across_machines": RUNTIME_ACROSS_MACHINES}
RUN_OPTIONS = (
    Option("--tagger", "taggers to evaluate: registered names, NAME:ARG for families, or 'all' (every registered "
           "tagger that can run here); repeatable", {"action": "append", "default": [], "metavar": "SPEC[,SPEC...]"}),
    Option("--dataset", "the data.db to evaluate on, or its directory (default: the bundled demo dataset)",
           {"type": Path, "default": None, "metavar": "PATH"}),
    Option("--threshold", "probability above which a tag is predicted (default: per tagger); repeatable",
           _values("[NAME=]FLOAT", tagger_threshold)),
    Option("--score-floor", "a post fails when its score is below this (default: per tagger); repeatable",
           _values("[NAME=]FLOAT", tagger_float)),
    Option("--character-threshold", "threshold for character tags (default: per tagger, e.g. 0.85 for WD14); "
           "repeatable", _values("[NAME=]FLOAT", tagger_threshold)),
    Option("--threshold-profile", "a threshold profile of the taggers whose authors publish several (Camie v2: "
           "micro-opt, the default, or macro-opt); --threshold overrides it; repeatable",
           _values("[NAME=]PROFILE", tagger_profile)),
    Option("--tag-scope", "which truth tags count (default: all, every Danbooru tag; shared: the tags every selected "
           "tagger can output)",
           {"type": choice(TagScope, "scope"), "default": TagScope.ALL, "metavar": "|".join(TagScope)}),
    Option("--expand-implications", "add to each post's truth what its tags imply (needs the dataset's "
           "tag_implications)", {"action": "store_true"}),
    Option("--tagger-metrics", "full: also P=R threshold, F1, F2, MCC, average precision per category, the best "
           "threshold for the score, and the tag-distance soft score",
           {"type": choice(MetricsMode), "default": MetricsMode.OFF, "metavar": "|".join(MetricsMode)}),
    Option("--soft-score-matching", "with --tagger-metrics=full: max (default) lets several wrong tags draw credit "
           "from one missed tag; one-to-one pairs them (needs scipy)",
           {"type": choice(SoftScoreMatching), "default": SoftScoreMatching.MAX,
            "metavar": "|".join(SoftScoreMatching)}),
    Option("--soft-score-similarity", "with --tagger-metrics=full: how tag co-occurrence makes two tags similar in "
           "the soft score: cosine (default) or jaccard (stricter)",
           {"type": choice(SimilarityMeasure), "default": SimilarityMeasure.COSINE,
            "metavar": "|".join(SimilarityMeasure)}),
    Option("--execution-provider", "onnxruntime provider for ONNX taggers (default: auto, the fastest installed)",
           {"type": choice(ExecutionProvider), "default": ExecutionProvider.AUTO,
            "metavar": "|".join(ExecutionProvider)}),
    Option("--tagger-batch-size", "images per model call; the next batch decodes while the model runs (default: "
           "what the hardware prefers: 1 on the CPU, 16 on a GPU provider)",
           {"type": positive_int, "default": None, "metavar": "N"}),
    Option("--tagger-threads", "intra-op threads for in-process models (default: one per core)",
           {"type": positive_int, "default": None, "metavar": "N"}),
    Option("--http-timeout", "deadline of each attempt of a request to a tagger server, the whole answer included "
           "(default: 60)", {"type": timeout_seconds, "default": 60.0, "metavar": "SECONDS"}),
    Option("--tagger-shard", "only every Nth post in id order, from the Ith", {"type": shard_option, "metavar": "I/N"}),
    Option("--max-image-pixels", f"skip images with more pixels than this (default: {DEFAULT_MAX_IMAGE_PIXELS:,})",
           {"type": positive_int, "default": DEFAULT_MAX_IMAGE_PIXELS, "metavar": "N"}),
    Option("--tagger-results", f"write the run's results JSON here (default: a new numbered file in {AUTOSAVE_DIR}/)",
           {"type": Path, "default": None, "metavar": "PATH"}),
    Option("--no-tagger-results", "do not save the run's results", {"action": "store_true"}),
    Option("--tagger-store", f"the prediction store (default: {AUTOSAVE_DIR}/predictions.sqlite in the rootdir)",
           {"type": Path, "metavar": "PATH"}),
    Option("--no-tagger-store", "neither read nor write the prediction store", {"action": "store_true"}),
    Option("--tagger-baseline", "fail the session when a tagger regressed against this saved results file",
           {"type": Path, "default": None, "metavar": "PATH"}),
    *GATE_FIELDS.values(),
    Option("--tagger-report", "write charts and an HTML page of the run into DIR",
           {"type": Path, "default": None, "metavar": "DIR"}),
)


# The parsed run.


@dataclass(frozen=True)
class PerTagger(Generic[V]):
    """A setting given for every tagger (`VALUE`) and/or for some (`NAME=VALUE`); the last value given wins."""

    default: V | None = None
    by_name: Mapping[str, V] = field(default_factory=dict)

    @classmethod
    def from_values(cls, values: Iterable[tuple[str | None, V]]) -> PerTagger[V]:
        default: V | None = None
        by_name: dict[str, V] = {}
        for name, value in values:
            if name is None:
                default = value
            else:
                by_name[name] = value
        return cls(default, by_name)

    def named(self, spec: TaggerSpec) -> V | None:
        """The value given for this tagger by name (`NAME=VALUE`): by its label, then its name; None if none."""
        for key in (spec.label, spec.name):
            if key in self.by_name:
                return self.by_name[key]
        return None

    def pick(self, spec: TaggerSpec, fallback: V | None) -> V | None:
        """The value for one tagger: by its label, then its name, then the global value, then `fallback`."""
        named = self.named(spec)
        if named is not None:
            return named
        return fallback if self.default is None else self.default


@dataclass(frozen=True)
class GateConfig:
    """When a run counts as a regression against a saved one (`--tagger-baseline`, `tagger-eval compare`)."""

    tolerance: float = DEFAULT_TOLERANCE
    max_worse: float = DEFAULT_MAX_WORSE
    runtime_tolerance: float = DEFAULT_RUNTIME_TOLERANCE  # relative rise of the median time per image
    runtime_slack_ms: float = DEFAULT_RUNTIME_SLACK_MS  # a rise up to this never fails
    allow_different_scope: bool = False  # compare runs over different tag scopes
    runtime_across_machines: bool = False  # gate runtimes of runs timed on different machines

    @classmethod
    def from_options(cls, options: Any, prefix: str = "tagger_") -> GateConfig:
        """From the parsed `GATE_FIELDS` options: pytest's (`tagger_tolerance`), or with `prefix` "" those of
        `tagger-eval compare`, declared without `--tagger-` (`tolerance`)."""
        return cls(**{name: getattr(options, prefix + option.dest.removeprefix("tagger_"))
                      for name, option in GATE_FIELDS.items()})


@dataclass(frozen=True)
class OutputConfig:
    """What the end of a run writes."""

    results_path: Path | None = None  # None with `autosave`: a new numbered file under the rootdir's AUTOSAVE_DIR
    autosave: bool = True
    baseline: Path | None = None
    report_dir: Path | None = None

    def check(self) -> None:
        """Paths the end of the run writes to or reads from, checked before the run rather than after it."""
        if self.autosave and self.results_path is not None and self.results_path.is_dir():
            raise ConfigError(f"--tagger-results: {self.results_path} is a directory; give a file path such as "
                              f"{self.results_path / 'results.json'}")
        if self.report_dir is not None and self.report_dir.exists() and not self.report_dir.is_dir():
            raise ConfigError(f"--tagger-report: {self.report_dir} is a file; give a directory for the charts and "
                              "index.html (it is created if missing)")
        if self.baseline is not None and not self.baseline.is_file():
            raise ConfigError(f"--tagger-baseline: {self.baseline} is not a file; give a results JSON of an earlier "
                              "run (by default under .tagger-eval/)")


@dataclass(frozen=True)
class RunConfig:
    """Everything one evaluation run does, checked."""

    taggers: tuple[TaggerSpec, ...]
    unavailable: Mapping[str, str] = field(default_factory=dict)  # taggers `all` left out -> why
    dataset: Path | None = None  # None: the bundled demo dataset
    thresholds: PerTagger[float] = PerTagger()
    floors: PerTagger[float] = PerTagger()
    character_thresholds: PerTagger[float] = PerTagger()
    threshold_profiles: PerTagger[str] = PerTagger()
    scope: TagScope = TagScope.ALL
    expand_implications: bool = False
    metrics: MetricsMode = MetricsMode.OFF
    soft_score_matching: SoftScoreMatching = SoftScoreMatching.MAX
    soft_score_similarity: SimilarityMeasure = SimilarityMeasure.COSINE
    batch_size: int | None = None  # None: each tagger's `preferred_batch_size`
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    shard: Shard | None = None  # --tagger-shard: only this shard's posts
    store: Path | None = None  # --tagger-store; None: the default, under the rootdir `Evaluation` is given
    use_store: bool = True  # --no-tagger-store: False
    tagger_options: TaggerOptions = TaggerOptions()
    output: OutputConfig = OutputConfig()
    gate: GateConfig = GateConfig()

    @classmethod
    def from_options(cls, options: Any, select: Callable[[list[str]], tuple[list[TaggerSpec], dict[str, str]]]
                     | None = None) -> RunConfig:
        """From parsed options (pytest's `config.option` or an argparse namespace); `select` resolves `--tagger`
        against the tagger registry (default: the installed one)."""
        if select is None:
            from tagger_eval.taggers import parse_specs

            select = parse_specs
        specs, unavailable = select(options.tagger)
        config = cls(
            taggers=tuple(specs), unavailable=unavailable, dataset=options.dataset,
            thresholds=PerTagger.from_values(options.threshold), floors=PerTagger.from_values(options.score_floor),
            character_thresholds=PerTagger.from_values(options.character_threshold),
            threshold_profiles=PerTagger.from_values(options.threshold_profile),
            scope=options.tag_scope, expand_implications=options.expand_implications, metrics=options.tagger_metrics,
            soft_score_matching=options.soft_score_matching, soft_score_similarity=options.soft_score_similarity,
            batch_size=options.tagger_batch_size, max_image_pixels=options.max_image_pixels, shard=options.tagger_shard,
            tagger_options=TaggerOptions(options.execution_provider, options.tagger_threads, options.http_timeout),
            output=OutputConfig(options.tagger_results, not options.no_tagger_results, options.tagger_baseline,
                                options.tagger_report),
            gate=GateConfig.from_options(options), store=options.tagger_store, use_store=not options.no_tagger_store,
        )
        config.check()
        return config

    def check(self) -> None:
        """What no single option can check alone."""
        labels = {spec.label for spec in self.taggers} | {spec.name for spec in self.taggers}
        for option, values in (("--threshold", self.thresholds), ("--score-floor", self.floors),
                                ("--character-threshold", self.character_thresholds),
                                ("--threshold-profile", self.threshold_profiles)):
            for name in values.by_name:
                if name not in labels:
                    raise ConfigError(f"{option}: {name!r} is not a selected tagger ({', '.join(sorted(labels))})")
        self.output.check()
        if self.metrics == MetricsMode.FULL and self.soft_score_matching == SoftScoreMatching.ONE_TO_ONE:
            try:
                import scipy.optimize  # noqa: F401
            except ImportError:
                raise ConfigError("--soft-score-matching=one-to-one needs scipy: pip install scipy") from None


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tagger-eval run options", exit_on_error=False, add_help=False)
    for option in RUN_OPTIONS:
        option.add_to(parser.add_argument)
    return parser


def parse_run_config(argv: Sequence[str]) -> RunConfig:
    """The `RunConfig` of pytest-style options (`["--tagger=demo-pixel", "--threshold=0.4"]`), without pytest."""
    try:
        options, extra = run_parser().parse_known_args(argv)
    except argparse.ArgumentError as error:
        raise ConfigError(str(error)) from None
    if extra:
        raise ConfigError(f"unknown options: {' '.join(extra)}")
    return RunConfig.from_options(options)
