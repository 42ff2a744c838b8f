"""The error explorer's data: where each tagger goes wrong, from a results document and, when found, its dataset.

Independent of HTML: the report's page (`explorer_html`) and the terminal (`explorer_lines`) both read it.

- `locate_dataset(document)` opens the data.db the document names (checked against its `content_sha256`) and reads
  each post's truth with categories and its image; without it the explorer still works from the document alone.
- `explore(document, view)` gives per tagger its worst and best posts (`PostCase`: every tag marked hit, missed or
  wrong, with its probability when the document kept one), its most often missed and most often wrong tags per
  category, and for pairs of taggers the posts where their scores differ most.

The results document stores per post only the missed and the wrong tags (and the counts). A post entry that has
`truth_tags` gives the hits exactly (truth minus missed). Otherwise the hits are the post's truth in the data.db
(with the implications the run added, under the run's tag-scope categories) minus the missed tags, marked `hit`
when their number equals the post's `correct` count (a tagger that outputs no rating is scored without the
post's rating, which is then left out), else `truth`: in the dataset's truth and not missed, but the run's
`vocabulary` or `shared` scope may not have counted every one of them.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tagger_eval.data.dataset import Dataset, DatasetError, InvalidPost
from tagger_eval.records import PostEntry, PostStatus, ResultsDocument, TaggerResults, document_order
from tagger_eval.scoring.scope import SCOPE_CATEGORIES, TagScope, scoped_tags
from tagger_eval.tags import (
    ARTIST,
    CATEGORY_NAMES,
    CHARACTER,
    COPYRIGHT,
    GENERAL,
    META,
    RATING,
    YEAR,
    is_rating,
    printable,
)

HIT, TRUTH, MISSED, WRONG = "hit", "truth", "missed", "wrong"
KINDS = (HIT, TRUTH, MISSED, WRONG)
CATEGORY_ORDER = (GENERAL, CHARACTER, COPYRIGHT, ARTIST, META, RATING, YEAR)
DANBOORU = "https://danbooru.donmai.us"
TERMINAL_TAGS = 8  # tags of one kind listed per post in the terminal before "+N more"


def category_name(category: int | None) -> str:
    return CATEGORY_NAMES.get(category, "year" if category == YEAR else "unknown") if category is not None \
        else "unknown"


def _category_key(category: int | None) -> int:
    return CATEGORY_ORDER.index(category) if category in CATEGORY_ORDER else len(CATEGORY_ORDER)


# The dataset


@dataclass(frozen=True)
class PostImage:
    path: Path
    md5: str


@dataclass
class DatasetView:
    """What the explorer reads from the evaluated data.db: every post's truth (tag -> category), each known tag's
    category, the image files, and which posts have each tag (with the run's implications added)."""

    path: Path
    truth: dict[int, dict[str, int]] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)
    images: dict[int, PostImage] = field(default_factory=dict)
    posts_with: dict[str, set[int]] = field(default_factory=dict)

    @classmethod
    def read(cls, dataset: Dataset, expand_implications: bool = False) -> DatasetView:
        view = cls(Path(dataset.path), categories=dataset.tag_categories())
        implications = dataset.tag_implications() if expand_implications else {}
        for post_id in dataset.post_ids():
            try:
                post = dataset.get(post_id)
            except InvalidPost:  # the run skipped it too
                continue
            tags = dict(post.tags)
            for tag in post.tags:
                for implied in implications.get(tag, ()):
                    tags.setdefault(implied, view.categories.get(implied, GENERAL))
            view.truth[post_id] = tags
            view.images[post_id] = PostImage(post.image_path, post.md5)
            for tag, category in tags.items():
                view.categories.setdefault(tag, category)
                view.posts_with.setdefault(tag, set()).add(post_id)
        return view


def locate_dataset(document: ResultsDocument, path: Path | None = None,
                   near: Sequence[Path] = ()) -> tuple[DatasetView | None, str]:
    """The evaluated dataset, read, and a sentence saying where it came from or why it is missing.

    Tried in order: `path` when given, else the document's `dataset.path` as it is (relative to the working
    directory) and, when relative, under each folder of `near` (the results file's folder and its parent). A
    data.db whose `content_sha256` differs from the document's is not the ground truth that was evaluated."""
    recorded = Path(document["dataset"]["path"])
    candidates = [path] if path is not None else [recorded, *(Path(base) / recorded for base in near
                                                              if not recorded.is_absolute())]
    problems = []
    for candidate in dict.fromkeys(candidates):
        if not (candidate.is_file() or (candidate / "data.db").is_file()):
            continue
        try:
            with Dataset(candidate) as dataset:
                if dataset.content_hash() != document["dataset"]["content_sha256"]:
                    problems.append(f"{candidate} holds other ground truth (its content_sha256 differs)")
                    continue
                view = DatasetView.read(dataset, bool(document["settings"].get("expand_implications")))
        except (DatasetError, OSError, sqlite3.Error) as error:
            problems.append(f"{candidate} cannot be read ({error})")
            continue
        return view, f"truth tags and images from {view.path}"
    where = "; ".join(problems) if problems else f"the dataset is not at {candidates[0]}"
    return None, (f"{where}: no thumbnails, and only the missed and wrong tags are shown (the results file keeps "
                  "no hits)")


def post_url_base(metadata: Mapping[str, Any]) -> str | None:
    """`https://danbooru.donmai.us` (or the `--base-url` the download recorded) when the dataset's posts are
    Danbooru posts, whose ids link to `BASE/posts/ID`; None for any other dataset (the synthetic demo)."""
    if metadata.get("source") != "danbooru":
        return None
    try:
        recorded = json.loads(str(metadata.get("download_params") or "{}")).get("base_url", DANBOORU)
    except (ValueError, AttributeError):
        recorded = DANBOORU
    parts = urlsplit(str(recorded))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    return str(recorded).rstrip("/")


# Posts


@dataclass(frozen=True)
class TagMark:
    tag: str
    kind: str  # HIT, TRUTH, MISSED or WRONG
    category: int | None
    probability: float | None = None


@dataclass(frozen=True)
class PostCase:
    """One scored post of one tagger, every tag marked."""

    tagger: str
    post: int
    score: float
    tags: tuple[TagMark, ...]

    def of_kind(self, *kinds: str) -> list[TagMark]:
        return [mark for mark in self.tags if mark.kind in kinds]


def _hits(entry: PostEntry, truth: Mapping[str, int], scope: str | None) -> tuple[set[str], bool]:
    """The post's truth under the run's scope categories minus its missed tags, and whether that is exactly what
    was scored (the count of hits equals `correct`)."""
    tags = set(truth)
    if scope in SCOPE_CATEGORIES and SCOPE_CATEGORIES[TagScope(scope)] is not None:
        tags = scoped_tags(truth, truth, TagScope(scope), None)
    hits = tags - set(entry.get("missed_tags", []))
    correct = dict(entry).get("correct")  # a PostScore count beside the PostEntry fields
    if correct is not None and len(hits) != correct:
        without_rating = {tag for tag in hits if not is_rating(tag)}
        if len(without_rating) == correct:
            hits = without_rating
    return hits, correct is None or len(hits) == correct


def post_case(label: str, post_id: int, entry: PostEntry, view: DatasetView | None,
              scope: str | None = None) -> PostCase:
    raw: dict[str, Any] = dict(entry)
    probabilities = raw["probabilities"] if isinstance(raw.get("probabilities"), dict) else {}
    kept_categories = raw["categories"] if isinstance(raw.get("categories"), dict) else {}
    truth = view.truth.get(post_id, {}) if view is not None else {}
    hits: Iterable[str] = ()
    hit_kind = HIT
    if isinstance(raw.get("truth_tags"), list):
        hits = set(raw["truth_tags"]) - set(entry.get("missed_tags", []))
    elif truth:
        hits, exact = _hits(entry, truth, scope)
        hit_kind = HIT if exact else TRUTH

    def mark(tag: str, kind: str) -> TagMark:
        category = RATING if is_rating(tag) else truth.get(tag, kept_categories.get(tag))
        if category is None and view is not None:
            category = view.categories.get(tag)
        probability = probabilities.get(tag)
        return TagMark(tag, kind, category if isinstance(category, int) else None,
                       float(probability) if isinstance(probability, int | float) else None)

    groups = ((hits, hit_kind), (entry.get("missed_tags", []), MISSED), (entry.get("wrong_tags", []), WRONG))
    marks = [mark(tag, kind) for tags, kind in groups for tag in tags]
    marks.sort(key=lambda m: (KINDS.index(m.kind), _category_key(m.category), m.tag))
    return PostCase(label, post_id, float(entry["score"]), tuple(marks))


# Taggers


@dataclass(frozen=True)
class TagCount:
    tag: str
    category: int | None
    posts: int  # scored posts where the tag was missed (or predicted wrongly)
    share: float  # of the tagger's scored posts
    with_tag: int | None = None  # missed tags: the scored posts whose truth has the tag (None: truth unknown)

    @property
    def miss_rate(self) -> float | None:
        return self.posts / self.with_tag if self.with_tag else None


@dataclass(frozen=True)
class TaggerErrors:
    tagger: str
    scored: int
    worst: list[PostCase]  # lowest score first (ties by post id)
    best: list[PostCase]  # highest score first, none of the worst
    missed: list[TagCount]  # per category (in `CATEGORY_ORDER`) its most often missed tags
    wrong: list[TagCount]

    @property
    def perfect(self) -> bool:
        """Nothing missed and nothing wrong on any scored post (the control tagger)."""
        return not self.missed and not self.wrong


def _scored(tagger: TaggerResults) -> dict[int, PostEntry]:
    return {int(post): entry for post, entry in tagger["posts"].items() if entry["status"] == PostStatus.SCORED}


def _tag_counts(counter: Counter[str], scored: Mapping[int, PostEntry], view: DatasetView | None, top: int,
                missed: bool) -> list[TagCount]:
    def category(tag: str) -> int | None:
        return RATING if is_rating(tag) else view.categories.get(tag) if view is not None else None

    by_category: dict[int | None, list[tuple[int, str]]] = {}
    for tag, count in counter.items():
        by_category.setdefault(category(tag), []).append((-count, tag))
    counts = []
    for group in sorted(by_category, key=_category_key):
        for negative, tag in sorted(by_category[group])[:top]:
            with_tag = len(view.posts_with.get(tag, set()) & scored.keys()) if missed and view is not None else None
            counts.append(TagCount(tag, group, -negative, -negative / len(scored), with_tag))
    return counts


def tagger_errors(document: ResultsDocument, label: str, view: DatasetView | None, worst: int = 6, best: int = 3,
                  top_tags: int = 5) -> TaggerErrors:
    scored = _scored(document["taggers"][label])
    scope = document["settings"].get("tag_scope")
    order = sorted(scored, key=lambda post: (scored[post]["score"], post))
    worst_ids = order[:worst]
    best_ids = [post for post in sorted(scored, key=lambda post: (-scored[post]["score"], post))[:best]
                if post not in worst_ids]
    missed = Counter(tag for entry in scored.values() for tag in set(entry.get("missed_tags", [])))
    wrong = Counter(tag for entry in scored.values() for tag in set(entry.get("wrong_tags", [])))
    return TaggerErrors(
        tagger=label, scored=len(scored),
        worst=[post_case(label, post, scored[post], view, scope) for post in worst_ids],
        best=[post_case(label, post, scored[post], view, scope) for post in best_ids],
        missed=_tag_counts(missed, scored, view, top_tags, missed=True),
        wrong=_tag_counts(wrong, scored, view, top_tags, missed=False),
    )


# Pairs


@dataclass(frozen=True)
class PairComparison:
    taggers: tuple[str, str]  # the better by mean score first
    common: int  # posts both scored
    posts: list[tuple[PostCase, PostCase]]  # largest score difference first (ties by post id); no equal scores


def compare_pair(document: ResultsDocument, first: str, second: str, view: DatasetView | None,
                 posts: int = 6) -> PairComparison:
    one, two = _scored(document["taggers"][first]), _scored(document["taggers"][second])
    common = one.keys() & two.keys()
    differing = sorted((post for post in common if one[post]["score"] != two[post]["score"]),
                       key=lambda post: (-abs(one[post]["score"] - two[post]["score"]), post))[:posts]
    scope = document["settings"].get("tag_scope")
    return PairComparison((first, second), len(common),
                          [(post_case(first, post, one[post], view, scope), post_case(second, post, two[post], view,
                                                                                       scope))
                           for post in differing])


# The whole explorer


@dataclass(frozen=True)
class Explorer:
    taggers: list[TaggerErrors]  # leaderboard order; taggers with scored posts only
    pairs: list[PairComparison]
    pair_note: str  # which taggers the pairs are made of, and why


def explore(document: ResultsDocument, view: DatasetView | None = None, worst: int = 6, best: int = 3,
            top_tags: int = 5, pair_taggers: int = 3) -> Explorer:
    """Every tagger with a scored post; pairs among the `pair_taggers` best taggers that make errors (a perfect
    tagger's differences from another are that one's own worst posts)."""
    labels = [label for label in document_order(document) if _scored(document["taggers"][label])]
    taggers = [tagger_errors(document, label, view, worst, best, top_tags) for label in labels]
    imperfect = [errors.tagger for errors in taggers if not errors.perfect][:pair_taggers]
    pairs = [compare_pair(document, first, second, view, worst) for first, second in combinations(imperfect, 2)]
    perfect = [errors.tagger for errors in taggers if errors.perfect]
    note = (f"each pair of the {len(imperfect)} best taggers by mean score that make errors" if len(imperfect) > 1
            else "fewer than two taggers make errors: nothing to compare")
    if perfect:
        note += f" (left out, no error on any post: {', '.join(perfect)})"
    return Explorer(taggers, pairs, note)


def _tag_list(marks: Sequence[TagMark]) -> str:
    shown = [printable(mark.tag) + (f" {mark.probability:.2f}" if mark.probability is not None else "")
             for mark in marks[:TERMINAL_TAGS]]
    more = f" +{len(marks) - TERMINAL_TAGS} more" if len(marks) > TERMINAL_TAGS else ""
    return ", ".join(shown) + more if shown else "-"


def _top(counts: Sequence[TagCount], n: int) -> str:
    ranked = sorted(counts, key=lambda count: (-count.posts, count.tag))[:n]
    return ", ".join(f"{printable(count.tag)} {count.posts} ({count.share:.0%})" for count in ranked) or "-"


def explorer_lines(document: ResultsDocument, n: int = 3) -> list[str]:
    """The explorer for the terminal, from the document alone (no dataset read): per tagger its `n` worst posts
    with their missed and wrong tags and its `n` most often missed and wrong tags (posts, share of its scored
    posts); then the posts where the two best taggers that make errors differ most. Names pass `printable`."""
    explorer = explore(document, None, worst=n, best=0, top_tags=n, pair_taggers=2)
    if not explorer.taggers:
        return []
    lines = [f"where the taggers go wrong (the {n} worst posts of each; tags most often missed and wrong, in posts "
             "and share of the scored posts):"]
    for errors in explorer.taggers:
        if errors.perfect:
            lines.append(f"{printable(errors.tagger)}: no error on {errors.scored} posts")
            continue
        lines.append(f"{printable(errors.tagger)}:")
        lines += [f"  post {case.post} scored {case.score:.3f}: missed {_tag_list(case.of_kind(MISSED))}; "
                  f"wrong {_tag_list(case.of_kind(WRONG))}" for case in errors.worst]
        lines += [f"  most missed: {_top(errors.missed, n)}", f"  most wrong: {_top(errors.wrong, n)}"]
    for pair in explorer.pairs:
        first, second = map(printable, pair.taggers)
        posts = ", ".join(f"{one.post} ({one.score:.3f} vs {two.score:.3f})" for one, two in pair.posts) or "none"
        lines.append(f"{first} vs {second}, largest score differences on the {pair.common} posts both scored: {posts}")
    return lines
