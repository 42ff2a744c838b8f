"""The error explorer (`tagger_eval.reports.explorer`, its HTML and its terminal lines) and the chart fixes, on
documents of real runs over a copy of the demo posts: galleries in score order, tags marked as the document counts
them, thumbnails, Danbooru links, hostile names escaped, and a report that degrades when the dataset is gone."""

from __future__ import annotations

import base64
import io
import json
import shutil
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger_eval.config import parse_run_config
from tagger_eval.data.dataset import Dataset
from tagger_eval.records import PostResult, document_order
from tagger_eval.reports import explorer_html
from tagger_eval.reports.chart_data import histogram_bins, histogram_counts, runtime_series, score_histograms
from tagger_eval.reports.charts import runtime_figure, scores_figure
from tagger_eval.reports.explorer import (
    _hits,
    explore,
    explorer_lines,
    locate_dataset,
    post_url_base,
)
from tagger_eval.reports.html_report import report_from_file, write_report
from tagger_eval.reports.results import save
from tagger_eval.run.evaluation import DEFAULT_DATASET, Evaluation
from tagger_eval.run.outcome import CollectedRun, finish_run
from tagger_eval.taggers import Sample, TaggerEntry
from tagger_eval.taggers.control import ControlTagger
from tagger_eval.taggers.registry import registered
from tagger_eval.tags import GENERAL, RATING, is_rating

POSTS = 12
WORST, BEST = 6, 3  # the page's defaults
HOSTILE_TRUTH = "<script>alert(1)</script>"  # a truth tag of post 1 that every demo tagger misses
HOSTILE_WRONG = "<img/src=x/onerror=alert(2)>&amp;'\""  # a tag the sloppy tagger predicts on every post
DEMO_TAGGERS = "control,demo-pixel,demo-lowres,demo-histogram,sloppy"


class SloppyTagger(ControlTagger):
    """The truth with every third tag given 0.2 (missed) and a hostile wrong tag at 0.9: known errors, probabilities."""

    name = "sloppy"
    default_score_floor = -1000.0

    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        outputs = []
        for sample in samples:
            tags = sorted(tag for tag in sample.post.tags if not is_rating(tag))
            probabilities = {tag: 0.2 if index % 3 == 0 else 0.95 for index, tag in enumerate(tags)}
            probabilities.update({tag: 1.0 for tag in sample.post.tags if is_rating(tag)})
            probabilities[HOSTILE_WRONG] = 0.9
            outputs.append(probabilities)
        return outputs


@contextmanager
def sloppy_registered() -> Iterator[None]:
    with registered(TaggerEntry("sloppy", "a test tagger with known errors", lambda _a, _o: SloppyTagger())):
        yield


def make_subset(directory: Path, posts: int = POSTS, metadata: dict[str, str] | None = None) -> Path:
    """The first `posts` demo posts, rows and images, in a fresh data.db; post 1 gains a hostile truth tag."""
    (directory / "images").mkdir(parents=True)
    db_path = directory / "data.db"
    shutil.copyfile(DEFAULT_DATASET, db_path)
    with sqlite3.connect(db_path) as connection:
        connection.execute("DELETE FROM posts WHERE id > ?", (posts,))
        connection.execute("UPDATE posts SET tag_string_general = tag_string_general || ' ' || ? WHERE id = 1",
                           (HOSTILE_TRUTH,))
        connection.executemany("INSERT OR REPLACE INTO metadata (key, value) VALUES (?, ?)",
                               (metadata or {}).items())
        for (relative,) in connection.execute("SELECT image_path FROM posts"):
            shutil.copyfile(DEFAULT_DATASET.parent / relative, directory / relative)
    connection.close()
    return db_path


def run_document(dataset: Path, taggers: str = DEMO_TAGGERS, *options: str) -> tuple[dict, list[PostResult]]:
    """A real run through the library (the plugin's path from the results to the document), returned as loaded."""
    with sloppy_registered():
        evaluation = Evaluation(parse_run_config([f"--tagger={taggers}", f"--dataset={dataset}",
                                                  "--no-tagger-results", *options]))
        try:
            collected = CollectedRun()
            for spec in evaluation.specs:
                run = evaluation.load(spec)
                try:
                    collected.results += [run.evaluate(evaluation.dataset, post)
                                          for post in evaluation.dataset.post_ids()]
                    collected.identities[run.label] = run.tagger.identity()
                finally:
                    run.close()
            document = finish_run(evaluation, collected, None).document
        finally:
            evaluation.close()
    return json.loads(json.dumps(document)), collected.results


# A small DOM, parsed strictly (every element closed in order), to check the page's structure.

VOID = frozenset({"meta", "img", "br", "link", "hr", "input"})


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list[Node] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # own and descendants' text, in order

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def find(self, tag: str | None = None, css: str | None = None, **attrs: str) -> list[Node]:
        found = []
        for child in self.children:
            if ((tag is None or child.tag == tag) and (css is None or css in child.classes)
                    and all(child.attrs.get(key.replace("_", "-")) == value for key, value in attrs.items())):
                found.append(child)
            found += child.find(tag, css, **attrs)
        return found


class Dom(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]
        self.feed(text)
        self.close()
        assert self.stack == [self.root], f"unclosed elements: {[node.tag for node in self.stack[1:]]}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert tag not in VOID, f"</{tag}>"
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        for node in self.stack:
            node.texts.append(data)


def page_of(written: list[Path]) -> tuple[str, Node]:
    text = written[-1].read_text(encoding="utf-8")
    return text, Dom(text).root


def sections(root: Node) -> dict[str, Node]:
    return {str(node.attrs["data-tagger"]): node for node in root.find("section", "tagger")}


def scored_entries(document: dict, label: str) -> dict[int, dict]:
    return {int(post): entry for post, entry in document["taggers"][label]["posts"].items()
            if entry["status"] == "scored"}


def tag_texts(card: Node, kind: str) -> list[str]:
    return [node.text for node in card.find("li", kind)]


# Fixtures: one real run of four demo taggers and the sloppy one, with metrics; and one "from Danbooru".


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[PostResult], Path]:
    dataset = make_subset(tmp_path_factory.mktemp("demo"))
    document, results = run_document(dataset, DEMO_TAGGERS, "--tagger-metrics=full")
    return document, results, dataset


@pytest.fixture(scope="module")
def demo_page(demo: tuple[dict, list[PostResult], Path], tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[str, Node, list[Path]]:
    written = write_report(demo[0], tmp_path_factory.mktemp("report") / "out")
    return (*page_of(written), written)


@pytest.fixture(scope="module")
def danbooru(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Node]:
    params = json.dumps({"base_url": "https://danbooru.donmai.us", "page_skip": 150, "tags": "", "extensions": []})
    dataset = make_subset(tmp_path_factory.mktemp("danbooru"), metadata={"source": "danbooru",
                                                                         "download_params": params})
    document, _ = run_document(dataset, "demo-pixel,demo-histogram")
    _, root = page_of(write_report(document, tmp_path_factory.mktemp("danbooru-report")))
    return document, root


# The galleries


def test_each_tagger_with_errors_shows_its_worst_posts_in_score_order(demo, demo_page) -> None:
    document = demo[0]
    _, root, _ = demo_page
    by_tagger = sections(root)
    assert list(by_tagger) == document_order(document)
    for label in ("demo-pixel", "demo-lowres", "demo-histogram", "sloppy"):
        entries = scored_entries(document, label)
        (gallery,) = by_tagger[label].find("ol", "worst")
        cards = gallery.find("li", "post")
        expected = sorted(entries, key=lambda post: (entries[post]["score"], post))[:WORST]
        assert [int(str(card.attrs["data-post"])) for card in cards] == expected
        scores = [float(str(card.attrs["data-score"])) for card in cards]
        assert scores == sorted(scores) and len(cards) == WORST
        (best,) = by_tagger[label].find("ol", "best")
        best_posts = [int(str(card.attrs["data-post"])) for card in best.find("li", "post")]
        assert best_posts == [post for post in sorted(entries, key=lambda post: (-entries[post]["score"], post))
                              [:BEST] if post not in expected]
    assert not by_tagger["control"].find("ol")  # no error to show
    assert "No error" in by_tagger["control"].text


def test_every_tag_is_marked_hit_missed_or_wrong_as_the_document_counts_it(demo, demo_page) -> None:
    document = demo[0]
    _, root, _ = demo_page
    checked = 0
    for label, section in sections(root).items():
        entries = scored_entries(document, label)
        for card in section.find("li", "post"):
            entry = entries[int(str(card.attrs["data-post"]))]
            assert {cls for tag in card.find("ul", "tags")[0].children for cls in tag.classes} <= \
                {"hit", "missed", "wrong"}
            assert sorted(tag_texts(card, "missed")) == sorted(entry["missed_tags"])
            assert sorted(tag_texts(card, "wrong")) == sorted(entry["wrong_tags"])
            assert len(tag_texts(card, "hit")) == entry["correct"]  # the hits reconstructed from the data.db
            checked += 1
    assert checked == len(root.find("li", "post")) >= 4 * WORST


def test_thumbnails_decode_as_small_copies_of_the_posts_images(demo, demo_page) -> None:
    dataset = demo[2]
    _, root, _ = demo_page
    images = [node for node in root.find("img", "thumb")]
    assert images
    for image in images:
        src = str(image.attrs["src"])
        assert src.startswith("data:image/jpeg;base64,")
        post = int(str(image.attrs["alt"]).removeprefix("post "))
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= explorer_html.THUMBNAIL_SIDE
            assert thumb.size == (int(str(image.attrs["width"])), int(str(image.attrs["height"])))
            pixels = np.asarray(thumb.convert("RGB"), dtype=float)
        with Image.open(dataset.parent / "images" / f"{post:04d}.png") as original:
            expected = np.asarray(original.convert("RGB").resize(thumb.size, Image.Resampling.BOX), dtype=float)
        assert np.abs(pixels - expected).mean() < 12  # the post's own picture, not another's


def test_the_synthetic_demo_has_no_links_and_a_danbooru_dataset_links_every_post(demo_page, danbooru) -> None:
    _, root, _ = demo_page
    assert not [node for node in root.find("a") if str(node.attrs.get("href", "")).startswith("http")]
    assert "does not come from Danbooru" in root.text
    _, danbooru_root = danbooru
    cards = danbooru_root.find("li", "post") + danbooru_root.find("div", "pair-row")
    assert cards
    for card in cards:
        post = card.attrs["data-post"]
        links = {node.attrs["href"] for node in card.find("a")}
        assert links == {f"https://danbooru.donmai.us/posts/{post}"}
    assert "Posts link to their Danbooru page" in danbooru_root.text


@pytest.mark.parametrize(("metadata", "expected"), [
    ({"source": "synthetic: tagger_eval.data.demo_dataset"}, None),
    ({"source": "danbooru"}, "https://danbooru.donmai.us"),
    ({"source": "danbooru", "download_params": json.dumps({"base_url": "https://safebooru.donmai.us/"})},
     "https://safebooru.donmai.us"),
    ({"source": "danbooru", "download_params": json.dumps({"base_url": "javascript:alert(1)"})}, None),
    ({"source": "danbooru", "download_params": json.dumps({"base_url": "https://user:pw@x.test"})}, None),
    ({"source": "danbooru", "download_params": "not json"}, "https://danbooru.donmai.us"),
])
def test_links_go_to_the_server_the_posts_came_from(metadata: dict[str, str], expected: str | None) -> None:
    assert post_url_base(metadata) == expected


def test_hostile_tag_names_are_escaped(demo, demo_page) -> None:
    text, root, _ = demo_page
    assert HOSTILE_TRUTH not in text and "<img/src" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert not root.find("script")
    assert all("thumb" in node.classes or str(node.attrs["src"]).startswith("data:image/png;base64,")
               for node in root.find("img"))
    sloppy = sections(root)["sloppy"]
    assert all(HOSTILE_WRONG in tag_texts(card, "wrong") for card in sloppy.find("li", "post"))
    assert HOSTILE_TRUTH in [node.text for node in root.find("li", "missed")]


def test_tag_tables_count_missed_and_wrong_tags_per_category(demo, demo_page) -> None:
    document, _, dataset = demo
    _, root, _ = demo_page
    entries = scored_entries(document, "demo-histogram")
    missed = Counter(tag for entry in entries.values() for tag in entry["missed_tags"])
    wrong = Counter(tag for entry in entries.values() for tag in entry["wrong_tags"])
    section = sections(root)["demo-histogram"]
    (missed_table,) = section.find("table", "missed")
    (wrong_table,) = section.find("table", "wrong")
    with sqlite3.connect(dataset) as connection:
        general = {tag for (row,) in connection.execute("SELECT tag_string_general FROM posts") for tag in row.split()}
    connection.close()
    for table, counter in ((missed_table, missed), (wrong_table, wrong)):
        rows = [[cell.text for cell in row.find("td")] for row in table.find("tbody")[0].find("tr")]
        assert rows
        categories = [row[0] for row in rows]
        assert categories == sorted(categories, key=["general", "character", "copyright", "artist", "meta",
                                                     "rating", "unknown"].index)
        for category, tag, posts, share, *rate in rows:
            assert int(posts) == counter[tag]
            assert share == f"{counter[tag] / len(entries):.1%}"
            assert (category == "general") == (tag in general)
            if rate:  # of the posts whose truth has the tag
                with_tag = sum(tag in truth_of(dataset, post) for post in entries)
                assert rate[0].endswith(f"of {with_tag}")
        per_category = Counter(categories)
        assert max(per_category.values()) <= 5


def truth_of(dataset: Path, post: int) -> set[str]:
    with Dataset(dataset) as data:
        return set(data.get(post).tags)


def test_side_by_side_shows_the_posts_where_two_taggers_differ_most(demo, demo_page) -> None:
    document = demo[0]
    _, root, _ = demo_page
    pairs = root.find("section", "pair")
    imperfect = [label for label in document_order(document) if label != "control"][:3]
    assert [node.find("h3")[0].text for node in pairs] == [f"{a} and {b}" for i, a in enumerate(imperfect)
                                                          for b in imperfect[i + 1:]]
    assert "left out, no error on any post: control" in root.text
    first, second = imperfect[:2]
    one, two = scored_entries(document, first), scored_entries(document, second)
    rows = pairs[0].find("div", "pair-row")
    posts = [int(str(row.attrs["data-post"])) for row in rows]
    differences = {post: abs(one[post]["score"] - two[post]["score"]) for post in one.keys() & two.keys()}
    assert posts == sorted((post for post in differences if differences[post]),
                           key=lambda post: (-differences[post], post))[:WORST]


# What the document has, and what it lacks


def test_metrics_tables_show_the_full_metrics(demo, demo_page) -> None:
    document = demo[0]
    _, root, _ = demo_page
    tables = [table for table in root.find("table") if "Per category" in "".join(c.text for c in table.find("caption"))]
    (table,) = tables
    rows = {(row.find("td")[0].text, row.find("td")[1].text): [cell.text for cell in row.find("td")]
            for row in table.find("tbody")[0].find("tr")}
    micro = document["taggers"]["demo-pixel"]["metrics"]["general"]["micro"]
    assert rows[("demo-pixel", "general")][2:5] == [f"{micro['pr_threshold']:.3f}", f"{micro['precision']:.3f}",
                                                     f"{micro['f1']:.3f}"]
    best = document["taggers"]["sloppy"]["metrics"]["best_score_threshold"]
    assert f"{best['threshold']:.3f}" in root.text
    assert "soft score" in root.text


def test_a_document_without_metrics_or_probabilities_says_so(tmp_path: Path) -> None:
    dataset = make_subset(tmp_path / "data", posts=4)
    document, _ = run_document(dataset, "demo-pixel")
    text, root = page_of(write_report(document, tmp_path / "out"))
    assert "--tagger-metrics=full" in text and "no metrics beyond the score" in root.text
    assert "keeps no per-post probabilities" in root.text and not root.find("span", "p")


def test_probabilities_follow_the_tags_when_the_document_keeps_them(demo, tmp_path: Path) -> None:
    document, results, _ = demo
    kept = json.loads(json.dumps(document))
    for result in results:  # a document that kept the run's per-post probabilities
        if result.probabilities is not None:
            kept["taggers"][result.tagger]["posts"][str(result.post)]["probabilities"] = result.probabilities
    _, root = page_of(write_report(kept, tmp_path / "out"))
    (card, *_) = sections(root)["sloppy"].find("li", "post")
    wrong = {node.text for node in card.find("li", "wrong")}
    assert f"{HOSTILE_WRONG}0.90" in wrong
    missed = [node for node in card.find("li", "missed") if not is_rating(node.text)]
    assert missed and all(node.find("span", "p")[0].text == "0.20" for node in missed)
    assert "Each tag's probability follows it" in root.text


def test_taggers_not_run_and_without_scored_posts_are_listed(demo, tmp_path: Path) -> None:
    document = json.loads(json.dumps(demo[0]))
    text, root = page_of(write_report(document, tmp_path / "plain"))
    assert "does not record the taggers that were not run" in root.text
    document["not_run"] = {"wd-vit-v3": "not in the Hugging Face cache; run `tagger-eval fetch wd-vit-v3`",
                           "<b>evil</b>": "<i>no</i>"}
    broken = document["taggers"]["demo-pixel"]
    broken["summary"]["posts"] = 0
    for entry in broken["posts"].values():
        entry.update(status="error", reason="tagger demo-pixel did not load: <boom>")
    text, root = page_of(write_report(document, tmp_path / "listed"))
    run = root.find("h2", id="run")[0]
    assert run  # the section's heading
    content = root.text
    assert "wd-vit-v3" in content and "tagger-eval fetch wd-vit-v3" in content
    assert "<b>evil</b>" in content and "<b>" not in text and "<i>" not in text
    assert f"{len(broken['posts'])} error" in content and "did not load: <boom>" in content and "<boom>" not in text
    assert "tag_scope" in content and "metrics" in content  # the run's settings


def test_without_the_dataset_the_report_shows_missed_and_wrong_tags_and_says_why(demo, tmp_path: Path) -> None:
    document = json.loads(json.dumps(demo[0]))
    document["dataset"]["path"] = str(tmp_path / "moved" / "data.db")
    _, root = page_of(write_report(document, tmp_path / "out"))
    assert not root.find("img", "thumb")
    assert not [hit for card in root.find("li", "post") for hit in card.find("li", "hit")]
    assert f"dataset is not at {tmp_path / 'moved' / 'data.db'}" in root.text and "no thumbnails" in root.text
    entries = scored_entries(document, "demo-lowres")
    (card, *_) = sections(root)["demo-lowres"].find("li", "post")
    entry = entries[int(str(card.attrs["data-post"]))]
    assert sorted(tag_texts(card, "missed")) == sorted(entry["missed_tags"])


def test_a_relative_dataset_path_is_found_beside_the_results_file(demo, tmp_path: Path) -> None:
    document = json.loads(json.dumps(demo[0]))
    shutil.copytree(demo[2].parent, tmp_path / "rootdir" / "data")
    document["dataset"]["path"] = "data/data.db"  # as `--dataset=data/data.db` records it
    results = save(document, tmp_path / "rootdir" / ".tagger-eval" / "0001.json")
    _, root = page_of(report_from_file(results, tmp_path / "out"))
    assert root.find("img", "thumb") and root.find("li", "hit")
    assert "truth tags and images from" in root.text.lower()


def test_a_dataset_with_other_truth_is_not_used(demo, tmp_path: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(demo[2].parent, copy)
    with sqlite3.connect(copy / "data.db") as connection:
        connection.execute("UPDATE posts SET tag_string_general = tag_string_general || ' extra' WHERE id = 2")
    connection.close()
    view, note = locate_dataset(demo[0], copy / "data.db")
    assert view is None and "holds other ground truth" in note


def test_a_missing_or_altered_image_gets_a_placeholder(demo, tmp_path: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(demo[2].parent, copy)
    document = json.loads(json.dumps(demo[0]))
    worst = sorted(scored_entries(document, "demo-histogram").items(), key=lambda item: (item[1]["score"], item[0]))
    (copy / "images" / f"{worst[0][0]:04d}.png").unlink()
    (copy / "images" / f"{worst[1][0]:04d}.png").write_bytes(b"\x89PNG not really")
    _, root = page_of(write_report(document, tmp_path / "out", dataset=copy / "data.db"))
    cards = {int(str(card.attrs["data-post"])): card for card in sections(root)["demo-histogram"].find("li", "post")}
    assert "no image: image file missing" in cards[worst[0][0]].text
    assert "does not match the post's md5" in cards[worst[1][0]].text
    assert cards[worst[2][0]].find("img", "thumb")


def test_hits_are_exact_under_a_category_scope(tmp_path: Path) -> None:
    dataset = make_subset(tmp_path / "data", posts=6)
    document, _ = run_document(dataset, "demo-lowres", "--tag-scope=general")
    view, _ = locate_dataset(document)
    assert view is not None
    for errors in explore(document, view).taggers:
        for case in errors.worst + errors.best:
            entry = document["taggers"][errors.tagger]["posts"][str(case.post)]
            assert len(case.of_kind("hit")) == entry["correct"] and not case.of_kind("truth")
            assert all(mark.category in (GENERAL, RATING) for mark in case.of_kind("hit", "missed"))


def test_hits_leave_out_the_rating_for_a_tagger_scored_without_one() -> None:
    truth = {"a": GENERAL, "b": GENERAL, "rating:general": RATING}
    assert _hits({"missed_tags": ["b"], "correct": 1}, truth, "all") == ({"a"}, True)  # type: ignore[typeddict-item]
    assert _hits({"missed_tags": ["b"], "correct": 2}, truth, "all") == ({"a", "rating:general"}, True)  # type: ignore[typeddict-item]
    # a vocabulary scope the data.db cannot reproduce: marked as truth, not hits
    assert _hits({"missed_tags": [], "correct": 1}, truth, "vocabulary")[1] is False  # type: ignore[typeddict-item]


def test_the_report_with_thumbnails_is_the_same_bytes_twice(demo, demo_page, tmp_path: Path) -> None:
    again = write_report(demo[0], tmp_path / "again")
    assert [path.read_bytes() for path in again] == [path.read_bytes() for path in demo_page[2]]


# The terminal


def test_explorer_lines_name_each_taggers_worst_posts_and_tags(demo) -> None:
    document = demo[0]
    lines = explorer_lines(document, n=3)
    assert lines[0].startswith("where the taggers go wrong")
    assert "control: no error on 12 posts" in lines
    entries = scored_entries(document, "demo-histogram")
    worst = sorted(entries, key=lambda post: (entries[post]["score"], post))[:3]
    start = lines.index("demo-histogram:")
    assert [line.split()[1] for line in lines[start + 1:start + 4]] == [str(post) for post in worst]
    assert lines[start + 4].startswith("  most missed: ") and lines[start + 5].startswith("  most wrong: ")
    first, second = [label for label in document_order(document) if label != "control"][:2]
    assert any(line.startswith(f"{first} vs {second}, largest score differences") for line in lines)
    sloppy = lines[lines.index("sloppy:") + 5]
    assert sloppy == f"  most wrong: {HOSTILE_WRONG} 12 (100%)"


def test_explorer_lines_escape_control_characters_and_skip_empty_documents(demo) -> None:
    document = json.loads(json.dumps(demo[0]))
    entry = next(iter(scored_entries(document, "demo-lowres").values()))
    entry["wrong_tags"] = ["\x1b[31mred\x1b[0m"]
    entry["score"] = -5.0
    text = "\n".join(explorer_lines(document))
    assert "\x1b" not in text and "\\x1b[31mred" in text
    for tagger in document["taggers"].values():
        for post in tagger["posts"].values():
            post["status"] = "skipped"
    assert explorer_lines(document) == []


# The chart fixes


def test_the_nonnegative_chart_is_drawn_only_when_a_post_scored_below_0(demo, demo_page, tmp_path: Path) -> None:
    document = demo[0]
    names = [path.name for path in demo_page[2]]
    negative = any(score < 0 for label in document["taggers"] for score in
                   (entry["score"] for entry in scored_entries(document, label).values()))
    assert ("scores-nonnegative.png" in names) == negative
    positive = json.loads(json.dumps(document))
    for label in positive["taggers"]:
        for entry in scored_entries(positive, label).values():
            entry["score"] = max(entry["score"], 0.0)
    written = write_report(positive, tmp_path / "out")
    assert "scores-nonnegative.png" not in [path.name for path in written]
    assert "no post scored below 0" in Dom(written[-1].read_text(encoding="utf-8")).root.text


def test_a_perfect_score_falls_in_the_bin_that_ends_at_1(demo) -> None:
    series = score_histograms(demo[0])
    assert series.bins[-1] == 1.0 and series.bins[-2] == pytest.approx(0.95)
    control = next(h for h in series.histograms if h.tagger == "control")
    assert control.counts[-1] == POSTS
    assert histogram_counts([1.0, 0.97], histogram_bins([1.0, 0.97])) == [2]


def test_bars_of_a_few_posts_carry_their_count() -> None:
    scores = [0.9] * 90 + [0.1]
    document = {"taggers": {"t": {"posts": {str(i): {"status": "scored", "score": s} for i, s in enumerate(scores)},
                                  "summary": {"mean_score": 0.8}}}}
    figure = scores_figure(document)  # type: ignore[arg-type]
    (axes,) = figure.axes
    small = [text for text in axes.texts if text.get_gid() == "small-count"]
    assert [text.get_text() for text in small] == ["1"]
    assert small[0].get_position()[0] == pytest.approx(0.125)  # the middle of [0.1, 0.15)


def test_the_runtime_chart_leaves_out_taggers_under_a_tenth_of_a_millisecond(demo) -> None:
    document = demo[0]
    series = runtime_series(document)
    fast = [label for label in document_order(document)
            if document["taggers"][label]["summary"]["mean_runtime_s"] * 1000 < 0.1]
    assert "control" in fast and "demo-histogram" not in fast  # the control tagger returns the truth: microseconds
    assert [point.tagger for point in series.too_fast] == fast
    assert not {point.tagger for point in series.points} & set(fast)
    note = series.fast_note()
    assert note is not None and note.startswith("left out (under 0.1 ms per image")
    assert "control (" in runtime_figure(document).get_suptitle()


# A real browser, where one is installed


def test_the_page_renders_in_a_headless_browser(demo_page, tmp_path: Path) -> None:
    browser = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(name)), None)
    if browser is None:
        pytest.skip("no chromium or chrome installed")
    page = demo_page[2][-1]
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = Dom(dom.stdout).root
    assert len(rendered.find("li", "post")) == len(Dom(page.read_text(encoding="utf-8")).root.find("li", "post"))
    assert not rendered.find("script")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,6000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    with Image.open(shot) as image:
        grey = np.asarray(image.convert("L"))
    assert (grey < 200).mean() > 0.02  # text, charts and thumbnails were drawn


def test_a_run_records_the_taggers_it_did_not_run_and_the_report_lists_them(
        pytester: pytest.Pytester, demo_subset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--tagger=all` with nothing fetched: the results keep why each published model did not run."""
    from huggingface_hub import constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    results = tmp_path / "results.json"
    run = pytester.runpytest("--tagger=all", f"--dataset={demo_subset(posts=2)}", f"--tagger-results={results}",
                             "--benchmark-disable", "-p", "no:cacheprovider")
    assert run.ret == pytest.ExitCode.OK
    not_run = json.loads(results.read_text(encoding="utf-8"))["not_run"]
    assert "tagger-eval fetch wd-vit-v3" in not_run["wd-vit-v3"] and "camie-v2" in not_run
    _, root = page_of(report_from_file(results, tmp_path / "report"))
    assert "tagger-eval fetch wd-vit-v3" in root.text and "does not record the taggers" not in root.text
