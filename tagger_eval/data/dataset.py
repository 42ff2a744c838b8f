"""The `data.db` ground truth: a sqlite file of Danbooru-shaped posts with images beside it.

Posts are read one at a time by id, so a 30,000-post dataset costs no more memory than a 30-post one.
The schema is documented in `schema.md` beside this module (shipped with the package).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

from PIL import Image

from tagger_eval.config import DEFAULT_MAX_IMAGE_PIXELS
from tagger_eval.tags import (
    ARTIST,
    CHARACTER,
    COPYRIGHT,
    GENERAL,
    META,
    RATING,
    normalise_tag,
    rating_tag,
    split_tag_string,
)

SCHEMA_VERSION = 1
SCHEMA_DOC = Path(__file__).with_name("schema.md")  # the data.db format, for people; shipped with the package

# Column -> category of the tags it holds; the order is the order truth tags are listed in messages.
TAG_COLUMNS = {
    "tag_string_general": GENERAL,
    "tag_string_character": CHARACTER,
    "tag_string_copyright": COPYRIGHT,
    "tag_string_artist": ARTIST,
    "tag_string_meta": META,
}

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS posts (
    id INTEGER PRIMARY KEY,
    md5 TEXT NOT NULL,
    file_ext TEXT NOT NULL,
    rating TEXT NOT NULL CHECK (rating IN ('g', 's', 'q', 'e')),
    tag_string_general TEXT NOT NULL DEFAULT '',
    tag_string_character TEXT NOT NULL DEFAULT '',
    tag_string_copyright TEXT NOT NULL DEFAULT '',
    tag_string_artist TEXT NOT NULL DEFAULT '',
    tag_string_meta TEXT NOT NULL DEFAULT '',
    image_path TEXT NOT NULL,
    image_width INTEGER,
    image_height INTEGER,
    source TEXT NOT NULL,
    source_url TEXT,
    created_at TEXT,
    fetched_at TEXT
);
CREATE TABLE IF NOT EXISTS metadata (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    name TEXT PRIMARY KEY,
    category INTEGER NOT NULL,
    post_count INTEGER
);
CREATE TABLE IF NOT EXISTS tag_aliases (
    antecedent_name TEXT NOT NULL,
    consequent_name TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (antecedent_name, consequent_name)
);
CREATE TABLE IF NOT EXISTS tag_implications (
    antecedent_name TEXT NOT NULL,
    consequent_name TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (antecedent_name, consequent_name)
);
CREATE TABLE IF NOT EXISTS download_progress (
    rating TEXT PRIMARY KEY,
    cursor_id INTEGER NOT NULL,
    skipped TEXT NOT NULL
);
PRAGMA user_version = {SCHEMA_VERSION};
"""

REQUIRED_COLUMNS = ("id", "md5", "file_ext", "rating", *TAG_COLUMNS, "image_path")
# How long a read waits for another process's write lock (sqlite's busy timeout) before it gives up.
BUSY_TIMEOUT_S = 5.0


class DatasetError(Exception):
    """The data.db itself cannot be used: missing, not sqlite, or without the columns the suite reads."""


class DatasetLocked(DatasetError):
    """Another process holds a lock on the data.db for longer than `BUSY_TIMEOUT_S`."""


class InvalidPost(DatasetError):
    """One post's row cannot be used (an unknown rating letter); the other posts can."""


class ImageUnavailable(Exception):
    """One post's image is missing, unreadable, not the post's file or too large; the post is skipped, the run goes
    on."""


class ImageTooLarge(ImageUnavailable):
    """More pixels than the run's limit (`--max-image-pixels`), found from the header before decoding."""


@dataclass(frozen=True)
class Post:
    id: int
    md5: str
    file_ext: str
    rating: str
    tags: Mapping[str, int]
    """Every truth tag (normalised) with its Danbooru category, the rating included as `rating:<name>`."""
    image_path: Path

    @property
    def truth(self) -> frozenset[str]:
        return frozenset(self.tags)


def create_schema(connection: sqlite3.Connection) -> None:
    """For writers of data.db (the demo generator, the Danbooru downloader)."""
    connection.executescript(SCHEMA)


class Dataset:
    """Read-only access to a data.db; opening it checks the schema so errors surface before any test runs."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir() and (path / "data.db").is_file():  # `--dataset=DIR`: the data.db in it
            path = path / "data.db"
        self.path = path
        self.root = path.parent
        if path.is_dir():
            raise DatasetError(f"dataset not found: {path} is a directory without a data.db; give the data.db file "
                               "or the directory that holds it")
        if not path.is_file():
            raise DatasetError(f"dataset not found: {path} (expected a data.db sqlite file)")
        self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            self._check_schema()
        except DatasetError:
            self.close()
            raise
        self._db.row_factory = sqlite3.Row
        self._content_hash: str | None = None

    def _check_schema(self) -> None:
        try:
            with self._reading():
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(posts)")}
        except sqlite3.DatabaseError as error:
            raise DatasetError(f"{self.path} is not a readable sqlite database: {error}") from error
        if not columns:
            raise DatasetError(f"{self.path} has no 'posts' table; see {SCHEMA_DOC} for the schema")
        missing = [column for column in REQUIRED_COLUMNS if column not in columns]
        if missing:
            raise DatasetError(f"{self.path}: table 'posts' lacks column(s) {', '.join(missing)}")

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """sqlite's bare "database is locked" as an error that names the file and says what to do."""
        try:
            yield
        except sqlite3.OperationalError as error:
            if not _is_lock(error):
                raise
            raise DatasetLocked(
                f"another process holds a lock on {self.path} (a download writing to it?); wait for it to finish or "
                f"evaluate a copy of the dataset (gave up after waiting {BUSY_TIMEOUT_S:g} s: {error})") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def post_ids(self) -> list[int]:
        with self._reading():
            return [row[0] for row in self._db.execute("SELECT id FROM posts ORDER BY id")]

    def __len__(self) -> int:
        with self._reading():
            return self._db.execute("SELECT count(*) FROM posts").fetchone()[0]

    def metadata(self) -> dict[str, str]:
        return dict(self._optional_rows("SELECT key, value FROM metadata"))

    def content_hash(self) -> str:
        """sha256 of what the evaluation reads from every post (ids, md5s, ratings, tags): two files with the same
        hash are the same ground truth, wherever they lie. It covers the images through their md5s: every image is
        checked against its post's md5 when it is read and skipped when it differs, so a scored post was scored on
        the very bytes its md5 names, and the files need no second read here. Computed once (read-only file)."""
        if self._content_hash is None:
            digest = hashlib.sha256()
            columns = ", ".join(("id", "md5", "rating", *TAG_COLUMNS))
            with self._reading():
                for row in self._db.execute(f"SELECT {columns} FROM posts ORDER BY id"):
                    digest.update("\x1f".join(str(value) for value in row).encode() + b"\x1e")
            self._content_hash = digest.hexdigest()
        return self._content_hash

    def _optional_rows(self, query: str) -> list[tuple[Any, ...]]:
        """Rows of a table that older or hand-made data.db files may lack (then none)."""
        with self._reading():
            try:
                return self._db.execute(query).fetchall()
            except sqlite3.OperationalError as error:
                if _is_lock(error):
                    raise
                return []

    def _active_relations(self, table: str) -> list[tuple[str, str]]:
        return [(normalise_tag(old), normalise_tag(new)) for old, new in self._optional_rows(
            f"SELECT antecedent_name, consequent_name FROM {table} WHERE status = 'active'")]

    def tag_aliases(self) -> dict[str, str]:
        """Active Danbooru aliases (old name -> today's), normalised; empty when the dataset has none."""
        return dict(self._active_relations("tag_aliases"))

    def tag_implications(self) -> dict[str, frozenset[str]]:
        """Each tag's active implications followed transitively (`very_long_hair` -> `long_hair` -> ...)."""
        direct: dict[str, set[str]] = {}
        for antecedent, consequent in self._active_relations("tag_implications"):
            direct.setdefault(antecedent, set()).add(consequent)
        closed: dict[str, frozenset[str]] = {}
        for tag in direct:
            seen: set[str] = set()
            frontier = set(direct[tag])
            while frontier:
                seen |= frontier
                frontier = {implied for name in frontier for implied in direct.get(name, ())} - seen - {tag}
            closed[tag] = frozenset(seen)
        return closed

    def tag_categories(self) -> dict[str, int]:
        """Categories from the `tags` table (tags an implication adds to a post need one)."""
        rows = self._optional_rows("SELECT name, category FROM tags")
        return {normalise_tag(name): category for name, category in rows}

    def get(self, post_id: int) -> Post:
        with self._reading():
            row = self._db.execute("SELECT * FROM posts WHERE id = ?", (post_id,)).fetchone()
        if row is None:
            raise KeyError(f"post {post_id} is not in {self.path}")
        return self._post_from_row(row)

    def __iter__(self) -> Iterator[Post]:
        with self._reading():
            for row in self._db.execute("SELECT * FROM posts ORDER BY id"):
                yield self._post_from_row(row)

    def _post_from_row(self, row: sqlite3.Row) -> Post:
        try:
            rating = rating_tag(row["rating"])
        except (ValueError, AttributeError) as error:
            raise InvalidPost(f"{self.path}: post {row['id']} has an invalid rating: {error}") from error
        if not isinstance(row["image_path"], str) or not row["image_path"]:
            raise InvalidPost(f"{self.path}: post {row['id']} has no image_path")
        tags: dict[str, int] = {}
        for column, category in TAG_COLUMNS.items():
            for name in split_tag_string(row[column]):
                tags.setdefault(normalise_tag(name), category)
        tags[rating] = RATING
        return Post(
            id=row["id"],
            md5=row["md5"],
            file_ext=row["file_ext"],
            rating=row["rating"],
            tags=MappingProxyType(tags),
            image_path=self.root / row["image_path"],
        )

    @staticmethod
    def load_image(post: Post, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
        """The decoded image, checked against the post's md5 and, from its header, against `max_pixels` before its
        pixels are decoded; any reason it cannot be had becomes one `ImageUnavailable` naming the post and path."""
        return _read_image(post, max_pixels)

    @staticmethod
    def check_image(post: Post, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        """What `load_image` checks (the file's md5, its size from the header), without decoding the pixels: a post
        whose output the prediction store holds is skipped exactly when a fresh run would skip it."""
        _read_image(post, max_pixels, decode=False)


def _is_lock(error: sqlite3.OperationalError) -> bool:
    return getattr(error, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _read_image(post: Post, max_pixels: int, decode: bool = True) -> Image.Image:
    path = post.image_path
    try:
        with path.open("rb") as file:
            actual = hashlib.file_digest(file, "md5").hexdigest()
            expected = str(post.md5).strip().lower()
            if actual != expected:
                raise ImageUnavailable(f"post {post.id}: image {path} does not match the post's md5 (expected "
                                       f"{expected}, the file's is {actual}): it is not this post's image; download "
                                       "it again")
            file.seek(0)
            return _decode(post, file, max_pixels, decode)
    except FileNotFoundError:
        raise ImageUnavailable(f"post {post.id}: image file missing: {path}") from None
    except OSError as error:
        raise ImageUnavailable(f"post {post.id}: image {path} is unreadable: {error}") from error


def _decode(post: Post, file: BinaryIO, max_pixels: int, decode: bool = True) -> Image.Image:
    """Pillow on an untrusted file: the size from the header first, then the pixels (unless `decode` is false)."""
    try:
        with Image.open(file) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(f"post {post.id}: image {post.image_path} is {width}x{height} "
                                    f"({width * height:,} pixels), more than the limit of {max_pixels:,}; raise it "
                                    f"with --max-image-pixels={width * height} to evaluate this post")
            if decode:
                image.load()
            return image
    except ImageUnavailable:
        raise
    except Image.DecompressionBombError as error:
        raise ImageUnavailable(f"post {post.id}: image {post.image_path} is refused by Pillow: {error} (Pillow's own "
                               "limit, twice PIL.Image.MAX_IMAGE_PIXELS, holds whatever --max-image-pixels says)"
                               ) from error
    except Exception as error:  # a malformed file makes Pillow raise OSError, ValueError, EOFError, struct.error...
        raise ImageUnavailable(f"post {post.id}: image {post.image_path} is unreadable: {error}") from error
