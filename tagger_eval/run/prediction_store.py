"""The prediction store: each tagger's raw output per image, kept in sqlite so that a new threshold, scope or metric
needs no inference.

Keys: the tagger's identity (`Tagger.identity()`: implementation and package version, model and tag-file sha256,
hub revision, server URL and model), hashed, and the image's md5 (`Post.md5`, which the file was checked against when
it was read for inference). A row holds every raw output (names as the model spells them, in its order) whose
probability is at least the store's floor, every rating output whatever its probability (the most probable rating
is always predicted), and the runtime measured when it was inferred. One row per (tagger, image), written in one
transaction: a process killed at any moment leaves each post whole or absent. WAL mode lets several processes
(pytest-xdist workers) append at once. Each tagger's label and what scoring needs of it (vocabulary, categories,
rating aliases, threshold defaults, tag counts) are stored too, so `tagger-eval rescore` scores without the model.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import warnings
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tagger_eval.config import AUTOSAVE_DIR, ConfigError, RunConfig
from tagger_eval.data.dataset import Post
from tagger_eval.run.stored_taggers import StoredTagger
from tagger_eval.tags import RATING_PREFIX, normalise_tag

DEFAULT_STORE = Path(AUTOSAVE_DIR) / "predictions.sqlite"  # under the rootdir, beside the autosaved results
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0  # a writer holds the lock for one post's row: milliseconds; this only bounds a stuck one
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS store (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS taggers (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,   -- sha256 of the canonical JSON of the identity and the context
    label TEXT NOT NULL,        -- the spec it was last run as (`wd14-onnx:DIR`)
    identity TEXT NOT NULL,     -- JSON, as the results document records it
    context TEXT NOT NULL,      -- JSON: its code's sha256, library versions, execution provider (`stored_taggers`)
    scoring TEXT NOT NULL,      -- JSON: what scoring needs of the tagger (`scoring_info`)
    last_used TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tag_names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS predictions (
    tagger INTEGER NOT NULL REFERENCES taggers (id),
    md5 TEXT NOT NULL,
    runtime_s REAL NOT NULL,
    tag_ids BLOB NOT NULL,        -- little-endian int32 ids of tag_names, in the model's output order
    probabilities BLOB NOT NULL,  -- little-endian float32 when every value is one exactly, else float64
    inferred_at TEXT NOT NULL,
    PRIMARY KEY (tagger, md5)
);
PRAGMA user_version = {SCHEMA_VERSION};
"""
_REGISTER = ("INSERT INTO taggers (key, label, identity, context, scoring, last_used) VALUES (?, ?, ?, ?, ?, ?) ON "
             "CONFLICT (key) DO UPDATE SET label = excluded.label, scoring = excluded.scoring, last_used = "
             "excluded.last_used")
Stored = tuple[dict[str, float], float]  # (the kept raw output, the runtime measured when it was inferred)


class StoreError(Exception):
    """The store file cannot be used: not sqlite, another program's database, or a newer schema."""


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), sort_keys=True, ensure_ascii=True)


def identity_key(identity: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    return hashlib.sha256(_json({"identity": identity, "context": context}).encode()).hexdigest()


@dataclass(frozen=True)
class StoreEntry:
    """One tagger identity the store holds."""

    id: int
    key: str
    label: str
    identity: dict[str, Any]
    scoring: dict[str, Any]
    last_used: str
    posts: int

    def tagger(self) -> StoredTagger:
        return StoredTagger(self.identity, self.scoring)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class PredictionStore:
    """One connection to a store file, used by one thread."""

    def __init__(self, path: Path, floor: float) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory; give the sqlite file to keep predictions in")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            self._ids: dict[str, int] = {}  # tag name -> tag_names.id, for the names this connection has seen
            self._names: dict[int, str] = {}
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot open {self.path}: {error}") from error
        try:
            self._open(floor)
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise StoreError(f"{self.path} is not a usable prediction store: {error}") from error
        except StoreError:
            self._db.close()
            raise

    def _open(self, floor: float) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL: a commit survives a killed process; fsync at checkpoints
        with self._transaction():  # two processes creating it at once: the second finds the first's tables
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version == 0 and tables:
                raise StoreError(f"{self.path} is a database of something else (tables "
                                 f"{', '.join(sorted(tables))}); give a new file to --tagger-store")
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} has prediction store schema {version}; this tagger-eval reads "
                                 f"{SCHEMA_VERSION} (a newer tagger-eval wrote it): give another --tagger-store")
            for statement in SCHEMA.split(";\n") if version == 0 else ():
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT OR IGNORE INTO store (key, value) VALUES ('floor', ?)", (repr(floor),))
        self.floor = float(db.execute("SELECT value FROM store WHERE key = 'floor'").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def bypass(self, threshold: float | None, character_threshold: float | None,
               metrics_floor: float | None = None) -> str | None:
        """Why a run at these thresholds (keeping probabilities from `metrics_floor` for its metrics) cannot be
        scored from the store, which keeps no output below its floor; None when it can. Such a run infers every
        post (and stores the outputs)."""
        return _bypass(self.floor, threshold, character_threshold, metrics_floor)

    # Taggers

    def register(self, identity: Mapping[str, Any], label: str, scoring: Mapping[str, Any],
                 context: Mapping[str, Any] | None = None) -> int:
        """The id of the entry of this identity in this context (`stored_taggers.output_context`), created or refreshed
        (label, scoring, last use)."""
        context = context or {}
        key = identity_key(identity, context)
        with self._transaction():
            self._db.execute(_REGISTER, (key, label, _json(identity), _json(context), _json(scoring), _now()))
        row = self._db.execute("SELECT id FROM taggers WHERE key = ?", (key,)).fetchone()
        return int(row[0])

    def entries(self) -> list[StoreEntry]:
        """Every identity the store holds, most recently used first."""
        rows = self._db.execute(
            "SELECT id, key, label, identity, scoring, last_used, (SELECT count(*) FROM predictions p WHERE "
            "p.tagger = t.id) FROM taggers t ORDER BY last_used DESC, id DESC").fetchall()
        return [StoreEntry(row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]), row[5], row[6])
                for row in rows]

    # Predictions

    def save(self, tagger: int, md5: str, output: Mapping[str, float], runtime_s: float,
             ratings: Collection[str] | None = None) -> bool:
        """Keep one image's output (what `kept` keeps), committed alone. False when the output holds NaN (its post
        errors; a rerun infers it again)."""
        names, values = kept(output, self.floor, ratings)
        if any(map(math.isnan, values)):
            return False
        array = np.array(values, dtype="<f8")
        narrow = array.astype("<f4")  # a model's float32 outputs take half the space, and come back exactly
        probabilities = narrow if np.array_equal(narrow, array) else array
        with self._transaction():
            ids = self._intern(names)
            self._db.execute(
                "INSERT OR REPLACE INTO predictions (tagger, md5, runtime_s, tag_ids, probabilities, inferred_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", (tagger, store_key(md5), float(runtime_s),
                                              np.array(ids, dtype="<i4").tobytes(), probabilities.tobytes(), _now()))
        return True

    def get(self, tagger: int, md5: str) -> Stored | None:
        row = self._db.execute("SELECT tag_ids, probabilities, runtime_s FROM predictions WHERE tagger = ? AND md5 = ?",
                               (tagger, store_key(md5))).fetchone()
        return None if row is None else (self._decode(row[0], row[1]), float(row[2]))

    def all(self, tagger: int) -> dict[str, Stored]:
        """Every output stored for one identity, by image md5."""
        rows = self._db.execute("SELECT md5, tag_ids, probabilities, runtime_s FROM predictions WHERE tagger = ?",
                                (tagger,)).fetchall()
        return {md5: (self._decode(ids, values), float(runtime)) for md5, ids, values, runtime in rows}

    def _decode(self, ids_blob: bytes, values_blob: bytes) -> dict[str, float]:
        ids = np.frombuffer(ids_blob, dtype="<i4").tolist()
        values = np.frombuffer(values_blob, dtype="<f4" if len(values_blob) == len(ids_blob) else "<f8").tolist()
        if any(tag_id not in self._names for tag_id in ids):
            self._load_names()
        names = self._names
        return dict(zip([names[tag_id] for tag_id in ids], values, strict=True))

    def _load_names(self) -> None:
        """The names other connections added since this one last looked (ids only grow: nothing is deleted)."""
        start = max(self._names, default=0)
        for tag_id, name in self._db.execute("SELECT id, name FROM tag_names WHERE id > ?", (start,)):
            self._names[tag_id] = name
            self._ids[name] = tag_id

    def _intern(self, names: list[str]) -> list[int]:
        """Ids of the names, new ones added (inside the caller's write transaction)."""
        missing = [name for name in dict.fromkeys(names) if name not in self._ids]
        if missing:
            self._load_names()
            missing = [name for name in missing if name not in self._ids]
            self._db.executemany("INSERT OR IGNORE INTO tag_names (name) VALUES (?)", ((name,) for name in missing))
            self._load_names()
        return [self._ids[name] for name in names]

    def _transaction(self) -> _Transaction:
        return _Transaction(self)


class _Transaction:
    """BEGIN IMMEDIATE (the write lock first, so concurrent writers queue on the busy timeout) ... COMMIT; a name
    interned by a rolled-back transaction is forgotten."""

    def __init__(self, store: PredictionStore) -> None:
        self.store = store

    def __enter__(self) -> None:
        self.store._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        db = self.store._db
        if kind is None:
            db.execute("COMMIT")
            return
        if db.in_transaction:
            db.execute("ROLLBACK")
        self.store._ids.clear()
        self.store._names.clear()


class RunStore:
    """A run's store: `--tagger-store`, else the rootdir's; off with `--no-tagger-store`, and for an `Evaluation` a
    script makes without naming a store or a rootdir. An existing file is opened at once (one that is not a store
    is a usage error before any test runs); a new one when the first tagger whose outputs can be stored loads, so
    a run of the control tagger alone, or an xdist controller, writes nothing. A store named that cannot be used is
    an error; the default one (in a read-only checkout) a warning, and the run goes on without it."""

    def __init__(self, config: RunConfig, rootdir: Path | None, floor: float) -> None:
        default = rootdir / DEFAULT_STORE if rootdir is not None else None
        self.path = (config.store or default) if config.use_store else None
        self.named = config.store is not None
        self.floor = floor
        self._store: PredictionStore | None = None
        if self.path is not None and self.path.exists():
            self.open()

    def open(self) -> PredictionStore | None:
        """The store, opened (or created) now if it was not yet; None when the run has none."""
        if self._store is None and self.path is not None:
            try:
                self._store = PredictionStore(self.path, self.floor)
            except StoreError as error:
                self.path = None  # off for the rest of the run
                if self.named:
                    raise ConfigError(f"--tagger-store: {error} (or run without it: --no-tagger-store)") from None
                warnings.warn(f"prediction store not used: {error}", RuntimeWarning, stacklevel=2)
        return self._store

    def bypass(self, threshold: float | None, character_threshold: float | None,
               metrics_floor: float | None = None) -> str | None:
        """`PredictionStore.bypass` of the run's store (of its floor before it is opened); None without a store."""
        if self.path is None:
            return None
        if self._store is not None:
            return self._store.bypass(threshold, character_threshold, metrics_floor)
        return _bypass(self.floor, threshold, character_threshold, metrics_floor)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _bypass(floor: float, threshold: float | None, character_threshold: float | None,
            metrics_floor: float | None) -> str | None:
    given = [value for value in (threshold, character_threshold) if value is not None]
    if given and min(given) < floor:
        return f"threshold {min(given):g} is below the store's floor {floor:g}"
    if metrics_floor is not None and metrics_floor < floor:
        return f"metrics keep probabilities from {metrics_floor:g}, below the store's floor {floor:g}"
    return None


def store_key(md5: str) -> str:
    """An image's md5 as the store keys it (as `Dataset.load_image` compares it with the file's)."""
    return str(md5).strip().lower()


def rating_names(names: Iterable[str], coarse: Collection[str] = ()) -> frozenset[str]:
    """The names that are ratings once normalised, and the tagger's `coarse` ones (`rating:safe`)."""
    return frozenset(name for name in names if name in coarse or normalise_tag(name).startswith(RATING_PREFIX))


def kept(output: Mapping[str, float], floor: float, ratings: Collection[str] | None = None) -> tuple[list[str],
                                                                                                   list[float]]:
    """The raw outputs the store keeps, in the model's order: probability >= floor, and every rating (`ratings`:
    the output's rating names; None: found here) whatever its probability. NaN is kept (`save` refuses it)."""
    names = list(output)
    values = np.fromiter(map(float, output.values()), dtype=np.float64, count=len(names))
    keep = ~(values < floor)  # NaN too
    for name in rating_names(names) if ratings is None else ratings:
        if name in output:
            keep[names.index(name)] = True
    positions = np.flatnonzero(keep).tolist()
    return [names[position] for position in positions], values[positions].tolist()


class TaggerOutputs:
    """One tagger's outputs in the store, as `BatchPredictor` reads and writes them: looked up by the post's md5,
    saved as each batch is inferred. A store that fails (a full disk, a lock held past the timeout) warns once and
    is left alone for the rest of the run; the evaluation goes on."""

    def __init__(self, store: PredictionStore, tagger: int, coarse_ratings: Collection[str] = (),
                 read: bool = True) -> None:
        self.store = store
        self.tagger = tagger
        self.coarse_ratings = coarse_ratings
        self.read = read
        self.failed = False
        # A model outputs the same names for every image: its rating names are found once, not per post.
        self._names: list[str] = []
        self._ratings: frozenset[str] = frozenset()

    def lookup(self, post: Post) -> Stored | None:
        if not self.read or self.failed:
            return None
        try:
            return self.store.get(self.tagger, post.md5)
        except sqlite3.Error as error:
            self._fail("read", error)
            return None

    def save(self, post: Post, output: Mapping[str, float], runtime_s: float) -> None:
        if self.failed:
            return
        names = list(output)
        if names != self._names:
            self._names, self._ratings = names, rating_names(names, self.coarse_ratings)
        try:
            self.store.save(self.tagger, post.md5, output, runtime_s, self._ratings)
        except sqlite3.Error as error:
            self._fail("written", error)

    def _fail(self, what: str, error: sqlite3.Error) -> None:
        self.failed = True
        warnings.warn(f"prediction store {self.store.path} could not be {what} ({error}); this run goes on without "
                      "it", RuntimeWarning, stacklevel=3)
