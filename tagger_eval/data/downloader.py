"""`tagger-eval download`: a stratified, resumable Danbooru sample in a data.db.

For each rating the newest `page_skip` pages (of Danbooru's 20 posts) are skipped, because fresh posts are not yet
fully tagged; then posts are taken newest first until `per_rating` usable ones are stored. Each post's image is
written to a temporary file, checked against the post's md5 and renamed into place before its row is committed, in
the same transaction as the rating's search cursor: interrupted at any point, the same command continues where it
stopped, with no duplicate and nothing half-written. Every value of a post that reaches a path, a URL or the
data.db is checked first: a broken or hostile mirror gets its post skipped, never a file written outside the
dataset folder.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tagger_eval import __version__
from tagger_eval.checksums import file_digest
from tagger_eval.data.danbooru import (
    DANBOORU_PAGE_SIZE,
    MAX_LIMIT,
    MAX_NUMERIC_PAGE,
    DanbooruClient,
    DanbooruError,
    origin,
)
from tagger_eval.data.dataset import TAG_COLUMNS, create_schema
from tagger_eval.tags import RATING_LETTERS

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp")
IMAGES_DIR = "images"
PARTIAL_SUFFIX = ".part"
GONE_STATUSES = (403, 404, 410)  # a file the server will not give: skip the post rather than stop
MD5_PATTERN = re.compile(r"[0-9a-f]{32}")
EXTENSION_PATTERN = re.compile(r"[a-z0-9]{1,8}")
RELATION_FIELDS = {"antecedent_name": str, "consequent_name": str, "status": str}


class DownloadError(Exception):
    """The download is refused (an --out that holds another dataset or is no data.db, different parameters): the
    same command would be refused again, unlike a `DanbooruError` that is transient."""


@dataclass(frozen=True)
class DownloadPlan:
    """What to download. Everything but `per_rating` must match when a download is resumed or extended."""

    per_rating: int
    page_skip: int = 150
    ratings: tuple[str, ...] = tuple(RATING_LETTERS)
    tags: str = ""
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    limit: int = MAX_LIMIT

    def __post_init__(self) -> None:
        if self.per_rating < 1:
            raise ValueError("--per-rating must be at least 1")
        if self.page_skip < 0:
            raise ValueError("--page-skip cannot be negative")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"--limit must be between 1 and {MAX_LIMIT}")
        _check_items("--ratings", self.ratings, lambda rating: rating in RATING_LETTERS, "is not a rating",
                     f"use letters from {','.join(RATING_LETTERS)}, e.g. --ratings g,s")
        _check_items("--extensions", self.extensions, EXTENSION_PATTERN.fullmatch, "is not a file extension",
                     "use up to 8 lower-case letters and digits each, e.g. --extensions png,jpg")

    def search(self, rating: str) -> str:
        return " ".join(part for part in (f"rating:{rating}", self.tags.strip()) if part)

    def identity(self, base_url: str) -> dict[str, Any]:
        """The parameters a resumed download must share with the data.db it extends (no credentials, ever)."""
        return {"base_url": base_url, "page_skip": self.page_skip, "tags": self.tags.strip(),
                "extensions": sorted(self.extensions)}


def _check_items(option: str, items: Sequence[str], valid: Callable[[str], object], problem: str, fix: str) -> None:
    """A usage error naming the option, its first bad item and how to fix it."""
    if not items:
        raise ValueError(f"{option}: nothing given; {fix}")
    for item in items:
        if not valid(item):
            raise ValueError(f"{option}: {item!r} {problem}; {fix}")


@dataclass
class RatingReport:
    stored: int = 0  # posts of this rating in data.db at the end
    downloaded: int = 0  # of which this run added
    skipped: Counter[str] = field(default_factory=Counter)  # unusable posts this run passed over, by reason
    exhausted: bool = False  # the search ran out before per_rating posts were found


def option_list(text: str) -> tuple[str, ...]:
    """A comma-separated option value: lower-cased, stripped, without empty items or repeats."""
    return tuple(dict.fromkeys(item for item in (part.strip().lower() for part in text.split(",")) if item))


def post_id(post: object) -> int | None:
    """The post's id when it is a positive integer (anything else cannot be a cursor or a row)."""
    value = _integer(post.get("id")) if isinstance(post, dict) else None
    return value if value is not None and value > 0 else None


def unusable_reason(post: dict[str, Any], extensions: Sequence[str]) -> str | None:
    """Why a listed post cannot go into the dataset, or None. The reasons name no value the server sent unless it
    was checked first (they are printed and stored)."""
    if post.get("is_deleted"):
        return "deleted"
    if post.get("is_banned"):
        return "banned"
    if not post.get("file_url") or not post.get("md5"):
        return "no file_url"
    if not isinstance(post["md5"], str) or not MD5_PATTERN.fullmatch(post["md5"]):
        return "invalid md5"  # it names the image file: 32 lower-case hex digits and nothing else
    extension = post.get("file_ext")
    if not isinstance(extension, str) or not EXTENSION_PATTERN.fullmatch(extension.lower()):
        return "invalid file_ext"
    if extension.lower() not in extensions:
        return f"file type {extension.lower()}"
    if post.get("rating") not in RATING_LETTERS:
        return "unknown rating"
    if not isinstance(post["file_url"], str) or origin(post["file_url"]) is None:
        return "invalid file_url"  # not http(s), no host or a bad port: it could never be fetched
    return _invalid_column(post)


def _invalid_column(post: dict[str, Any]) -> str | None:
    """A value bound for data.db with a type its column cannot hold."""
    for column in TAG_COLUMNS:
        if not isinstance(post.get(column) or "", str):
            return f"invalid {column}"
    for column, kind in (("image_width", int), ("image_height", int), ("created_at", str)):
        value = post.get(column)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            return f"invalid {column}"
    return None


class DatasetDownloader:
    def __init__(self, db_path: Path, client: DanbooruClient, plan: DownloadPlan) -> None:
        self.db_path = Path(db_path)
        self.root = self.db_path.parent
        self.images = self.root / IMAGES_DIR
        self.client = client
        self.plan = plan

    def run(self, progress: bool = True) -> dict[str, RatingReport]:
        db = self._open()
        try:
            reports = {}
            for position, rating in enumerate(self.plan.ratings):
                with _progress_bar(rating, self.plan.per_rating, position, progress) as bar:
                    reports[rating] = self._fill_rating(db, rating, bar)
            self._record_tags(db)
            _set_metadata(db, {"updated_at": _now()})
            db.commit()
            return reports
        finally:
            db.close()

    def _open(self) -> sqlite3.Connection:
        """data.db, checked and ready, with its images folder inside the dataset folder; or a DownloadError."""
        try:
            self.images.mkdir(parents=True, exist_ok=True)
            if not self.images.resolve().is_relative_to(self.root.resolve()):
                raise DownloadError(f"{self.images} leads outside {self.root} (a symbolic link?); use a new --out")
            for partial in self.images.glob(f"*{PARTIAL_SUFFIX}"):
                partial.unlink()  # left by a run that was killed mid-download
            db = sqlite3.connect(self.db_path)
        except OSError as error:
            raise DownloadError(f"cannot write the dataset at {self.db_path}: {error}; use another --out") from None
        except sqlite3.Error as error:
            raise DownloadError(f"cannot open {self.db_path} as a data.db: {error}; use another --out") from None
        try:
            self._prepare(db)
        except sqlite3.DatabaseError as error:
            db.close()
            raise DownloadError(f"{self.db_path} is not a data.db ({error}); use another --out") from None
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        create_schema(db)
        identity = self.plan.identity(self.client.base_url)
        stored = dict(db.execute("SELECT key, value FROM metadata").fetchall())
        posts = db.execute("SELECT count(*) FROM posts").fetchone()[0]
        if "download_params" in stored:
            if json.loads(stored["download_params"]) != identity:
                raise DownloadError(
                    f"{self.db_path} was downloaded with {stored['download_params']}, not {json.dumps(identity)}; "
                    "resume with the same --base-url, --page-skip, --tags and --extensions, or use a new --out")
        elif posts:
            raise DownloadError(f"{self.db_path} already holds {posts} posts that no download made; use a new --out")
        else:
            _set_metadata(db, {"source": "danbooru", "download_params": json.dumps(identity),
                               "created_at": _now(), "tagger_eval_version": __version__})
        _set_metadata(db, {"per_rating": str(self.plan.per_rating)})
        db.commit()

    def _fill_rating(self, db: sqlite3.Connection, rating: str, bar: Any) -> RatingReport:
        report = RatingReport(stored=_count(db, rating))
        bar.update(report.stored)
        if report.stored >= self.plan.per_rating:
            return report
        for post in self._listing(db, rating):
            if report.stored >= self.plan.per_rating:
                return report
            if post_id(post) is None:  # no cursor to save: counted in this run's report only
                report.skipped["malformed post"] += 1
                continue
            if db.execute("SELECT 1 FROM posts WHERE id = ?", (post["id"],)).fetchone():
                continue
            reason = (unusable_reason(post, self.plan.extensions) or self._echo_reason(post)
                      or self._fetch_image(post))
            if reason is None:
                self._store(db, post)
                report.stored += 1
                report.downloaded += 1
                bar.update(1)
            else:
                report.skipped[reason] += 1
            _save_cursor(db, rating, post["id"], reason)
            db.commit()  # the row, its image (already in place) and the cursor land together
        report.exhausted = report.stored < self.plan.per_rating
        return report

    def _listing(self, db: sqlite3.Connection, rating: str) -> Iterator[Any]:
        """The rating's posts, newest first, from the saved cursor or after skipping the newest pages."""
        search, limit = self.plan.search(rating), self.plan.limit
        row = db.execute("SELECT cursor_id FROM download_progress WHERE rating = ?", (rating,)).fetchone()
        if row is not None:
            batch = self._newest_first(self.client.posts(search, limit, f"b{row[0]}"))
        else:
            batch = self._after_newest(search, self.plan.page_skip * DANBOORU_PAGE_SIZE)
        while batch:
            yield from batch
            batch = self._next_page(search, limit, batch)

    def _next_page(self, search: str, limit: int, batch: list[Any]) -> list[Any]:
        """The page after `batch`; none when `batch` held no valid id to go on from."""
        cursor = post_id(batch[-1])
        return [] if cursor is None else self._newest_first(self.client.posts(search, limit, f"b{cursor}"))

    @staticmethod
    def _newest_first(batch: list[Any]) -> list[Any]:
        """Newest first, after any malformed entries (no valid id), so that the last entry is the cursor."""
        return sorted(batch, key=lambda post: post_id(post) or math.inf, reverse=True)

    def _after_newest(self, search: str, skip: int) -> list[dict[str, Any]]:
        """The first page of posts after the newest `skip`: by page number when allowed, else by cursor hops.

        Danbooru serves its last numeric page (1000) in reverse order, so numeric paging stops short of it.
        """
        limit = self.plan.limit
        page, offset = divmod(skip, limit)
        if page + 1 < MAX_NUMERIC_PAGE:
            return self._newest_first(self.client.posts(search, limit, page + 1))[offset:]
        batch = self._newest_first(self.client.posts(search, MAX_LIMIT, 1))
        remaining = skip
        while batch and remaining >= len(batch):
            remaining -= len(batch)
            batch = self._next_page(search, MAX_LIMIT, batch)
        return batch[remaining:]

    def _echo_reason(self, post: dict[str, Any]) -> str | None:
        """A post that carries the credentials (a hostile mirror echoing them) must not reach data.db."""
        return "echoes the credentials" if self.client.reveals_credentials(json.dumps(post)) else None

    def _image_path(self, post: dict[str, Any]) -> Path:
        return self.images / f"{post['md5']}.{str(post['file_ext']).lower()}"

    def _fetch_image(self, post: dict[str, Any]) -> str | None:
        """Put the post's image in place, or say why not (nothing is kept then).

        A file the server says is gone is a skipped post; any other failure stops the run, to be resumed.
        """
        final = self._image_path(post)  # a link left there is replaced, never followed
        if final.is_file() and not final.is_symlink() and file_digest(final, "md5") == post["md5"]:
            return None  # an earlier run stored it and was stopped before committing the row
        partial = final.with_name(final.name + PARTIAL_SUFFIX)
        try:
            digest = self.client.download(post["file_url"], partial)
        except DanbooruError as error:
            partial.unlink(missing_ok=True)
            if error.status in GONE_STATUSES:
                return f"file unavailable (HTTP {error.status})"
            raise
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if digest != post["md5"]:
            partial.unlink()
            return "md5 mismatch"
        partial.replace(final)
        return None

    def _store(self, db: sqlite3.Connection, post: dict[str, Any]) -> None:
        row = {column: post.get(column) or "" for column in TAG_COLUMNS}
        row.update(
            id=post["id"], md5=post["md5"], file_ext=str(post["file_ext"]).lower(), rating=post["rating"],
            image_path=f"{IMAGES_DIR}/{self._image_path(post).name}", image_width=post.get("image_width"),
            image_height=post.get("image_height"), source=self.client.base_url,
            source_url=f"{self.client.base_url}/posts/{post['id']}", created_at=post.get("created_at"),
            fetched_at=_now(),
        )
        columns = ", ".join(row)
        db.execute(f"INSERT INTO posts ({columns}) VALUES ({', '.join(':' + c for c in row)})", row)

    def _record_tags(self, db: sqlite3.Connection) -> None:
        """Every tag seen, with its category from the post columns (post counts come with tag relations)."""
        for column, category in TAG_COLUMNS.items():
            for (tag_string,) in db.execute(f"SELECT {column} FROM posts").fetchall():
                db.executemany("INSERT OR IGNORE INTO tags (name, category) VALUES (?, ?)",
                               [(name, category) for name in tag_string.split()])

    def download_tag_relations(self) -> dict[str, int]:
        """Aliases onto the tags seen (old names a model may output), implications from them (closed
        transitively, so truth tags can be expanded), and each seen tag's category and post count."""
        db = sqlite3.connect(self.db_path)
        try:
            seen = {name for (name,) in db.execute("SELECT name FROM tags")}
            aliases = list(self.client.search_by_names("tag_aliases.json", "consequent_name", seen,
                                                       {"search[status]": "active"}, RELATION_FIELDS))
            implications, frontier, asked = [], set(seen), set()
            while frontier:
                asked |= frontier
                found = list(self.client.search_by_names("tag_implications.json", "antecedent_name", frontier,
                                                         {"search[status]": "active"}, RELATION_FIELDS))
                implications += found
                frontier = {record["consequent_name"] for record in found} - asked
            tags = list(self.client.search_by_names("tags.json", "name", seen, None, {"name": str, "category": int}))
            for table, records in (("tag_aliases", aliases), ("tag_implications", implications)):
                db.executemany(
                    f"INSERT OR REPLACE INTO {table} (antecedent_name, consequent_name, status) VALUES (?, ?, ?)",
                    [(r["antecedent_name"], r["consequent_name"], r["status"]) for r in records])
            db.executemany("INSERT OR REPLACE INTO tags (name, category, post_count) VALUES (?, ?, ?)",
                           [(r["name"], r["category"], _integer(r.get("post_count"))) for r in tags])
            _set_metadata(db, {"tag_relations_at": _now()})
            db.commit()
            return {"tag_aliases": len(aliases), "tag_implications": len(implications), "tags": len(tags)}
        finally:
            db.close()


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _count(db: sqlite3.Connection, rating: str) -> int:
    return db.execute("SELECT count(*) FROM posts WHERE rating = ?", (rating,)).fetchone()[0]


def _save_cursor(db: sqlite3.Connection, rating: str, post_id: int, skip_reason: str | None) -> None:
    row = db.execute("SELECT skipped FROM download_progress WHERE rating = ?", (rating,)).fetchone()
    skipped = Counter(json.loads(row[0])) if row else Counter()
    if skip_reason:
        skipped[skip_reason] += 1
    db.execute("INSERT OR REPLACE INTO download_progress (rating, cursor_id, skipped) VALUES (?, ?, ?)",
               (rating, post_id, json.dumps(dict(sorted(skipped.items())))))


def _set_metadata(db: sqlite3.Connection, values: dict[str, str]) -> None:
    db.executemany("INSERT OR REPLACE INTO metadata (key, value) VALUES (?, ?)", values.items())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _progress_bar(rating: str, total: int, position: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=f"rating:{rating}", unit="post", position=position, disable=not enabled,
                leave=True, dynamic_ncols=True)


def plan_summary(reports: dict[str, RatingReport]) -> list[str]:
    lines = []
    for rating, report in reports.items():
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(report.skipped.items())) or "none"
        shortfall = "; the search ran out of posts" if report.exhausted else ""
        lines.append(f"rating:{rating}: {report.stored} posts ({report.downloaded} new), skipped: {skipped}{shortfall}")
    return lines

