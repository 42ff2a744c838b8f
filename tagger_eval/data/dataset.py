"""The `data.db` ground truth: a sqlite file of Danbooru-shaped posts with images beside it.

Posts are read one at a time by id, so a 30,000-post dataset costs no more memory than a 30-post one.
The schema is documented in `datasets/README.md`.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from PIL import Image, UnidentifiedImageError

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


class DatasetError(Exception):
    """The data.db itself cannot be used: missing, not sqlite, or without the columns the suite reads."""


class ImageUnavailable(Exception):
    """One post's image is missing or unreadable; the post is skipped, the run goes on."""


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
        self.path = Path(path)
        self.root = self.path.parent
        if not self.path.is_file():
            raise DatasetError(f"dataset not found: {self.path} (expected a data.db sqlite file)")
        self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(posts)")}
        except sqlite3.DatabaseError as error:
            self.close()
            raise DatasetError(f"{self.path} is not a readable sqlite database: {error}") from error
        if not columns:
            self.close()
            raise DatasetError(f"{self.path} has no 'posts' table; see datasets/README.md for the schema")
        missing = [column for column in REQUIRED_COLUMNS if column not in columns]
        if missing:
            self.close()
            raise DatasetError(f"{self.path}: table 'posts' lacks column(s) {', '.join(missing)}")
        self._db.row_factory = sqlite3.Row
        self._content_hash: str | None = None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def post_ids(self) -> list[int]:
        return [row[0] for row in self._db.execute("SELECT id FROM posts ORDER BY id")]

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM posts").fetchone()[0]

    def metadata(self) -> dict[str, str]:
        try:
            return dict(self._db.execute("SELECT key, value FROM metadata").fetchall())
        except sqlite3.OperationalError:
            return {}

    def content_hash(self) -> str:
        """sha256 of what the evaluation reads from every post (ids, md5s, ratings, tags): two files with the same
        hash are the same ground truth, wherever they lie. Computed once: the file is opened read-only."""
        if self._content_hash is None:
            digest = hashlib.sha256()
            columns = ", ".join(("id", "md5", "rating", *TAG_COLUMNS))
            for row in self._db.execute(f"SELECT {columns} FROM posts ORDER BY id"):
                digest.update("\x1f".join(str(value) for value in row).encode() + b"\x1e")
            self._content_hash = digest.hexdigest()
        return self._content_hash

    def _optional_rows(self, query: str) -> list[tuple[Any, ...]]:
        """Rows of a table that older or hand-made data.db files may lack (then none)."""
        try:
            return self._db.execute(query).fetchall()
        except sqlite3.OperationalError:
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
        row = self._db.execute("SELECT * FROM posts WHERE id = ?", (post_id,)).fetchone()
        if row is None:
            raise KeyError(f"post {post_id} is not in {self.path}")
        return self._post_from_row(row)

    def __iter__(self) -> Iterator[Post]:
        for row in self._db.execute("SELECT * FROM posts ORDER BY id"):
            yield self._post_from_row(row)

    def _post_from_row(self, row: sqlite3.Row) -> Post:
        try:
            rating = rating_tag(row["rating"])
        except (ValueError, AttributeError) as error:
            raise DatasetError(f"{self.path}: post {row['id']} has an invalid rating: {error}") from error
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
    def load_image(post: Post) -> Image.Image:
        """The decoded image; any reason it cannot be had becomes one `ImageUnavailable` with the path in it."""
        try:
            with Image.open(post.image_path) as image:
                image.load()
                return image
        except FileNotFoundError:
            raise ImageUnavailable(f"post {post.id}: image file missing: {post.image_path}") from None
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as error:
            raise ImageUnavailable(f"post {post.id}: image {post.image_path} is unreadable: {error}") from error
