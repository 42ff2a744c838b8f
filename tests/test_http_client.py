"""The shared HTTP session against real servers on loopback: a deadline per attempt however slowly a server sends,
attempts counted, and Retry-After waits capped.

Faults pytest-httpserver cannot produce (an answer trickled byte by byte, a reset after connecting) come from
`RawServer`, a small threaded socket server whose handler writes whatever bytes the test wants.
"""

from __future__ import annotations

import email.utils
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Response

from tagger_eval.http_client import (
    RETRY_AFTER_MAX,
    RetryAfterCapped,
    exchange,
    make_session,
    retry_after_seconds,
    why_failed,
)

Handler = Callable[[socket.socket, bytes, threading.Event], None]


class RawServer:
    """Accepts connections on loopback and hands each one, with its request's head (the body is read and dropped),
    to `handle` in a thread of its own; `stop` tells handlers that still run to give up."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += connection.recv(65536) or b"\r\n\r\n"
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                               if line.startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += connection.recv(65536) or b"x" * length
                self.handle(connection, head, self.stop)
            except OSError:
                pass  # the client gave up on us: that is what these tests want

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Handler], RawServer]]:
    servers: list[RawServer] = []

    def start(handle: Handler) -> RawServer:
        servers.append(RawServer(handle))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def trickle(phase: str) -> Handler:
    """A handler that sends its answer's head (`phase="head"`) or body one byte every 0.2 s for 8 s: never slow
    enough for a read timeout, and over long before the server would finish (the old code waited it out)."""

    def handle(connection: socket.socket, head: bytes, stop: threading.Event) -> None:
        if phase == "body":
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        else:
            connection.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        end = time.monotonic() + 8.0
        while time.monotonic() < end and not stop.is_set():
            connection.sendall(b" ")
            time.sleep(0.2)

    return handle


@pytest.mark.parametrize("phase", ["head", "body"])
def test_a_trickled_answer_is_cut_off_at_the_deadline(raw_server: Callable[[Handler], RawServer], phase: str) -> None:
    server = raw_server(trickle(phase))
    session = make_session(retries=0)
    start = time.monotonic()
    error: requests.RequestException | None = None
    with exchange(1.0) as trace:
        try:
            session.get(server.url, timeout=1.0)
        except requests.RequestException as raised:
            error = raised  # or a cut-off answer that looks whole: `timed_out` tells
    assert time.monotonic() - start < 5, "the deadline must end the request, not the server"
    assert trace.timed_out and trace.attempts == 1
    assert why_failed(error, trace)[0] == "timeout"


def test_attempts_are_counted_when_a_retry_succeeds(httpserver: HTTPServer) -> None:
    answers = iter([Response("busy", status=503), Response("busy", status=503), Response("{}", status=200)])
    httpserver.expect_request("/").respond_with_handler(lambda request: next(answers))
    session = make_session(retries=3, backoff=0.0)
    with exchange(5.0) as trace:
        response = session.get(httpserver.url_for("/"), timeout=5.0)
    assert (response.status_code, trace.attempts, trace.timed_out) == (200, 3, False)


def test_attempts_are_counted_when_the_retries_give_up(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/").respond_with_data("down", status=500)
    with exchange(5.0) as trace:
        response = make_session(retries=2, backoff=0.0).get(httpserver.url_for("/"), timeout=5.0)
    assert (response.status_code, trace.attempts) == (500, 3)


def test_a_refused_connection_is_unreachable() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"
    with exchange(5.0) as trace, pytest.raises(requests.ConnectionError) as error:
        make_session(retries=1, backoff=0.0).get(url, timeout=5.0)
    assert why_failed(error.value, trace)[0] == "unreachable"
    assert trace.attempts == 2


def test_a_long_retry_after_is_capped_with_a_warning(httpserver: HTTPServer) -> None:
    answers = iter([Response("slow down", status=429, headers={"Retry-After": "100000"}), Response("{}")])
    httpserver.expect_request("/").respond_with_handler(lambda request: next(answers))
    session = make_session(retries=1, retry_after_max=0.5)
    start = time.monotonic()
    url = httpserver.url_for("/")
    with pytest.warns(RetryAfterCapped, match=rf"^{url.rstrip('/')}/ answered HTTP 429 asking to wait 100000 s .*"
                                              r"waiting 0\.5 s instead, the cap"):
        response = session.get(url, timeout=5.0)
    assert response.status_code == 200
    assert 0.45 <= time.monotonic() - start < 10
    assert make_session().get_adapter("http://x").max_retries.retry_after_max == RETRY_AFTER_MAX <= 60


def test_retry_after_values() -> None:
    assert retry_after_seconds(" 120 ") == 120.0
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= (retry_after_seconds(in_a_minute) or 0) <= 60
    assert retry_after_seconds(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None

