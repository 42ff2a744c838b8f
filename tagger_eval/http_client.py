"""One way to talk HTTP: a `requests` session with urllib3 retries, a descriptive User-Agent and timeouts.

`requests` bounds each socket operation, not a request: a server that sends one byte a second never trips a read
timeout. Inside `exchange(seconds)` every attempt of a request made with a `make_session()` session must finish
(connect, send, the answer's head and its whole body) within `seconds`: its socket is shut down at that deadline,
which ends any read or write blocked on it. The same block counts the attempts the retries made, for messages that
say what happened. Waits between attempts are urllib3's backoff, or the server's `Retry-After` capped at
`retry_after_max` with a `RetryAfterCapped` warning when the server asked for more.
"""

from __future__ import annotations

import email.utils
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Literal, Self

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ProtocolError, ReadTimeoutError
from urllib3.poolmanager import ProxyManager
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from tagger_eval import __version__

USER_AGENT = f"tagger-eval/{__version__} (image tagger evaluation; python-requests/{requests.__version__})"
RETRY_STATUSES = (429, 500, 502, 503, 504)
RETRY_AFTER_MAX = 60.0  # seconds: the longest wait a server's Retry-After gets (urllib3's own cap is 6 hours)


class RetryAfterCapped(UserWarning):
    """A server asked to wait longer than the cap before the next attempt; the wait was the cap."""


def retry_after_seconds(value: str | None) -> float | None:
    """The wait a `Retry-After` header asks for (seconds or an HTTP date); None when absent or unreadable."""
    text = (value or "").strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class CappedRetry(Retry):
    """urllib3's Retry with `Retry-After` waits capped at `retry_after_max` seconds, warning when a server asks for
    more, and counting the attempts of the current `exchange()`."""

    def __init__(self, *args: Any, retry_after_max: float = RETRY_AFTER_MAX, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # urllib3 >= 2.6 has a parameter of that name; we apply our own cap
        self.retry_after_max: float = retry_after_max  # type: ignore[assignment]
        self.last_url = ""

    def new(self, **kw: Any) -> Self:
        return super().new(**{"retry_after_max": self.retry_after_max, **kw})

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        current = _current()
        if current is not None:
            current.failed_attempts += 1
        try:
            retry = super().increment(method, url, response, error, _pool, _stacktrace)
        except Exception:
            if current is not None:
                current.gave_up = True
            raise
        host = f"{_pool.scheme}://{_pool.host}:{_pool.port}" if isinstance(_pool, HTTPConnectionPool) else ""
        retry.last_url = host + (url or "")  # for the warning about the wait that follows
        return retry

    def sleep_for_retry(self, response: BaseHTTPResponse) -> bool:
        asked = retry_after_seconds(response.headers.get("Retry-After"))
        if not asked:
            return False  # urllib3 then waits its exponential backoff
        if asked > self.retry_after_max:
            warnings.warn(RetryAfterCapped(
                f"{self.last_url or 'a server'} answered HTTP {response.status} asking to wait {asked:g} s before "
                f"retrying (Retry-After); waiting {self.retry_after_max:g} s instead, the cap"), stacklevel=2)
        time.sleep(min(asked, self.retry_after_max))
        return True


class Exchange:
    """One request with a deadline per attempt: the attempts it took, and whether the last one ran out of time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.failed_attempts = 0  # attempts the retries gave up on (counted by CappedRetry)
        self.gave_up = False  # the retries stopped: no attempt followed the last failed one
        self.timed_out = False  # the last attempt was cut off at its deadline
        self._lock = threading.Lock()
        self._attempt = 0  # a timer that fires for an earlier attempt does nothing
        self._timer: threading.Timer | None = None
        self._pending: HTTPConnection | None = None  # cut off while still connecting: shut down once connected

    @property
    def attempts(self) -> int:
        return self.failed_attempts + (0 if self.gave_up else 1)

    def begin_attempt(self, connection: HTTPConnection) -> None:
        with self._lock:
            self._stop()
            self.timed_out, self._pending = False, None
            self._timer = threading.Timer(self.seconds, self._expire, (connection, self._attempt))
            self._timer.daemon = True
            self._timer.start()

    def connected(self, connection: HTTPConnection) -> None:
        with self._lock:
            if self._pending is connection:
                self._pending = None
                _shut_down(connection)

    def end(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        self._attempt += 1
        if self._timer is not None:
            self._timer.cancel()

    def _expire(self, connection: HTTPConnection, attempt: int) -> None:
        with self._lock:
            if attempt != self._attempt:
                return
            self.timed_out = True
            if connection.sock is None:
                self._pending = connection
            else:
                _shut_down(connection)


def _shut_down(connection: HTTPConnection) -> None:
    """Ends every read and write blocked on the connection's socket at once (closing it from here would not)."""
    try:
        if connection.sock is not None:
            connection.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


_local = threading.local()


def _current() -> Exchange | None:
    return getattr(_local, "exchange", None)


@contextmanager
def exchange(seconds: float) -> Iterator[Exchange]:
    """Within the block, each attempt of a request made in this thread with a `make_session()` session is cut off
    after `seconds`, however slowly the server sends; read the body inside the block. Check `timed_out` afterwards:
    a cut-off answer may look like a short one."""
    previous, current = _current(), Exchange(seconds)
    _local.exchange = current
    try:
        yield current
    finally:
        current.end()
        _local.exchange = previous


def why_failed(
    error: requests.RequestException | None, trace: Exchange
) -> tuple[Literal["timeout", "unreachable", "broken off", "failed"], BaseException | None]:
    """Why a request made in `exchange()` got no usable answer, and the cause urllib3's retries wrapped: it ran out of
    time (a read timeout or the deadline), never connected, was broken off after connecting, or failed otherwise."""
    reason: BaseException | None = error
    if error is not None and error.args and isinstance(error.args[0], MaxRetryError):
        reason = error.args[0].reason or error
    if trace.timed_out or isinstance(error, requests.ReadTimeout) or isinstance(reason, ReadTimeoutError):
        return "timeout", reason
    if isinstance(error, requests.ConnectTimeout) or isinstance(reason, ConnectTimeoutError):  # refused, DNS too
        return "unreachable", reason
    cut = requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError
    return ("broken off" if isinstance(reason, ProtocolError) or isinstance(error, cut) else "failed"), reason


class _WatchedHTTPConnection(HTTPConnection):
    """A connection that tells the thread's `exchange()` when an attempt starts and when it has connected."""

    def connect(self) -> None:
        super().connect()
        if (current := _current()) is not None:
            current.connected(self)

    def request(self, *args: Any, **kwargs: Any) -> None:  # one per attempt
        if (current := _current()) is not None:
            current.begin_attempt(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _DeadlineAdapter(HTTPAdapter):
    """An adapter whose connections (direct or through an HTTP proxy) honour `exchange()` deadlines."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # not SOCKS: its pools are its own
            manager.pool_classes_by_scheme = _POOLS
        return manager


def make_session(
    retries: int = 3,
    backoff: float = 0.5,
    allowed_methods: frozenset[str] | None = None,
    read_retries: int | None = None,
    retry_after_max: float = RETRY_AFTER_MAX,
) -> requests.Session:
    """A session that retries connection errors, 429 and 5xx with exponential backoff and honours Retry-After up to
    `retry_after_max` seconds.

    POST is retried too by default: every call this project makes (tagging an image, reading an API) is idempotent.
    Callers still pass `timeout=` on every request (`requests` has no session-wide timeout), and make it inside
    `exchange()` for a deadline on each attempt as a whole.
    """
    retry = CappedRetry(
        total=retries,
        connect=retries,
        read=retries if read_retries is None else read_retries,
        status=retries,
        backoff_factor=backoff,
        backoff_jitter=backoff / 2,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=allowed_methods or frozenset({"GET", "HEAD", "POST"}),
        respect_retry_after_header=True,
        raise_on_status=False,
        retry_after_max=retry_after_max,
    )
    session = requests.Session()
    adapter = _DeadlineAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session
