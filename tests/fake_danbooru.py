"""A faithful in-process fake of Danbooru's JSON API, served over real HTTP on loopback, for the downloader's tests.

`FakeDanbooru` holds posts (Danbooru's own field names), tag aliases, tag implications and tags, and answers
`/posts.json`, `/posts/<id>.json`, `/counts/posts.json`, `/tags.json`, `/tag_aliases.json`, `/tag_implications.json`
and the image files under `/data/original/<md5[0:2]>/<md5[2:4]>/<md5>.<ext>`, through a threaded
`pytest_httpserver.HTTPServer`. Faults (error statuses, delays, dropped connections, truncated bodies, bodies that
stall mid-way, error bodies that echo the request's credentials), hooks and a request log let a test drive a client
through Danbooru's bad days, and a hostile mirror's: post fields (an `md5` of `../../victim`, a plain-http `file_url`)
are served as given, and a post whose md5 is no hex digest still has its file served (at a path made from its hash).

Behaviour copied from Danbooru's source (github.com/danbooru/danbooru at 06587d1f, 2026:
app/logical/pagination_extension.rb, app/controllers/application_controller.rb, app/logical/post_sets/post.rb,
app/policies/post_policy.rb, app/logical/session_loader.rb, app/models/post.rb, app/logical/concerns/searchable.rb):

- `/posts.json`: `limit` defaults to 20 and is clamped to 1..200 (`limit=0` or junk gives 1 post); a `limit:N`
  metatag in `tags` is used when there is no `limit` parameter. Default order is id descending.
- `page`: Ruby's `to_i` of the parameter, pages below 1 are page 1. A numeric page above the page limit (1000 for
  anonymous and ordinary accounts) answers HTTP 410 with
  `{"success": false, "error": "PaginationExtension::PaginationError", "message": "You cannot go beyond page 1000.",
  "backtrace": [...]}` (the "Try narrowing your search terms ..." sentence is only on the HTML page). The last
  allowed page itself (page 1000) comes back in ascending id order: Danbooru switches it to "sequential_after" mode,
  whose records are reversed (a quirk, emulated; `reverse_page_at_limit=False` turns it off).
- `page=b<ID>`: the `limit` posts with id < ID, newest first. `page=a<ID>`: the `limit` posts with the smallest ids
  > ID, returned newest first too (Danbooru fetches them ascending and reverses them). Cursors have no page limit.
  The `b`/`a` prefix is case-insensitive.
- Other index endpoints (tags, aliases, implications) share the paginator: `limit` clamped to 1..1000, same pages.
- Deleted posts are part of search results (only the HTML gallery hides them). Posts the user may not see (banned,
  and on Danbooru also "levelblocked" ones) are listed without `md5`, `file_url`, `large_file_url` and
  `preview_file_url`; deleted posts that are not banned keep them.
- More than 2 tags (not counting free metatags such as rating:, status:, id:, limit:) answers 422
  `PostQuery::TagLimitError`; `rating:` takes a comma list of values and uses each value's first letter
  (`rating:general`, `rating:g,s`, `rating:safe` = s); active aliases in a search are replaced by their consequent.
- Authentication: HTTP basic auth wins over `login`/`api_key` parameters; a wrong key answers 401
  `SessionLoader::AuthenticationFailure` "Invalid API key"; `login` or `api_key` alone answers 401 "Missing `login`
  or `api_key`". Rate limiting answers 429 `RateLimiter::RateLimitError` "You're doing that too fast. Wait a minute
  and try again." (Danbooru itself sends no Retry-After; `fail_next(..., headers={"Retry-After": "1"})` adds one.)

Deliberate simplifications: anonymous requests are refused with 401 when the fake has `credentials` and
`require_auth` (Danbooru would serve them as anonymous); only the metatags listed in `_IMPLEMENTED_METATAGS` filter,
other known metatags are ignored; `order:` knows only `id`/`id_asc`/`id_desc`; files are served from the fake's own
host (Danbooru serves them from cdn.donmai.us); the post JSON carries the commonly used fields, not `media_asset`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response
from werkzeug.datastructures import Headers

PAGE_LIMIT = 1000  # numeric pages for anonymous, member and basic accounts (gold and above: 5000)
POSTS_MAX_LIMIT = 200  # PostSets::Post::MAX_PER_PAGE
INDEX_MAX_LIMIT = 1000  # paginated_search's max_limit for every other index
DEFAULT_LIMIT = 20  # Danbooru.config.posts_per_page and the default of every index
TAG_LIMIT = 2  # tag_query_limit for anonymous and member accounts

# Danbooru's category numbers, by the suffix of the post's tag_string_* column.
TAG_CATEGORIES = {"general": 0, "artist": 1, "copyright": 3, "character": 4, "meta": 5}
RATINGS = "gsqe"
RATING_NAMES = {"general": "g", "sensitive": "s", "questionable": "q", "explicit": "e"}
RATING_ALIASES = {"safe": "s", "nsfw": "qe", "sfw": "gs"}
# What an image tagger evaluation can use; videos, ugoira zips and flash are not images.
USABLE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "gif", "webp"})
CONTENT_TYPES = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp",
    "avif": "image/avif", "mp4": "video/mp4", "webm": "video/webm", "zip": "application/zip",
    "swf": "application/x-shockwave-flash",
}
# Post fields in the order Danbooru's JSON lists them (those the fake fills).
POST_FIELDS = (
    "id", "created_at", "uploader_id", "score", "source", "md5", "last_comment_bumped_at", "rating", "image_width",
    "image_height", "tag_string", "fav_count", "file_ext", "last_noted_at", "parent_id", "has_children",
    "approver_id", "tag_count_general", "tag_count_artist", "tag_count_character", "tag_count_copyright",
    "file_size", "up_score", "down_score", "is_pending", "is_flagged", "is_deleted", "tag_count", "updated_at",
    "is_banned", "pixiv_id", "last_commented_at", "has_active_children", "bit_flags", "tag_count_meta", "has_large",
    "has_visible_children", "tag_string_general", "tag_string_character", "tag_string_copyright",
    "tag_string_artist", "tag_string_meta", "file_url", "large_file_url", "preview_file_url",
)
URL_FIELDS = ("file_url", "large_file_url", "preview_file_url")
HIDDEN_FIELDS = ("md5", *URL_FIELDS)  # what PostPolicy#api_attributes drops for posts the user may not see


def _words(text: str) -> list[str]:
    return text.split()


# PostQueryBuilder::METATAGS (the common ones): a `name:value` term is a metatag only when its name is known.
_METATAGS = frozenset(_words("""
    user approver commenter comm noter noteupdater artcomm commentaryupdater flagger appealer upvote downvote fav
    ordfav favgroup ordfavgroup reacted pool ordpool note comment commentary id rating source status filetype
    disapproved parent child search embedded md5 pixelhash width height mpixels ratio score upvotes downvotes
    favcount filesize date age order limit tagcount pixiv_id pixiv unaliased exif duration random is has ai
    gentags arttags copytags chartags metatags
"""))
# PostQuery::UNLIMITED_METATAGS: these don't count against the tag limit.
_FREE_METATAGS = frozenset(_words("""
    status rating limit is id date age filesize filetype parent child md5 width height duration mpixels ratio score
    upvote downvotes favcount embedded tagcount pixiv_id pixiv
"""))
_IMPLEMENTED_METATAGS = frozenset({"rating", "status", "is", "id", "filetype", "md5", "limit", "order"})
_POST_STATUSES = frozenset({"active", "pending", "flagged", "deleted", "banned", "modqueue", "appealed",
                            "unmoderated", "all", "any"})
_TZ = timezone(timedelta(hours=-4))  # Danbooru's timestamps carry US/Eastern offsets
_BASE_TIME = datetime(2024, 5, 1, 12, 0, 0, 789000, tzinfo=_TZ)
_UNSET: Any = object()

_ERROR_BODIES = {
    401: ("SessionLoader::AuthenticationFailure", "Invalid API key"),
    403: ("User::PrivilegeError", "Access denied"),
    404: ("ActiveRecord::RecordNotFound", "That record was not found."),
    410: ("PaginationExtension::PaginationError", f"You cannot go beyond page {PAGE_LIMIT}."),
    422: ("PostQuery::Error", "Invalid search"),
    429: ("RateLimiter::RateLimitError", "You're doing that too fast. Wait a minute and try again."),
    500: ("StandardError", "Internal server error"),
    503: ("ActiveRecord::ConnectionNotEstablished", "The database is unavailable. Try again later."),
}


def danbooru_error(status: int, error: str | None = None, message: str | None = None) -> Response:
    """A JSON error response shaped like Danbooru's `render_error_page` ({"success": false, ...})."""
    default_error, default_message = _ERROR_BODIES.get(status, (f"HTTP{status}", f"HTTP {status}"))
    body = {"success": False, "error": error or default_error, "message": message or default_message,
            "backtrace": ["app/controllers/application_controller.rb:189:in `render_error_page'"]}
    return _json_response(body, status)


def _json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=dict(headers or {}),
                    content_type="application/json; charset=utf-8")


class _ApiError(Exception):
    def __init__(self, status: int, error: str | None = None, message: str | None = None) -> None:
        super().__init__(message or error or str(status))
        self.response = danbooru_error(status, error, message)


def _ruby_to_i(value: object) -> int:
    """Ruby's String#to_i: the leading integer, 0 when there is none."""
    match = re.match(r"\s*([+-]?\d+)", str(value))
    return int(match.group(1)) if match else 0


def _truthy(value: object) -> bool:
    return bool(re.fullmatch(r"(?i)true|t|yes|y|on|1", str(value).strip()))


def _falsy(value: object) -> bool:
    return bool(re.fullmatch(r"(?i)false|f|no|n|off|0", str(value).strip()))


def _split_tags(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [tag for item in value for tag in str(item).split()]


def make_png(seed: int, size: tuple[int, int] = (24, 24)) -> bytes:
    """A small real PNG whose pixels (and so bytes and md5) differ for every seed."""
    width, height = size
    colour = ((seed * 37 + 90) % 256, (seed * 91 + 30) % 256, (seed * 53 + 160) % 256)
    image = Image.new("RGB", (width, height), colour)
    for i, byte in enumerate(seed.to_bytes(8, "big", signed=True)):  # the seed itself, in the first pixels
        image.putpixel((i % width, (i // width) % height), (byte, 255 - byte, byte ^ 0x5A))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _make_file(seed: int, file_ext: str, size: tuple[int, int]) -> bytes:
    """Real image bytes for image extensions, bytes with the right magic number for the others."""
    if file_ext == "png":
        return make_png(seed, size)
    if file_ext in ("jpg", "jpeg", "gif", "webp"):
        image = Image.open(io.BytesIO(make_png(seed, size))).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format={"jpg": "JPEG", "jpeg": "JPEG"}.get(file_ext, file_ext.upper()))
        return buffer.getvalue()
    magic = {"mp4": b"\x00\x00\x00\x18ftypmp42", "webm": b"\x1a\x45\xdf\xa3", "zip": b"PK\x03\x04",
             "swf": b"FWS\x0a", "avif": b"\x00\x00\x00\x1cftypavif"}.get(file_ext, b"")
    return magic + f"fake {file_ext} file for post seed {seed}".encode()


def _image_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None


def _timestamp(post_id: int) -> str:
    return (_BASE_TIME + timedelta(minutes=post_id)).isoformat(timespec="milliseconds")


@dataclass
class RecordedRequest:
    """One request the fake received, in arrival order."""

    index: int  # 0-based arrival order
    method: str
    path: str
    query: dict[str, str]  # query parameters (the last value of a repeated one), api_key included when sent so
    headers: Headers  # a case-insensitive copy of the request headers
    url: str  # the full URL as requested, query string included
    auth: str | None  # "basic" (Authorization header), "params" (login/api_key in the URL) or None
    login: str | None  # the login name the request carried, if any
    time: float  # time.monotonic() on arrival
    status: int | None = None  # the status answered; None while in flight, 0 for a dropped connection

    @property
    def user_agent(self) -> str | None:
        return self.headers.get("User-Agent")


@dataclass
class _Rule:
    prefix: str
    times: int | None  # None: forever
    action: str  # "fail", "drop", "truncate", "stall", "echo"
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    seconds: float = 0.0
    fraction: float = 0.5


@dataclass
class _Post:
    fields: dict[str, Any]  # Danbooru fields without the URL fields; md5 is the declared one
    content: bytes | None  # the bytes served at file_path (None: 404)
    file_path: str | None  # where the original file is served on the fake
    urls: dict[str, str | None]  # explicit URL fields (None: omitted)
    omitted: set[str]  # fields given as None: left out of the JSON
    visible: bool  # False: md5 and the URL fields are left out, as for banned posts on Danbooru


class _Server(HTTPServer):
    """pytest-httpserver with a short shutdown poll, so stopping takes milliseconds instead of half a second."""

    def thread_target(self) -> None:
        assert self.server is not None
        self.server.serve_forever(poll_interval=0.02)


class FakeDanbooru:
    """An in-process fake of Danbooru's JSON API; see the module docstring for what it copies from Danbooru."""

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        require_auth: bool = True,
        include_deleted: bool = True,
        include_banned: bool = True,
        page_limit: int = PAGE_LIMIT,
        tag_limit: int | None = TAG_LIMIT,
        reverse_page_at_limit: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.credentials = credentials
        self.require_auth = require_auth
        self.include_deleted = include_deleted
        self.include_banned = include_banned
        self.page_limit = page_limit
        self.tag_limit = tag_limit
        self.reverse_page_at_limit = reverse_page_at_limit
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._posts: dict[int, _Post] = {}
        self._sorted: list[_Post] | None = None
        self._files: dict[str, tuple[bytes, str]] = {}
        self._aliases: list[dict[str, Any]] = []
        self._implications: list[dict[str, Any]] = []
        self._tags: dict[str, dict[str, Any]] = {}  # name -> row (explicit rows override derived values)
        self._tag_ids: dict[str, int] = {}
        self._rules: list[_Rule] = []
        self._delays: list[_Rule] = []
        self._hooks: list[Callable[[RecordedRequest], Any]] = []
        self._log: list[RecordedRequest] = []

    # ----------------------------------------------------------------------------------------------- lifecycle

    @classmethod
    def from_demo_dataset(cls, db_path: str | Path | None = None, first_id: int = 1, **options: Any) -> FakeDanbooru:
        """A fake holding the posts of a data.db (default: the bundled demo) and their image files.

        Demo post `n` becomes Danbooru post `first_id + n - 1`, so the demo's order is kept and the newest post has
        the highest id. `options` go to the constructor. The fake is not started.
        """
        fake = cls(**options)
        fake.add_dataset(db_path, first_id=first_id)
        return fake

    def start(self) -> FakeDanbooru:
        """Start serving on loopback (a free port unless `port` was given); returns self."""
        if self._server is not None:
            raise RuntimeError("FakeDanbooru is already running")
        self._stopping.clear()
        server = _Server(host=self._host, port=self._port, threaded=True)
        server.expect_request(re.compile(r".*")).respond_with_handler(self._handle)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving; wakes requests sleeping in a delay. Safe to call twice."""
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._server is not None:
            server, self._server = self._server, None
            if server.is_running():
                server.stop()

    def check(self) -> None:
        """Re-raise the first exception a request handler (the fake's own code, or a hook) raised."""
        if self._server is not None:
            self._server.check_handler_errors()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def stopping(self) -> threading.Event:
        """Set when the fake stops: hooks that block should wait on this rather than sleep."""
        return self._stopping

    def __enter__(self) -> FakeDanbooru:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not started"
        return f"<FakeDanbooru {where}, {len(self._posts)} posts>"

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash, e.g. http://127.0.0.1:54321."""
        if self._server is None:
            raise RuntimeError("FakeDanbooru is not started")
        return f"http://{self._server.host}:{self._server.port}"

    @property
    def host_url(self) -> str:
        """`url` once started, "" before (post URLs are then relative paths)."""
        return self.url if self._server is not None else ""

    # ----------------------------------------------------------------------------------------------- content

    def add_post(self, *, image_bytes: bytes | None = None, served_bytes: bytes | None = _UNSET,
                 serve_file: bool = True, visible: bool | None = None, image_size: tuple[int, int] = (24, 24),
                 **fields: Any) -> int:
        """Add one post; returns its id. `fields` use Danbooru's names and override the computed ones.

        - `id`: default the highest id so far + 1. `rating` default "g". `tag_string_general`, `_character`,
          `_copyright`, `_artist`, `_meta`: strings or lists; `tag_string` and the tag counts follow from them (a
          `tag_string` given alone counts as general tags).
        - `file_ext` (default "png"): image extensions get a real generated image unless `image_bytes` is given;
          mp4/webm/zip/swf get bytes with the right magic number.
        - `md5`: default the md5 of the file; give another one (or `served_bytes`) for a post whose served bytes
          don't match its md5. `served_bytes`: what the file URL serves instead of `image_bytes`.
          `serve_file=False`: the file URL answers 404.
        - `is_deleted`, `is_banned`: flags. `visible` (default: not banned): False leaves out md5 and the URL fields,
          as Danbooru does for posts the user may not see.
        - `md5=None`, `file_url=None`, `large_file_url=None`, `preview_file_url=None`: that field is left out.
        """
        with self._lock:
            post_id = int(fields.pop("id", None) or (max(self._posts, default=0) + 1))
            if post_id in self._posts:
                raise ValueError(f"post {post_id} already exists")
            file_ext = str(fields.pop("file_ext", "png")).lower()
            content = image_bytes if image_bytes is not None else _make_file(post_id, file_ext, image_size)
            size = _image_size(content) or image_size
            categories = {name: _split_tags(fields.pop(f"tag_string_{name}", "")) for name in TAG_CATEGORIES}
            tag_string = fields.pop("tag_string", None)
            if tag_string is not None and not any(categories.values()):
                categories["general"] = _split_tags(tag_string)
            all_tags = sorted({tag for tags in categories.values() for tag in tags})
            omitted = {key for key in HIDDEN_FIELDS if key in fields and fields[key] is None}
            urls = {key: fields.pop(key) for key in URL_FIELDS if key in fields}
            md5 = fields.pop("md5", None) or hashlib.md5(content).hexdigest()
            key = md5 if re.fullmatch(r"[0-9a-f]{32}", str(md5)) else hashlib.md5(str(md5).encode()).hexdigest()
            file_path = f"/data/original/{key[0:2]}/{key[2:4]}/{key}.{file_ext}"
            is_banned = bool(fields.get("is_banned", False))
            record: dict[str, Any] = {
                "id": post_id,
                "created_at": _timestamp(post_id),
                "uploader_id": 1 + post_id % 7,
                "score": post_id % 11,
                "source": "",
                "md5": md5,
                "last_comment_bumped_at": None,
                "rating": fields.pop("rating", "g"),
                "image_width": size[0],
                "image_height": size[1],
                "tag_string": " ".join(all_tags),
                "fav_count": post_id % 5,
                "file_ext": file_ext,
                "last_noted_at": None,
                "parent_id": None,
                "has_children": False,
                "approver_id": None,
                **{f"tag_count_{name}": len(set(categories[name]))
                   for name in ("general", "artist", "character", "copyright")},
                "file_size": len(content),
                "up_score": post_id % 11,
                "down_score": 0,
                "is_pending": False,
                "is_flagged": False,
                "is_deleted": False,
                "tag_count": len(all_tags),
                "updated_at": _timestamp(post_id + 60),
                "is_banned": False,
                "pixiv_id": None,
                "last_commented_at": None,
                "has_active_children": False,
                "bit_flags": 0,
                "tag_count_meta": len(set(categories["meta"])),
                "has_large": False,
                "has_visible_children": False,
                **{f"tag_string_{name}": " ".join(categories[name]) for name in TAG_CATEGORIES},
            }
            record.update({key: value for key, value in fields.items() if key not in omitted})
            large_path = file_path
            if file_ext == "zip":  # ugoira: the "large" file is a webm sample
                large_path = f"/data/sample/{key[0:2]}/{key[2:4]}/sample-{key}.webm"
            post = _Post(
                fields=record,
                content=(content if served_bytes is _UNSET else served_bytes) if serve_file else None,
                file_path=file_path,
                urls={"file_url": file_path, "large_file_url": large_path,
                      "preview_file_url": f"/data/180x180/{key[0:2]}/{key[2:4]}/{key}.jpg", **urls},
                omitted=omitted,
                visible=(not is_banned) if visible is None else visible,
            )
            self._posts[post_id] = post
            self._sorted = None
            if post.content is not None:
                self._files[file_path] = (post.content, CONTENT_TYPES.get(file_ext, "application/octet-stream"))
            for name, tags in categories.items():
                for tag in tags:
                    self._tag_ids.setdefault(tag, len(self._tag_ids) + 1)
                    self._tags.setdefault(tag, {"category": TAG_CATEGORIES[name]})
            return post_id

    def add_generated(self, count: int, rating_cycle: str = RATINGS, start_id: int | None = None,
                      image_size: tuple[int, int] = (24, 24), **fields: Any) -> list[int]:
        """Add `count` synthetic posts with ascending ids (default: after the highest id) and small distinct PNGs.

        Ratings follow `rating_cycle` ("gsqe": g, s, q, e, g, ...); tags are drawn deterministically from a small
        Danbooru-like vocabulary. `fields` go to every `add_post` call. Returns the new ids, oldest first.
        """
        general_pool = ["1girl", "solo", "long_hair", "short_hair", "smile", "looking_at_viewer", "outdoors",
                        "sky", "simple_background", "white_background", "blue_eyes", "red_eyes", "hat", "dress"]
        characters = ["hatsune_miku", "hakurei_reimu", "kirisame_marisa", ""]
        copyrights = {"hatsune_miku": "vocaloid", "hakurei_reimu": "touhou", "kirisame_marisa": "touhou",
                      "": "original"}
        with self._lock:
            first = start_id if start_id is not None else max(self._posts, default=0) + 1
            ids = []
            for i in range(count):
                post_id = first + i
                general = [tag for bit, tag in enumerate(general_pool) if (post_id * 2654435761 >> bit) & 1]
                character = characters[post_id % len(characters)]
                values = {
                    "id": post_id,
                    "rating": rating_cycle[i % len(rating_cycle)],
                    "tag_string_general": general or ["solo"],
                    "tag_string_character": character,
                    "tag_string_copyright": copyrights[character],
                    "tag_string_artist": f"artist_{post_id % 6}",
                    "tag_string_meta": "highres" if post_id % 3 == 0 else "",
                    **fields,
                }
                ids.append(self.add_post(image_size=image_size, **values))
            return ids

    def add_dataset(self, db_path: str | Path | None = None, first_id: int = 1) -> list[int]:
        """Add the posts of a data.db and their image files (see `from_demo_dataset`); returns the new ids."""
        if db_path is None:
            from tagger_eval.run.evaluation import DEFAULT_DATASET

            db_path = DEFAULT_DATASET
        db_path = Path(db_path)
        connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        connection.row_factory = sqlite3.Row
        try:
            rows = connection.execute("SELECT * FROM posts ORDER BY id").fetchall()
        finally:
            connection.close()
        ids = []
        for row in rows:
            post_id = first_id + row["id"] - 1
            keys = row.keys()
            ids.append(self.add_post(
                id=post_id,
                image_bytes=(db_path.parent / row["image_path"]).read_bytes(),
                md5=row["md5"],
                file_ext=row["file_ext"],
                rating=row["rating"],
                **{f"tag_string_{name}": row[f"tag_string_{name}"] for name in TAG_CATEGORIES},
                **({"created_at": row["created_at"]} if "created_at" in keys and row["created_at"] else {}),
                **({"source": row["source_url"]} if "source_url" in keys and row["source_url"] else {}),
            ))
        return ids

    def add_alias(self, antecedent_name: str, consequent_name: str, status: str = "active", **fields: Any) -> int:
        """Add a tag alias row; returns its id (ids ascend in the order rows are added)."""
        return self._add_relationship(self._aliases, antecedent_name, consequent_name, status, fields)

    def add_implication(self, antecedent_name: str, consequent_name: str, status: str = "active",
                        **fields: Any) -> int:
        """Add a tag implication row; returns its id."""
        return self._add_relationship(self._implications, antecedent_name, consequent_name, status, fields)

    def _add_relationship(self, rows: list[dict[str, Any]], antecedent: str, consequent: str, status: str,
                          fields: dict[str, Any]) -> int:
        with self._lock:
            row_id = len(rows) + 1
            rows.append({
                "id": row_id, "antecedent_name": antecedent, "consequent_name": consequent, "creator_id": 1,
                "forum_topic_id": None, "status": status, "created_at": _timestamp(row_id),
                "updated_at": _timestamp(row_id), "approver_id": 1, "forum_post_id": None, "reason": "", **fields,
            })
            return row_id

    def add_tag(self, name: str, category: int = 0, post_count: int | None = None, **fields: Any) -> int:
        """Add or override a tag row (`post_count` None: counted from the posts); returns its id."""
        with self._lock:
            tag_id = self._tag_ids.setdefault(name, len(self._tag_ids) + 1)
            row = {"category": category, **fields}
            if post_count is not None:
                row["post_count"] = post_count
            self._tags[name] = row
            return tag_id

    def add_file(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Serve `data` at `path` (e.g. an ugoira's sample webm); returns its absolute URL once started."""
        with self._lock:
            self._files[path] = (data, content_type)
        return self.host_url + path

    # ----------------------------------------------------------------------------------------------- views

    @property
    def posts(self) -> list[dict[str, Any]]:
        """Every post as /posts.json would show it, newest first."""
        return [self._render(post) for post in self._ordered()]

    def post(self, post_id: int) -> dict[str, Any]:
        """One post as the API shows it."""
        return self._render(self._posts[post_id])

    def raw_post(self, post_id: int) -> dict[str, Any]:
        """One post with every field, md5 and URLs included even where the API hides them."""
        post = self._posts[post_id]
        return {**post.fields, **{key: self.host_url + value if value and value.startswith("/") else value
                                  for key, value in post.urls.items()}}

    @property
    def post_ids(self) -> list[int]:
        """Every post id, newest first."""
        return [post.fields["id"] for post in self._ordered()]

    def file_bytes(self, post_id: int) -> bytes | None:
        """The bytes the post's file URL serves (None: 404)."""
        return self._posts[post_id].content

    @property
    def aliases(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._aliases]

    @property
    def implications(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._implications]

    @property
    def tags(self) -> list[dict[str, Any]]:
        """Every tag row as /tags.json shows it, id descending."""
        return self._tag_rows()

    def unusable_reason(self, post_id: int, extensions: Iterable[str] = USABLE_EXTENSIONS) -> str | None:
        """Why a downloader must skip this post ("deleted", "banned", "no file_url", "no md5", "file type mp4",
        "file missing", "md5 mismatch"), or None when the post is usable."""
        post = self._posts[post_id]
        shown = self._render(post)
        if post.fields.get("is_deleted"):
            return "deleted"
        if post.fields.get("is_banned"):
            return "banned"
        if not shown.get("file_url"):
            return "no file_url"
        if not shown.get("md5"):
            return "no md5"
        if str(post.fields.get("file_ext")).lower() not in set(extensions):
            return f"file type {post.fields.get('file_ext')}"
        if post.content is None or post.urls.get("file_url") != post.file_path:
            return "file missing"
        if hashlib.md5(post.content).hexdigest() != post.fields["md5"]:
            return "md5 mismatch"
        return None

    def is_usable(self, post_id: int, extensions: Iterable[str] = USABLE_EXTENSIONS) -> bool:
        return self.unusable_reason(post_id, extensions) is None

    def expected_posts(self, rating: str | Iterable[str] | None = None, skip: int = 0, count: int | None = None,
                       *, tags: str = "", skip_mode: str = "results",
                       extensions: Iterable[str] = USABLE_EXTENSIONS) -> list[dict[str, Any]]:
        """The posts a correct downloader ends up with, newest first, as the API shows them.

        Search `rating` (a Danbooru rating value: "g", "general", "g,s", or a list of letters; None: every rating)
        plus `tags` as /posts.json would (so `include_deleted` / `include_banned` apply), newest first; leave out
        the `skip` newest; keep the first `count` usable posts (None: all). `skip_mode` says what `skip` counts:
        "results" (default) the search results, usable or not; "usable" usable results only; "site" the newest
        posts of the whole fake, any rating (only posts older than the `skip` newest posts are considered).
        """
        query = tags
        if rating is not None:
            letters = rating.split(",") if isinstance(rating, str) else list(rating)
            query = f"{query} rating:{','.join(letters)}"
        results = self._search(query)
        if skip_mode == "results":
            results = results[skip:]
        elif skip_mode == "site":
            newest = self.post_ids[:skip]
            results = [post for post in results if not newest or post.fields["id"] < min(newest)]
        elif skip_mode != "usable":
            raise ValueError(f"skip_mode must be 'results', 'usable' or 'site', not {skip_mode!r}")
        usable = [post for post in results if self.unusable_reason(post.fields["id"], extensions) is None]
        if skip_mode == "usable":
            usable = usable[skip:]
        if count is not None:
            usable = usable[:count]
        return [self._render(post) for post in usable]

    def expected_ids(self, rating: str | Iterable[str] | None = None, skip: int = 0, count: int | None = None,
                     **options: Any) -> list[int]:
        """The ids of `expected_posts(...)`, newest first."""
        return [post["id"] for post in self.expected_posts(rating, skip, count, **options)]

    # ----------------------------------------------------------------------------------------------- faults

    def fail_next(self, path_prefix: str, status: int, times: int | None = 1,
                  headers: Mapping[str, str] | None = None, body: Any = None) -> None:
        """Answer the next `times` requests whose path starts with `path_prefix` with `status` (None: forever).

        The body is Danbooru's JSON error for that status (429: the rate limiter's; 502/504: a proxy's HTML page)
        unless `body` (dict/list: JSON; str/bytes: as is) is given; `headers` (e.g. {"Retry-After": "1"}) are added.
        """
        self._add_rule(_Rule(path_prefix, times, "fail", status=status, headers=dict(headers or {}), body=body))

    def delay_next(self, path_prefix: str, seconds: float, times: int | None = 1) -> None:
        """Sleep `seconds` before answering the next `times` matching requests (stopping the fake wakes them)."""
        with self._lock:
            self._delays.append(_Rule(path_prefix, times, "delay", seconds=seconds))

    def drop_next(self, path_prefix: str, times: int | None = 1) -> None:
        """Close the connection without answering the next `times` matching requests (a connection reset)."""
        self._add_rule(_Rule(path_prefix, times, "drop"))

    def truncate_next(self, path_prefix: str, times: int | None = 1, fraction: float = 0.5) -> None:
        """Announce the full Content-Length but send only `fraction` of the body, then close the connection."""
        self._add_rule(_Rule(path_prefix, times, "truncate", fraction=fraction))

    def stall_next(self, path_prefix: str, seconds: float, times: int | None = 1, fraction: float = 0.5) -> None:
        """Send the head and `fraction` of the body, then nothing for `seconds` (stopping the fake wakes it), then
        the rest: a transfer that stalls mid-way, past a client's read timeout when `seconds` is longer."""
        self._add_rule(_Rule(path_prefix, times, "stall", seconds=seconds, fraction=fraction))

    def echo_credentials_next(self, path_prefix: str, status: int = 500, times: int | None = 1) -> None:
        """Answer `status` with a Danbooru error whose message echoes the request's Authorization header, as sent and
        decoded (as a debugging proxy or a hostile mirror might)."""
        self._add_rule(_Rule(path_prefix, times, "echo", status=status))

    def on_request(self, hook: Callable[[RecordedRequest], Any]) -> Callable[[RecordedRequest], Any]:
        """Call `hook(record)` on every request, in the request's thread, before anything else happens.

        The hook may block or sleep (wait on `fake.stopping` to wake when the fake stops) or act (kill a client
        process). Returning None lets the request go on; returning a werkzeug Response, or a tuple
        `(status, body)` / `(status, body, headers)`, answers with that instead. Returns the hook (a decorator).
        """
        with self._lock:
            self._hooks.append(hook)
        return hook

    def clear_faults(self) -> None:
        """Forget every pending failure, delay and hook."""
        with self._lock:
            self._rules.clear()
            self._delays.clear()
            self._hooks.clear()

    def _add_rule(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    # ----------------------------------------------------------------------------------------------- request log

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._log)

    def requests_to(self, path_prefix: str) -> list[RecordedRequest]:
        """The requests whose path starts with `path_prefix`."""
        return [record for record in self.requests if record.path.startswith(path_prefix)]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def wait_for_requests(self, path_prefix: str = "", count: int = 1, timeout: float = 10.0,
                          completed: bool = True) -> list[RecordedRequest]:
        """Block until `count` matching requests arrived (and, if `completed`, were answered); returns them."""
        deadline = time.monotonic() + timeout

        def matching() -> list[RecordedRequest]:
            return [record for record in self._log if record.path.startswith(path_prefix)
                    and (not completed or record.status is not None)]

        with self._changed:
            while len(found := matching()) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    raise TimeoutError(f"{len(found)} of {count} requests to {path_prefix!r} after {timeout} s")
                self._changed.wait(remaining)
            return found

    # ----------------------------------------------------------------------------------------------- HTTP

    def _handle(self, request: Request) -> Response:
        args = {key: request.args.getlist(key)[-1] for key in request.args}
        login = None
        if request.headers.get("Authorization"):
            auth_method = "basic"
            login = request.authorization.parameters.get("username") if request.authorization else None
        elif "login" in args or "api_key" in args:
            auth_method, login = "params", args.get("login")
        else:
            auth_method = None
        with self._changed:
            record = RecordedRequest(
                index=len(self._log), method=request.method, path=request.path, query=args,
                headers=Headers(request.headers), url=request.url, auth=auth_method, login=login,
                time=time.monotonic(),
            )
            self._log.append(record)
            self._changed.notify_all()
        status = 500
        try:
            response = self._respond(request, record, args)
            status = response.status_code
            return response
        except _Dropped:
            status = 0
            return Response(b"", status=500)
        finally:
            with self._changed:
                record.status = status
                self._changed.notify_all()

    def _respond(self, request: Request, record: RecordedRequest, args: dict[str, str]) -> Response:
        for hook in list(self._hooks):
            result = hook(record)
            if result is not None:
                return _coerce(result)
        delay = sum(rule.seconds for rule in self._take(self._delays, request.path, every=True))
        if delay:
            self._stopping.wait(delay)
        for rule in self._take(self._rules, request.path):
            if rule.action == "drop":
                _drop_connection(request)
                raise _Dropped
            if rule.action == "fail":
                return _failure(rule)
            if rule.action == "echo":
                return _echo(request, rule.status)
            response = self._route(request, args)
            if rule.action == "stall":
                return self._stalled(response, rule)
            return _truncated(response, rule.fraction)  # "truncate"
        return self._route(request, args)

    def _stalled(self, response: Response, rule: _Rule) -> Response:
        data = response.get_data()
        cut = int(len(data) * rule.fraction)

        def body() -> Iterator[bytes]:
            yield data[:cut]
            self._stopping.wait(rule.seconds)
            yield data[cut:]

        stalled = Response(body(), status=response.status_code, content_type=response.content_type)
        stalled.headers["Content-Length"] = str(len(data))
        return stalled

    def _take(self, rules: list[_Rule], path: str, every: bool = False) -> list[_Rule]:
        """Consume one use of the first matching rule (or of every matching rule)."""
        taken = []
        with self._lock:
            for rule in list(rules):
                if not path.startswith(rule.prefix):
                    continue
                taken.append(rule)
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        rules.remove(rule)
                if not every:
                    break
        return taken

    def _route(self, request: Request, args: dict[str, str]) -> Response:
        path = request.path
        if request.method not in ("GET", "HEAD"):
            return danbooru_error(405, "ActionController::RoutingError", f"No route matches [{request.method}]")
        if path in self._files:
            data, content_type = self._files[path]
            return Response(data, status=200, content_type=content_type)
        if path.startswith("/data/"):
            return Response(b"<html><body><h1>404 Not Found</h1></body></html>", status=404,
                            content_type="text/html")
        try:
            self._authenticate(request, args)
            if path == "/posts.json":
                return _json_response(self._posts_index(args))
            if match := re.fullmatch(r"/posts/(\d+)\.json", path):
                post = self._posts.get(int(match.group(1)))
                if post is None:
                    raise _ApiError(404)
                return _json_response(_only(self._render(post), args.get("only")))
            if path == "/counts/posts.json":
                return _json_response({"counts": {"posts": len(self._search(args.get("tags", ""), strict=True))}})
            if path == "/tags.json":
                return _json_response(self._tags_index(args))
            if path in ("/tag_aliases.json", "/tag_implications.json"):
                rows = self._aliases if path == "/tag_aliases.json" else self._implications
                return _json_response(self._relationships_index(rows, args))
        except _ApiError as error:
            return error.response
        return danbooru_error(404)

    def _authenticate(self, request: Request, args: dict[str, str]) -> None:
        if request.headers.get("Authorization"):
            auth = request.authorization
            given = (auth.parameters.get("username"), auth.parameters.get("password")) if auth else (None, None)
            if auth is None or auth.type != "basic" or (self.credentials and given != tuple(self.credentials)):
                raise _ApiError(401, message="Invalid API key")
        elif "login" in args or "api_key" in args:
            if not (args.get("login") and args.get("api_key")):
                raise _ApiError(401, message="Missing `login` or `api_key`")
            if self.credentials and (args["login"], args["api_key"]) != tuple(self.credentials):
                raise _ApiError(401, message="Invalid API key")
        elif self.credentials and self.require_auth:
            raise _ApiError(401, message="Missing `login` or `api_key`")

    # ----------------------------------------------------------------------------------------------- endpoints

    def _posts_index(self, args: dict[str, str]) -> list[dict[str, Any]]:
        query = _PostQuery.parse(args.get("tags", ""), self._active_aliases())
        if self.tag_limit is not None and len(query.terms) > 1 and query.term_count > self.tag_limit:
            raise _ApiError(422, "PostQuery::TagLimitError",
                            f"You cannot search for more than {self.tag_limit} tags at a time.")
        if "limit" in args:
            limit = _ruby_to_i(args["limit"])
        elif query.limit is not None:
            limit = _ruby_to_i(query.limit)
        else:
            limit = DEFAULT_LIMIT
        limit = max(1, min(limit, POSTS_MAX_LIMIT))
        results = self._search_query(query)
        page = self._paginate(results, args.get("page"), limit, key=lambda post: post.fields["id"])
        return [_only(self._render(post), args.get("only")) for post in page]

    def _paginate(self, items: list[Any], page: str | None, limit: int, key: Callable[[Any], int]) -> list[Any]:
        text = "" if page is None else str(page)
        if match := re.fullmatch(r"[bB](\d+)", text):
            before = int(match.group(1))
            return sorted((item for item in items if key(item) < before), key=key, reverse=True)[:limit]
        if match := re.fullmatch(r"[aA](\d+)", text):
            after = int(match.group(1))
            return sorted((item for item in items if key(item) > after), key=key)[:limit][::-1]
        number = _ruby_to_i(text)
        if number > self.page_limit:
            raise _ApiError(410, "PaginationExtension::PaginationError",
                            f"You cannot go beyond page {self.page_limit}.")
        current = max(number, 1)
        selected = items[(current - 1) * limit:current * limit]
        if number == self.page_limit and self.reverse_page_at_limit:
            selected = selected[::-1]
        return selected

    def _tags_index(self, args: dict[str, str]) -> list[dict[str, Any]]:
        search = _search_params(args)
        rows = self._tag_rows()
        if "id" in search:
            rows = [row for row in rows if str(row["id"]) in search["id"].split(",")]
        if "name" in search:
            rows = [row for row in rows if row["name"] == search["name"]]
        if "name_comma" in search:
            names = set(search["name_comma"].split(","))
            rows = [row for row in rows if row["name"] in names]
        if "name_space" in search:
            names = set(search["name_space"].split())
            rows = [row for row in rows if row["name"] in names]
        if "name_matches" in search:
            pattern = search["name_matches"].lower().replace(" ", "_")
            rows = [row for row in rows if fnmatch.fnmatchcase(row["name"], pattern)]
        if "category" in search:
            categories = {_ruby_to_i(value) for value in search["category"].split(",")}
            rows = [row for row in rows if row["category"] in categories]
        if _truthy(search.get("hide_empty", "")) or _falsy(search.get("is_empty", "")):
            rows = [row for row in rows if row["post_count"] > 0]
        if _truthy(search.get("is_empty", "")):
            rows = [row for row in rows if row["post_count"] == 0]
        order = search.get("order", "")
        if order == "name":
            rows.sort(key=lambda row: row["name"])
        elif order == "count":
            rows.sort(key=lambda row: -row["post_count"])
        limit = max(1, min(_ruby_to_i(args.get("limit", DEFAULT_LIMIT)), INDEX_MAX_LIMIT))
        return self._paginate(rows, args.get("page"), limit, key=lambda row: row["id"])

    def _relationships_index(self, rows: list[dict[str, Any]], args: dict[str, str]) -> list[dict[str, Any]]:
        search = _search_params(args)
        with self._lock:
            selected = sorted((dict(row) for row in rows), key=lambda row: row["id"], reverse=True)
        if "id" in search:
            selected = [row for row in selected if str(row["id"]) in search["id"].split(",")]
        for side in ("antecedent_name", "consequent_name"):
            if side in search:
                selected = [row for row in selected if row[side] == search[side]]
            if f"{side}_comma" in search:
                names = set(search[f"{side}_comma"].split(","))
                selected = [row for row in selected if row[side] in names]
            if f"{side}_space" in search:
                names = set(search[f"{side}_space"].split())
                selected = [row for row in selected if row[side] in names]
            if f"{side}_matches" in search:
                pattern = search[f"{side}_matches"].lower()
                selected = [row for row in selected if fnmatch.fnmatchcase(row[side], pattern)]
        if "name_matches" in search:
            pattern = search["name_matches"].lower()
            selected = [row for row in selected if fnmatch.fnmatchcase(row["antecedent_name"], pattern)
                        or fnmatch.fnmatchcase(row["consequent_name"], pattern)]
        if search.get("status"):
            selected = [row for row in selected if row["status"] == search["status"].lower()]
        order = search.get("order", "").lower()
        if order == "name":
            selected.sort(key=lambda row: (row["antecedent_name"], row["consequent_name"]))
        elif order in ("created_at", "updated_at"):
            selected.sort(key=lambda row: row[order], reverse=True)
        limit = max(1, min(_ruby_to_i(args.get("limit", DEFAULT_LIMIT)), INDEX_MAX_LIMIT))
        return self._paginate(selected, args.get("page"), limit, key=lambda row: row["id"])

    # ----------------------------------------------------------------------------------------------- internals

    def _ordered(self) -> list[_Post]:
        with self._lock:
            if self._sorted is None:
                self._sorted = sorted(self._posts.values(), key=lambda post: post.fields["id"], reverse=True)
            return self._sorted

    def _render(self, post: _Post) -> dict[str, Any]:
        shown = {key: post.fields[key] for key in POST_FIELDS if key in post.fields}
        shown.update({key: value for key, value in post.fields.items() if key not in shown})
        for key, value in post.urls.items():
            shown[key] = self.host_url + value if value and value.startswith("/") else value
        hidden = set(post.omitted) | (set(HIDDEN_FIELDS) if not post.visible else set())
        return {key: value for key, value in shown.items() if key not in hidden and not (
            key in URL_FIELDS and value is None)}

    def _active_aliases(self) -> dict[str, str]:
        with self._lock:
            return {row["antecedent_name"]: row["consequent_name"] for row in self._aliases
                    if row["status"] == "active"}

    def _search(self, tags: str, strict: bool = False) -> list[_Post]:
        query = _PostQuery.parse(tags, self._active_aliases())
        if strict and self.tag_limit is not None and len(query.terms) > 1 and query.term_count > self.tag_limit:
            raise _ApiError(422, "PostQuery::TagLimitError",
                            f"You cannot search for more than {self.tag_limit} tags at a time.")
        return self._search_query(query)

    def _search_query(self, query: _PostQuery) -> list[_Post]:
        results = [post for post in self._ordered() if query.matches(post.fields)]
        if not query.mentions_status:
            if not self.include_deleted:
                results = [post for post in results if not post.fields.get("is_deleted")]
            if not self.include_banned:
                results = [post for post in results if not post.fields.get("is_banned")]
        if query.ascending:
            results.reverse()
        return results

    def _tag_rows(self) -> list[dict[str, Any]]:
        with self._lock:
            counts: dict[str, int] = {}
            for post in self._posts.values():
                for tag in post.fields.get("tag_string", "").split():
                    counts[tag] = counts.get(tag, 0) + 1
            rows = []
            for name, extra in self._tags.items():
                tag_id = self._tag_ids[name]
                rows.append({"id": tag_id, "name": name, "post_count": counts.get(name, 0),
                             "category": extra.get("category", 0), "created_at": _timestamp(tag_id),
                             "updated_at": _timestamp(tag_id), "is_deprecated": False,
                             **{key: value for key, value in extra.items() if key != "category"}})
        return sorted(rows, key=lambda row: row["id"], reverse=True)


class _Dropped(Exception):
    pass


def _drop_connection(request: Request) -> None:
    sock = request.environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _failure(rule: _Rule) -> Response:
    if rule.body is None:
        if rule.status in (502, 504):
            reason = "Bad Gateway" if rule.status == 502 else "Gateway Time-out"
            html = f"<html><head><title>{rule.status} {reason}</title></head><body><center><h1>{rule.status} " \
                   f"{reason}</h1></center><hr><center>nginx</center></body></html>"
            response = Response(html, status=rule.status, content_type="text/html")
        else:
            response = danbooru_error(rule.status)
    elif isinstance(rule.body, dict | list):
        response = _json_response(rule.body, rule.status)
    else:
        response = Response(rule.body, status=rule.status)
    for key, value in rule.headers.items():
        response.headers[key] = value
    return response


def _truncated(response: Response, fraction: float) -> Response:
    data = response.get_data()
    cut = Response(data[: int(len(data) * fraction)], status=response.status_code,
                   content_type=response.content_type)
    cut.headers["Content-Length"] = str(len(data))  # the promise the body will not keep
    cut.automatically_set_content_length = False
    return cut


def _echo(request: Request, status: int) -> Response:
    header = request.headers.get("Authorization", "")
    auth = request.authorization
    decoded = f"{auth.parameters.get('username')}:{auth.parameters.get('password')}" if auth else "none"
    return danbooru_error(status, message=f"Request failed. Authorization: {header} (decoded: {decoded})")


def _coerce(result: Any) -> Response:
    if isinstance(result, Response):
        return result
    status, body, *rest = result
    headers = rest[0] if rest else {}
    if isinstance(body, dict | list):
        return _json_response(body, status, headers)
    return Response(body, status=status, headers=dict(headers))


def _only(post: dict[str, Any], only: str | None) -> dict[str, Any]:
    """Danbooru's `only=id,md5,...` parameter (top-level fields only)."""
    if not only:
        return post
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    return {name: post[name] for name in wanted if name in post}


def _search_params(args: Mapping[str, str]) -> dict[str, str]:
    found = {}
    for key, value in args.items():
        if match := re.fullmatch(r"search\[(\w+)\]", key):
            found[match.group(1)] = value
    return found


def _id_matches(spec: str, value: int) -> bool:
    spec = spec.strip()
    if "," in spec:
        return any(_id_matches(part, value) for part in spec.split(","))
    if match := re.fullmatch(r"(<=|>=|<|>)(\d+)", spec):
        operator, number = match.group(1), int(match.group(2))
        return {"<": value < number, "<=": value <= number, ">": value > number, ">=": value >= number}[operator]
    if match := re.fullmatch(r"(\d*)\.\.(\d*)", spec):
        low, high = match.groups()
        return (not low or value >= int(low)) and (not high or value <= int(high))
    return spec.isdigit() and value == int(spec)


def _status_matches(value: str, fields: Mapping[str, Any]) -> bool:
    deleted, banned = bool(fields.get("is_deleted")), bool(fields.get("is_banned"))
    pending, flagged = bool(fields.get("is_pending")), bool(fields.get("is_flagged"))
    return {
        "deleted": deleted, "banned": banned, "pending": pending, "flagged": flagged,
        "active": not (deleted or pending or flagged), "modqueue": pending or flagged, "appealed": False,
        "unmoderated": pending or flagged, "all": True, "any": True,
    }.get(value, False)


@dataclass
class _Term:
    negated: bool
    optional: bool  # a `~tag` (OR) term
    name: str | None  # metatag name, or None for a tag
    value: str


@dataclass
class _PostQuery:
    terms: list[_Term]
    limit: str | None = None
    ascending: bool = False
    mentions_status: bool = False

    @classmethod
    def parse(cls, text: str, aliases: Mapping[str, str]) -> _PostQuery:
        query = cls([])
        for raw in text.split():
            negated, optional = raw.startswith("-") and len(raw) > 1, raw.startswith("~") and len(raw) > 1
            body = raw[1:] if negated or optional else raw
            name, sep, value = body.partition(":")
            if sep and name.lower() in _METATAGS:
                term = _Term(negated, optional, name.lower(), value)
                if term.name == "limit":
                    query.limit = value
                elif term.name == "order":
                    query.ascending = value.lower() in ("id", "id_asc")
                if term.name == "status" or (term.name == "is" and value.lower() in _POST_STATUSES):
                    query.mentions_status = True
            else:
                tag = body.lower()
                term = _Term(negated, optional, None, aliases.get(tag, tag))
            query.terms.append(term)
        return query

    @property
    def term_count(self) -> int:
        tags = {term.value for term in self.terms if term.name is None}
        return len(tags) + sum(1 for term in self.terms if term.name is not None and term.name not in _FREE_METATAGS)

    def matches(self, fields: Mapping[str, Any]) -> bool:
        tags = set(str(fields.get("tag_string", "")).split())
        optional_seen = optional_hit = False
        for term in self.terms:
            hit = self._term_matches(term, fields, tags)
            if term.negated:
                hit = not hit
            if term.optional:
                optional_seen, optional_hit = True, optional_hit or hit
            elif not hit:
                return False
        return optional_hit or not optional_seen

    @staticmethod
    def _term_matches(term: _Term, fields: Mapping[str, Any], tags: set[str]) -> bool:
        value = term.value.lower()
        if term.name is None:
            if "*" in value:
                return any(fnmatch.fnmatchcase(tag, value) for tag in tags)
            return value in tags
        if term.name not in _IMPLEMENTED_METATAGS:
            return not term.negated  # ignored: the term neither keeps nor drops a post
        rating = str(fields.get("rating", ""))
        if term.name == "rating":
            return rating in {part[0] for part in value.split(",") if part}
        if term.name == "status":
            return _status_matches(value, fields)
        if term.name == "is":
            if value in _POST_STATUSES:
                return _status_matches(value, fields)
            if value in RATING_NAMES:
                return rating == RATING_NAMES[value]
            if value in RATING_ALIASES:
                return rating in RATING_ALIASES[value]
            return value == str(fields.get("file_ext", "")).lower()
        if term.name == "id":
            return _id_matches(value, int(fields["id"]))
        if term.name == "filetype":
            return str(fields.get("file_ext", "")).lower() in value.split(",")
        if term.name == "md5":
            return str(fields.get("md5", "")).lower() in value.split(",")
        return not term.negated  # limit:, order:


def start_fake_danbooru(*, demo: bool = False, **options: Any) -> FakeDanbooru:
    """A started FakeDanbooru (call `.stop()`), empty or, with `demo=True`, holding the bundled demo posts."""
    fake = FakeDanbooru.from_demo_dataset(**options) if demo else FakeDanbooru(**options)
    return fake.start()


@pytest.fixture
def fake_danbooru() -> Iterator[FakeDanbooru]:
    """An empty, started FakeDanbooru; stopped after the test, re-raising errors its handlers hit."""
    fake = start_fake_danbooru()
    try:
        yield fake
        fake.check()
    finally:
        fake.stop()
