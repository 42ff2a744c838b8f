"""`--tagger-metrics=full`, `--tag-scope=shared` and `--expand-implications` through the plugin, every number checked
against an independent computation from the taggers' raw outputs."""

from __future__ import annotations

import sqlite3
import statistics
from pathlib import Path

import numpy as np
import pytest
from builders import WD14_TAGS

from tagger_eval.data import demo_dataset as demo
from tagger_eval.data.dataset import Dataset
from tagger_eval.reports.results import load
from tagger_eval.run.evaluation import DEFAULT_DATASET, PROBABILITY_FLOOR
from tagger_eval.scoring.post_score import score
from tagger_eval.scoring.tag_distance import TagSimilarity, soft_score
from tagger_eval.taggers import Sample, TaggerSpec, create, normalise_prediction, select_tags

metrics_sklearn = pytest.importorskip("sklearn.metrics")
pytestmark = pytest.mark.filterwarnings("ignore::pytest_benchmark.logger.PytestBenchmarkWarning")


@pytest.fixture(scope="module")
def demo_pixel_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Raw outputs of demo-pixel on every demo post, computed without the plugin."""
    tagger = create(TaggerSpec("demo-pixel"))
    with Dataset(DEFAULT_DATASET) as dataset:
        posts = list(dataset)
        outputs = [normalise_prediction(tagger.predict([Sample(post, Dataset.load_image(post))])[0])
                   for post in posts]
    return {"posts": posts, "outputs": outputs}


@pytest.fixture(scope="module")
def metrics_document(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("metrics") / "run.json"
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--tagger=control,demo-pixel",
         "--tagger-metrics=full", f"--tagger-results={out}", "--benchmark-disable", "-q"],
        capture_output=True, text=True, timeout=300, check=False, cwd=out.parent,
    )
    assert completed.returncode == 0, completed.stdout[-2000:]
    return {"document": load(out), "stdout": completed.stdout}


def dense(run: dict) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Label space (truth or kept probabilities), truth matrix and probability matrix, posts x tags.

    Probabilities are kept as float32, as the run's metrics keep them (model outputs are float32 anyway)."""
    tags = sorted({tag for post in run["posts"] for tag in post.tags}
                  | {tag for output in run["outputs"] for tag, p in output.items() if p >= PROBABILITY_FLOOR})
    column = {tag: index for index, tag in enumerate(tags)}
    truth = np.zeros((len(run["posts"]), len(tags)), dtype=bool)
    probabilities = np.zeros(truth.shape)
    for row, (post, output) in enumerate(zip(run["posts"], run["outputs"], strict=True)):
        for tag in post.tags:
            truth[row, column[tag]] = True
        for tag, p in output.items():
            if p >= PROBABILITY_FLOOR:
                probabilities[row, column[tag]] = np.float32(p)
    return tags, truth, probabilities


def test_the_second_table_is_printed(metrics_document: dict) -> None:
    stdout = metrics_document["stdout"]
    assert "tagger metrics (P=R: the threshold where precision equals recall" in stdout
    for category in ("all", "general", "character", "rating"):
        assert any(line.split()[:2] == ["demo-pixel", category] for line in stdout.splitlines())
    assert "demo-pixel: best threshold for the score" in stdout


def test_average_precision_matches_sklearn(metrics_document: dict, demo_pixel_run: dict) -> None:
    metrics = metrics_document["document"]["taggers"]["demo-pixel"]["metrics"]["all"]
    _, truth, probabilities = dense(demo_pixel_run)
    with_positives = truth.any(axis=0)
    per_tag = [metrics_sklearn.average_precision_score(truth[:, j], probabilities[:, j])
               for j in np.flatnonzero(with_positives)]
    assert metrics["average_precision"]["macro"] == pytest.approx(float(np.mean(per_tag)), abs=1e-9)
    assert metrics["average_precision"]["micro"] == pytest.approx(
        metrics_sklearn.average_precision_score(truth.ravel(), probabilities.ravel()), abs=1e-9)


def test_the_breakeven_point_and_its_scores_match_sklearn(metrics_document: dict, demo_pixel_run: dict) -> None:
    micro = metrics_document["document"]["taggers"]["demo-pixel"]["metrics"]["all"]["micro"]
    _, truth, probabilities = dense(demo_pixel_run)
    predicted = (probabilities > micro["pr_threshold"]).ravel()
    expected_truth = truth.ravel()
    assert micro["precision"] == pytest.approx(metrics_sklearn.precision_score(expected_truth, predicted), abs=1e-9)
    assert micro["recall"] == pytest.approx(metrics_sklearn.recall_score(expected_truth, predicted), abs=1e-9)
    assert micro["f1"] == pytest.approx(metrics_sklearn.f1_score(expected_truth, predicted), abs=1e-9)
    assert micro["f2"] == pytest.approx(metrics_sklearn.fbeta_score(expected_truth, predicted, beta=2), abs=1e-9)
    assert micro["mcc"] == pytest.approx(metrics_sklearn.matthews_corrcoef(expected_truth, predicted), abs=1e-9)
    # Precision and recall meet there: no threshold brings them closer.
    gap = abs(micro["precision"] - micro["recall"])
    for other in np.linspace(0.02, 0.98, 97):
        p_other = probabilities.ravel() > other
        assert gap <= abs(metrics_sklearn.precision_score(expected_truth, p_other, zero_division=0)
                          - metrics_sklearn.recall_score(expected_truth, p_other)) + 0.02


def test_the_best_threshold_for_the_score_is_the_best(metrics_document: dict, demo_pixel_run: dict) -> None:
    best = metrics_document["document"]["taggers"]["demo-pixel"]["metrics"]["best_score_threshold"]

    def mean_score(threshold: float) -> float:
        kept = [{tag: float(np.float32(p)) for tag, p in output.items() if p >= PROBABILITY_FLOOR}
                for output in demo_pixel_run["outputs"]]
        return statistics.fmean(score(select_tags(output, threshold), post.truth)
                                for post, output in zip(demo_pixel_run["posts"], kept, strict=True))

    assert best["mean_score"] == pytest.approx(mean_score(best["threshold"]), abs=1e-12)
    assert all(mean_score(t) <= best["mean_score"] + 1e-12 for t in np.linspace(0.0, 0.99, 100))
    run_mean = metrics_document["document"]["taggers"]["demo-pixel"]["summary"]["mean_score"]
    assert best["mean_score"] >= run_mean - 1e-12


def test_the_soft_score_matches_its_formula(metrics_document: dict, demo_pixel_run: dict) -> None:
    soft = metrics_document["document"]["taggers"]["demo-pixel"]["metrics"]["soft_score"]
    with Dataset(DEFAULT_DATASET) as dataset:
        similarity = TagSimilarity.from_dataset(dataset)
    scores = [soft_score(select_tags(output, 0.5), post.truth, similarity)
              for post, output in zip(demo_pixel_run["posts"], demo_pixel_run["outputs"], strict=True)]
    assert soft["mean"] == pytest.approx(statistics.fmean(scores), abs=1e-12)
    seed = metrics_document["document"]["taggers"]["demo-pixel"]["summary"]["mean_score"]
    assert soft["mean"] >= seed
    assert metrics_document["document"]["taggers"]["control"]["metrics"]["soft_score"]["mean"] == 1.0


def test_the_settings_say_what_was_on(metrics_document: dict) -> None:
    assert metrics_document["document"]["settings"] == {"tag_scope": "all", "expand_implications": False,
                                                        "metrics": "full", "soft_score_matching": "max",
                                                        "soft_score_similarity": "cosine"}


def test_shared_scope_keeps_the_tags_every_tagger_can_output(pytester: pytest.Pytester, wd14_v3_dir: Path) -> None:
    out = pytester.path / "run.json"
    result = pytester.runpytest(f"--tagger=demo-pixel,wd14-onnx:{wd14_v3_dir}", "--tag-scope=shared",
                                "--score-floor=-50", "--benchmark-disable", f"--tagger-results={out}")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["tag scope: shared"])
    shared = (set(demo.vocabulary()) & {name if category != 9 else f"rating:{name}" for name, category in WD14_TAGS}) \
        | {"rating:general", "rating:sensitive", "rating:questionable", "rating:explicit"}
    assert "white_background" in shared and "circle" not in shared
    document = load(out)
    with Dataset(DEFAULT_DATASET) as dataset:
        expected = {post.id: len(post.truth & shared) for post in dataset}
    for tagger in document["taggers"].values():
        sizes = {int(post): entry["truth_size"] for post, entry in tagger["posts"].items()
                 if entry["status"] == "scored"}
        # A post whose shared truth is its rating alone is skipped: a rating is not a tag list to score.
        assert sizes == {post: size for post, size in expected.items() if size > 1}


def test_implications_expand_the_truth(pytester: pytest.Pytester, demo_subset) -> None:
    db_path = demo_subset(posts=4)
    with sqlite3.connect(db_path) as connection:
        connection.executemany("INSERT INTO tag_implications VALUES (?, ?, ?)", [
            ("circle", "round_shape", "active"), ("round_shape", "shape", "active"),
            ("square", "shape", "active"), ("triangle", "pointy", "deleted"),
        ])
        connection.execute("INSERT INTO tags (name, category) VALUES ('shape', 0)")
    connection.close()
    out = pytester.path / "run.json"
    result = pytester.runpytest("--tagger=control,demo-pixel", f"--dataset={db_path}", "--expand-implications",
                                "--benchmark-disable", f"--tagger-results={out}")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["tag scope: all; truth expanded with tag implications"])
    document = load(out)
    assert document["settings"]["expand_implications"] is True
    assert document["taggers"]["control"]["summary"]["mean_score"] == 1.0
    with Dataset(db_path) as dataset:
        for post in dataset:
            implied = set()
            if "circle" in post.tags:
                implied |= {"round_shape", "shape"}
            if "square" in post.tags:
                implied.add("shape")
            entry = document["taggers"]["demo-pixel"]["posts"][str(post.id)]
            assert entry["truth_size"] == len(post.truth | implied)
            assert implied <= set(entry["missed_tags"])  # demo-pixel never outputs these names


def test_rare_tags_follow_the_model_tag_list_counts() -> None:
    from tagger_eval.scoring.tagger_metrics import frequency_ranks

    tags = ("long_hair", "smile", "rating:general", "hatsune_miku_(vocaloid)", "unknown_tag")
    counts = {"Long Hair": 500, "smile": 900, "rating:general": 0, "hatsune miku \\(vocaloid\\)": 50,
              "old_smile": 950}
    ranks = frequency_ranks(tags, counts, aliases={"old_smile": "smile"})
    # smile (950 through its alias) > long_hair (500) > hatsune_miku (50) > rating:general (0); unknown last.
    assert ranks.tolist() == [1, 0, 3, 2, 4]
    assert frequency_ranks(tags, None, {}) is None


def test_wd_models_report_their_tag_counts(wd14_v3_dir: Path) -> None:
    from tagger_eval.taggers import TaggerOptions
    from tagger_eval.taggers.wd14 import WD14Tagger

    tagger = WD14Tagger.from_directory(wd14_v3_dir, TaggerOptions())
    assert tagger.tag_counts() == {name: 1000 - index for index, name in enumerate(tagger.tag_names)}


def test_a_metrics_run_ranks_rare_tags_by_the_model_counts(pytester: pytest.Pytester, wd14_v3_dir: Path) -> None:
    from tagger_eval.run import plugin

    captured: dict = {}
    original = plugin.finish_run

    def spy(evaluation, collected, *args, **kwargs):
        captured.update(collected.tag_counts)
        return original(evaluation, collected, *args, **kwargs)

    plugin.finish_run = spy
    try:
        result = pytester.runpytest(f"--tagger=wd14-onnx:{wd14_v3_dir},demo-pixel", "--tagger-metrics=full",
                                    "--score-floor=-50", "--benchmark-disable", "--no-tagger-results")
    finally:
        plugin.finish_run = original
    assert result.ret == pytest.ExitCode.OK
    assert list(captured) == [f"wd14-onnx:{wd14_v3_dir}"]  # demo taggers have no counts
    assert captured[f"wd14-onnx:{wd14_v3_dir}"]["red_theme"] == 996


def test_the_soft_score_options_reach_the_run(pytester: pytest.Pytester, demo_pixel_run: dict) -> None:
    """`--soft-score-matching` and `--soft-score-similarity` change the run's soft score exactly as the formula says."""
    out = pytester.path / "run.json"
    result = pytester.runpytest("--tagger=demo-pixel", "--tagger-metrics=full", "--soft-score-matching=one-to-one",
                                "--soft-score-similarity=jaccard", f"--tagger-results={out}", "--benchmark-disable")
    assert result.ret == pytest.ExitCode.OK
    document = load(out)
    assert document["settings"]["soft_score_matching"] == "one-to-one"
    assert document["settings"]["soft_score_similarity"] == "jaccard"
    with Dataset(DEFAULT_DATASET) as dataset:
        similarity = TagSimilarity.from_dataset(dataset, measure="jaccard")
    pairs = list(zip(demo_pixel_run["posts"], demo_pixel_run["outputs"], strict=True))
    strict = [soft_score(select_tags(output, 0.5), post.truth, similarity, matching="one-to-one")
              for post, output in pairs]
    lenient = [soft_score(select_tags(output, 0.5), post.truth, similarity) for post, output in pairs]
    soft = document["taggers"]["demo-pixel"]["metrics"]["soft_score"]
    assert soft["mean"] == pytest.approx(statistics.fmean(strict), abs=1e-12)
    assert statistics.fmean(strict) <= statistics.fmean(lenient)
