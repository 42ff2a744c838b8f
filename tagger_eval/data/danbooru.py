"""A small client of Danbooru's JSON API: posts, tag relations, tags and image files.

Credentials travel only as HTTP basic auth to the API's own origin (scheme, host and port), never in a URL, and
are redacted from every error message in every form a server may echo them (plain, URL-encoded, base64 of the basic
auth header), so they cannot leak into logs, error messages or the dataset. Every request is rate-limited, has a
timeout and a deadline for each attempt as a whole (`http_client.exchange`), and is retried with backoff and jitter on
connection errors, 429 and 5xx, honouring `Retry-After` (the shared `make_session`); a body that stalls past the
timeout, is cut short or outlasts the deadline is fetched again the same number of times.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus, urlsplit

import requests

from tagger_eval.http_client import Exchange, exchange, make_session, why_failed

DEFAULT_BASE_URL = "https://danbooru.donmai.us"
MAX_LIMIT = 200  # the most posts one posts.json page returns
MAX_NUMERIC_PAGE = 1000  # deeper pages need `b<id>` cursors (ordinary accounts)
DANBOORU_PAGE_SIZE = 20  # Danbooru's default page size: what "skip N pages" counts in
NAMES_PER_QUERY = 100  # tag names per `*_comma` search, to keep URLs short
LOGIN_ENV, API_KEY_ENV = "DANBOORU_LOGIN", "DANBOORU_API_KEY"
DEFAULT_PORTS = {"http": 80, "https": 443}
DEFAULT_DEADLINE = 300.0  # seconds one attempt of a request may take, its whole body included
MAX_BACKOFF = 120.0  # seconds, as urllib3's own cap
MIN_REDACTED = 3  # shorter values would garble every message and hide nothing
REDACTED = "***"
MAX_DETAIL = 300  # characters of a server's error message kept in ours
# A transfer that broke off after the answer began: urllib3 cannot retry these, the client does.
BODY_FAILURES = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError,
                 requests.exceptions.Timeout)
NOT_TRANSIENT = (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema,
                 requests.exceptions.InvalidHeader)

T = TypeVar("T")


class DanbooruError(Exception):
    """The API or a file server answered with an error, or could not be reached; never contains credentials.

    `transient` says whether the same request may succeed later (a network failure, 429, 5xx): only then does
    running the same download again help.
    """

    def __init__(self, message: str, status: int | None = None, *, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, when the server answered
        self.transient = transient


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

    def echoes(self) -> list[str]:
        """Every form in which a server may echo these credentials, longest first: as given, URL- or JSON-escaped,
        and the base64 of `login:key` (the basic auth header's value) or of the key, padded or not."""
        forms: set[str] = set()
        for value in (f"{self.login}:{self.api_key}", self.api_key, self.login):
            forms |= {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
            if value != self.login:
                for encode in (base64.b64encode, base64.urlsafe_b64encode):
                    encoded = encode(value.encode()).decode()
                    forms |= {encoded, encoded.rstrip("=")}
        return sorted((form for form in forms if len(form) >= MIN_REDACTED), key=len, reverse=True)


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the default port filled in, or None for a URL that is not http(s)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return None
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


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


def _check_settings(base_url: str, rate: float, seconds: tuple[float, float, float], retries: int) -> None:
    """Refuse values that would send credentials in URLs, wait forever or hammer the server, naming the option."""
    parts = urlsplit(base_url)
    if origin(base_url) is None:
        raise DanbooruError(f"--base-url must be an http(s) URL such as {DEFAULT_BASE_URL}, got {base_url!r}")
    if parts.username is not None or parts.password is not None:
        raise DanbooruError(f"--base-url must not hold credentials: set {LOGIN_ENV} and {API_KEY_ENV} instead")
    for option, value in zip(("--rate", "--timeout", "--timeout", "--deadline"), (rate, *seconds), strict=True):
        if not (math.isfinite(value) and value > 0):
            raise DanbooruError(f"{option} must be a positive number, got {value}")
    if retries < 0:
        raise DanbooruError(f"--retries must be 0 or more, got {retries}")


class DanbooruClient:
    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        credentials: Credentials | None = None,
        *,
        rate: float = 4.0,
        timeout: tuple[float, float] = (10.0, 60.0),
        retries: int = 5,
        backoff: float = 1.0,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        _check_settings(base_url, rate, (*timeout, deadline), retries)
        self.base_url = base_url.rstrip("/")
        self._origin = origin(base_url)
        self._credentials = credentials
        self._echoes = credentials.echoes() if credentials else []
        self.limiter = RateLimiter(rate)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.deadline = deadline
        self.session = make_session(retries=retries, backoff=backoff)

    def __repr__(self) -> str:
        return f"DanbooruClient({self.base_url!r}, authenticated={self._credentials is not None})"

    def close(self) -> None:
        self.session.close()

    def redact(self, text: str) -> str:
        """`text` with the credentials, in every form `Credentials.echoes` knows, replaced by ***."""
        for echo in self._echoes:
            text = text.replace(echo, REDACTED)
        return text

    def reveals_credentials(self, text: str) -> bool:
        return self.redact(text) != text

    def _error(self, message: str, status: int | None = None, *, transient: bool = False) -> DanbooruError:
        return DanbooruError(self.redact(message), status, transient=transient)

    def _auth(self, url: str) -> tuple[str, str] | None:
        """Credentials only for the API's exact origin: file URLs may point at a CDN, or at plain http."""
        if self._credentials is None or origin(url) != self._origin:
            return None
        return self._credentials.login, self._credentials.api_key

    def _get(self, url: str, params: dict[str, Any] | None, trace: Exchange) -> requests.Response:
        """The answer's status and headers (its body still to read), after urllib3's retries."""
        self.limiter.wait()
        try:
            response = self.session.get(url, params=params, auth=self._auth(url), timeout=self.timeout, stream=True)
        except requests.RequestException as error:
            reason = why_failed(error, trace)[1] or error
            late = f" (cut off at the {self.deadline:g} s deadline)" if trace.timed_out else ""
            raise self._error(f"GET {_full_url(url, params)} failed{_after(trace.attempts)}: {type(reason).__name__}: "
                              f"{reason}{late}", transient=not isinstance(error, NOT_TRANSIENT)) from None
        if response.status_code != 200:
            with response:
                status, detail = response.status_code, self.redact(_error_detail(response))[:MAX_DETAIL]
                raise self._error(f"GET {response.url} failed{_after(trace.attempts)}: HTTP {status}{detail}", status,
                                  transient=status == 429 or status >= 500)
        return response

    def _fetch(self, url: str, params: dict[str, Any] | None, read: Callable[[Iterator[bytes]], T]) -> T:
        """GET `url` and give its body to `read`, each attempt within the deadline, fetching it again (with backoff)
        when the body stalls past the timeout, is cut short or outlasts the deadline: urllib3 retries only what
        happens before the body."""
        for attempt in range(1, self.retries + 2):
            with exchange(self.deadline) as trace:
                response = self._get(url, params, trace)
                try:
                    with response:
                        result = read(response.iter_content(chunk_size=1 << 16))
                    failure = ""
                except BODY_FAILURES as error:
                    failure = f"{type(error).__name__}: {error}"
            if trace.timed_out:  # cut off at the deadline, even where what arrived looked complete
                failure = f"cut off at the {self.deadline:g} s deadline"
            if not failure:
                return result
            if attempt <= self.retries:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF) + random.uniform(0, self.backoff / 2))
        raise self._error(f"GET {_full_url(url, params)} failed: the transfer broke off in each of {self.retries + 1} "
                          f"attempts; the last: {failure}", transient=True)

    def _json(self, path: str, params: dict[str, Any]) -> Any:
        url = f"{self.base_url}/{path}"
        body = self._fetch(url, params, b"".join)
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack
            raise self._error(f"GET {_full_url(url, params)}: the answer is not JSON") from None

    def posts(self, tags: str, limit: int, page: int | str) -> list[Any]:
        """One page of a post search, newest first; `page` is a number or a `b<id>` cursor. The entries are as the
        server sent them: the caller checks each one."""
        answer = self._json("posts.json", {"tags": tags, "limit": limit, "page": page})
        if not isinstance(answer, list):
            raise self._error(f"posts.json answered {type(answer).__name__}, expected a list of posts")
        return answer

    def download(self, url: str, destination: Path) -> str:
        """Stream a file to `destination`, created afresh (never written through a link left there); returns the
        md5 of the bytes written."""

        def write(chunks: Iterator[bytes]) -> str:
            digest = hashlib.md5()
            destination.unlink(missing_ok=True)
            with destination.open("xb") as file:
                for chunk in chunks:
                    digest.update(chunk)
                    file.write(chunk)
            return digest.hexdigest()

        return self._fetch(url, None, write)

    def search_by_names(self, path: str, field_name: str, names: Iterable[str], extra: dict[str, str] | None = None,
                        shape: Mapping[str, type] | None = None) -> Iterator[dict[str, Any]]:
        """Every record of `path` whose `field_name` is one of `names` (chunked `*_comma` searches, all pages), less
        the records that are not objects with the `shape` given (field -> type), which are left out."""
        ordered = sorted(set(names))
        for start in range(0, len(ordered), NAMES_PER_QUERY):
            chunk = ",".join(ordered[start : start + NAMES_PER_QUERY])
            page = 1
            while True:
                params = {f"search[{field_name}_comma]": chunk, "limit": MAX_LIMIT, "page": page, **(extra or {})}
                records = self._json(path, params)
                if not isinstance(records, list):
                    raise self._error(f"{path} answered {type(records).__name__}, expected a list")
                yield from (record for record in records if isinstance(record, dict) and all(
                    isinstance(record.get(name), kind) for name, kind in (shape or {}).items()))
                if len(records) < MAX_LIMIT:
                    break
                page += 1


def _full_url(url: str, params: dict[str, Any] | None) -> str:
    request = requests.PreparedRequest()
    request.prepare_url(url, params)
    return str(request.url)


def _after(attempts: int) -> str:
    return f" after {attempts} attempts" if attempts > 1 else ""


def _error_detail(response: requests.Response) -> str:
    """Danbooru's own error message when it gave one, in full: the caller redacts it before cutting it short (a
    hostile server may echo anything, and a cut could leave part of a secret behind)."""
    try:
        body = response.json()
    except (ValueError, requests.RequestException):
        return ""
    if isinstance(body, dict):
        message = body.get("message") or body.get("reason") or body.get("error")
        if isinstance(message, str):
            return f": {message}"
    return ""
