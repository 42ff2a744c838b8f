"""A small client of Danbooru's JSON API: posts, tag relations, tags and image files.

Credentials travel only as HTTP basic auth to the API's own host, never in a URL, so they cannot leak into logs,
error messages or the dataset. Every request is rate-limited, has a timeout, and is retried with backoff and jitter
on connection errors, 429 and 5xx, honouring `Retry-After` (the shared `make_session`).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from tagger_eval.http_client import make_session

DEFAULT_BASE_URL = "https://danbooru.donmai.us"
MAX_LIMIT = 200  # the most posts one posts.json page returns
MAX_NUMERIC_PAGE = 1000  # deeper pages need `b<id>` cursors (ordinary accounts)
DANBOORU_PAGE_SIZE = 20  # Danbooru's default page size: what "skip N pages" counts in
NAMES_PER_QUERY = 100  # tag names per `*_comma` search, to keep URLs short
LOGIN_ENV, API_KEY_ENV = "DANBOORU_LOGIN", "DANBOORU_API_KEY"


class DanbooruError(Exception):
    """The API or a file server answered with an error, or could not be reached; never contains credentials."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, when the server answered


@dataclass(frozen=True)
class Credentials:
    login: str
    api_key: str = field(repr=False)

    @classmethod
    def from_environment(cls) -> Credentials | None:
        login, api_key = os.environ.get(LOGIN_ENV, ""), os.environ.get(API_KEY_ENV, "")
        if bool(login) != bool(api_key):
            raise DanbooruError(f"set both {LOGIN_ENV} and {API_KEY_ENV}, or neither")
        return cls(login, api_key) if login else None


class RateLimiter:
    """At most `per_second` requests per second, across threads."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            time.sleep(delay)


class DanbooruClient:
    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        credentials: Credentials | None = None,
        *,
        rate: float = 4.0,
        timeout: tuple[float, float] = (10.0, 60.0),
        retries: int = 5,
        session: requests.Session | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DanbooruError(f"--base-url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._host = parts.netloc
        self._credentials = credentials
        self.limiter = RateLimiter(rate)
        self.timeout = timeout
        self.session = session or make_session(retries=retries, backoff=1.0)

    def __repr__(self) -> str:
        return f"DanbooruClient({self.base_url!r}, authenticated={self._credentials is not None})"

    def close(self) -> None:
        self.session.close()

    def _auth(self, url: str) -> tuple[str, str] | None:
        """Credentials only for the API's own host: file URLs may point at a CDN."""
        if self._credentials is None or urlsplit(url).netloc != self._host:
            return None
        return self._credentials.login, self._credentials.api_key

    def _get(self, url: str, params: dict[str, Any] | None = None, *, stream: bool = False) -> requests.Response:
        self.limiter.wait()
        try:
            response = self.session.get(url, params=params, auth=self._auth(url), timeout=self.timeout,
                                        stream=stream)
        except requests.RequestException as error:
            raise DanbooruError(f"GET {url} failed: {type(error).__name__}: {error}") from error
        if response.status_code != 200:
            raise DanbooruError(f"GET {response.url} failed: HTTP {response.status_code}{_error_detail(response)}",
                                response.status_code)
        return response

    def _json(self, path: str, params: dict[str, Any]) -> Any:
        response = self._get(f"{self.base_url}/{path}", params)
        try:
            return response.json()
        except ValueError as error:
            raise DanbooruError(f"GET {response.url}: the answer is not JSON") from error

    def posts(self, tags: str, limit: int, page: int | str) -> list[dict[str, Any]]:
        """One page of a post search, newest first; `page` is a number or a `b<id>` cursor."""
        answer = self._json("posts.json", {"tags": tags, "limit": limit, "page": page})
        if not isinstance(answer, list):
            raise DanbooruError(f"posts.json answered {type(answer).__name__}, expected a list of posts")
        return answer

    def download(self, url: str, destination: Path) -> str:
        """Stream a file to `destination`; returns the md5 of the bytes written."""
        digest = hashlib.md5()
        with self._get(url, stream=True) as response, destination.open("wb") as file:
            try:
                for chunk in response.iter_content(chunk_size=1 << 16):
                    digest.update(chunk)
                    file.write(chunk)
            except requests.RequestException as error:
                raise DanbooruError(f"downloading {url} failed: {type(error).__name__}: {error}") from error
        return digest.hexdigest()

    def search_by_names(self, path: str, field_name: str, names: Iterable[str],
                        extra: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Every record of `path` whose `field_name` is one of `names` (chunked `*_comma` searches, all pages)."""
        ordered = sorted(set(names))
        for start in range(0, len(ordered), NAMES_PER_QUERY):
            chunk = ",".join(ordered[start : start + NAMES_PER_QUERY])
            page = 1
            while True:
                params = {f"search[{field_name}_comma]": chunk, "limit": MAX_LIMIT, "page": page, **(extra or {})}
                records = self._json(path, params)
                if not isinstance(records, list):
                    raise DanbooruError(f"{path} answered {type(records).__name__}, expected a list")
                yield from records
                if len(records) < MAX_LIMIT:
                    break
                page += 1


def _error_detail(response: requests.Response) -> str:
    """Danbooru's own error message when it gave one (its JSON error bodies never echo credentials)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        message = body.get("message") or body.get("reason") or body.get("error")
        if isinstance(message, str):
            return f": {message[:300]}"
    return ""
