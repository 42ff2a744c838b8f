"""The HTTP taggers (`webui:URL#MODEL`, `hydrus-dd:URL`) against real servers on loopback.

The servers are pytest-httpserver instances whose handlers check the request as the real servers would read it and
answer in the published shapes (see shared/reference/contracts.md); nothing in `requests` is mocked. Faults they
cannot produce (a trickled answer, a reset after connecting) come from `test_http_client.RawServer`.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pytest_httpserver import HTTPServer
from test_http_client import Handler, RawServer, trickle
from werkzeug import Request, Response

from tagger_eval.data.dataset import Dataset
from tagger_eval.http_client import RetryAfterCapped, make_session
from tagger_eval.run.evaluation import DEFAULT_DATASET, TaggerRun, TaggerSettings
from tagger_eval.taggers import Sample, TaggerOptions, TaggerSpec, registry, select_tags
from tagger_eval.taggers.base import REAL_MODEL_SCORE_FLOOR
from tagger_eval.taggers.demo import PixelTagger
from tagger_eval.taggers.servers import (
    ENTRIES,
    HydrusDDTagger,
    TaggerServerError,
    WebuiTagger,
    parse_webui_argument,
)
from tagger_eval.tags import RATING_PREFIX, is_rating

pytestmark = pytest.mark.filterwarnings("ignore::pytest_benchmark.logger.PytestBenchmarkWarning")

MODELS = ["wd14-vit-v2-git", "wd14-convnext-v2-git"]
MODEL = MODELS[0]
MODELS_PATH = "/tagger/v1/interrogators"
INTERROGATE_PATH = "/tagger/v1/interrogate"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- helpers -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo() -> Iterator[Dataset]:
    with Dataset(DEFAULT_DATASET) as dataset:
        yield dataset


@pytest.fixture
def sample(demo: Dataset) -> Sample:
    post = demo.get(1)
    return Sample(post, Dataset.load_image(post))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGBA"))


def decode_png(data: bytes) -> Image.Image:
    assert data.startswith(PNG_SIGNATURE), "the image must be sent as PNG (lossless)"
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def webui_spelling(tag: str) -> str:
    """How the extension spells a Danbooru tag with its space and escape settings on."""
    return tag.replace("_", " ").replace("(", "\\(").replace(")", "\\)")


def flat_caption(probabilities: dict[str, float], threshold: float = 0.0) -> dict[str, Any]:
    """The original extension's answer: ratings as bare words, tags filtered by `>=` the requested threshold."""
    caption = {}
    for tag, p in probabilities.items():
        if is_rating(tag):
            caption[tag.removeprefix(RATING_PREFIX)] = p
        elif p >= threshold:
            caption[webui_spelling(tag)] = p
    return {"caption": caption}


class Recorder:
    """A request handler that keeps what each request carried (decoded now, while the request is alive)."""

    def __init__(self, respond: Callable[[Request, int], Response | dict | list]) -> None:
        self.respond = respond
        self.bodies: list[dict[str, Any]] = []
        self.uploads: list[tuple[str | None, str | None, bytes]] = []  # (file name, content type, bytes)
        self.lock = threading.Lock()

    @property
    def hits(self) -> int:
        return len(self.bodies) + len(self.uploads)

    def __call__(self, request: Request) -> Response:
        with self.lock:
            if "file" in request.files:
                upload = request.files["file"]
                self.uploads.append((upload.filename, upload.mimetype, upload.read()))
                upload.stream.seek(0)  # for `respond`
            else:
                self.bodies.append(request.get_json() if request.is_json else {"raw": request.get_data()})
            hit = self.hits
        answer = self.respond(request, hit)
        if isinstance(answer, Response):
            return answer
        return Response(json.dumps(answer), content_type="application/json")


def serve_webui(server: HTTPServer, respond: Callable[[Request, int], Any], models: list[str] = MODELS) -> Recorder:
    recorder = Recorder(respond)
    server.expect_request(MODELS_PATH, method="GET").respond_with_json({"models": models})
    server.expect_request(INTERROGATE_PATH, method="POST").respond_with_handler(recorder)
    return recorder


def serve_hydrus(server: HTTPServer, respond: Callable[[Request, int], Any]) -> Recorder:
    recorder = Recorder(respond)
    server.expect_request("/", method="GET").respond_with_data("<form>upload</form>", content_type="text/html")
    server.expect_request("/", method="POST").respond_with_handler(recorder)
    return recorder


def base_url(server: HTTPServer) -> str:
    return server.url_for("/").rstrip("/")


def quick_session(retries: int = 1):
    """make_session's retries without the backoff, for the tests that exhaust them on purpose."""
    return make_session(retries=retries, backoff=0.0)


def check_interrogation(body: dict[str, Any], image: Image.Image) -> None:
    assert body["model"] == MODEL
    assert body["threshold"] <= 0.01, "the server must be asked for (almost) every tag"
    assert np.array_equal(pixels(decode_png(base64.b64decode(body["image"], validate=True))), pixels(image))


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def raw_webui() -> Iterator[Callable[[Handler], str]]:
    """A webui that lists its models at once and answers interrogations with the test's handler; gives its URL."""
    servers: list[RawServer] = []

    def start(interrogate: Handler) -> str:
        def handle(connection: socket.socket, head: bytes, stop: threading.Event) -> None:
            if not head.startswith(b"GET "):
                return interrogate(connection, head, stop)
            body = json.dumps({"models": MODELS}).encode()
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

        servers.append(RawServer(handle))
        return servers[-1].url

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def own_server() -> Iterator[HTTPServer]:
    """A threaded server of the test's own (the shared `httpserver` one answers one request at a time)."""
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    yield server
    if server.is_running():
        server.stop()


# --- webui ---------------------------------------------------------------------------------------------------------

RATINGS = {"rating:general": 0.1, "rating:sensitive": 0.7, "rating:questionable": 0.15, "rating:explicit": 0.05}
TAGS = {"long_hair": 0.9, "hatsune_miku_(vocaloid)": 0.6, "smile": 0.01}


def test_webui_original_flat_caption(httpserver: HTTPServer, sample: Sample) -> None:
    recorder = serve_webui(httpserver, lambda request, hit: flat_caption({**TAGS, **RATINGS}))
    tagger = WebuiTagger(base_url(httpserver), MODEL)
    [prediction] = tagger.predict([sample])
    tagger.close()

    # Tag names come back as the server spells them (the session normalises); bare rating words become ratings.
    assert prediction == {
        "long hair": 0.9, "hatsune miku \\(vocaloid\\)": 0.6, "smile": 0.01, **RATINGS,
    }
    [body] = recorder.bodies
    check_interrogation(body, sample.image)
    httpserver.check()


def test_webui_forks_nested_caption(httpserver: HTTPServer, sample: Sample) -> None:
    def respond(request: Request, hit: int) -> dict:
        ratings = {name.removeprefix(RATING_PREFIX): p for name, p in RATINGS.items()}
        return {"caption": {"tag": {webui_spelling(t): p for t, p in TAGS.items()}, "rating": ratings}}

    recorder = serve_webui(httpserver, respond)
    tagger = WebuiTagger(base_url(httpserver), MODEL, TaggerOptions(http_timeout=5.0))
    [prediction] = tagger.predict([sample])
    tagger.close()

    assert prediction == {webui_spelling(t): p for t, p in TAGS.items()} | RATINGS
    check_interrogation(recorder.bodies[0], sample.image)


def test_webui_spellings_match_danbooru_names_through_tagger_run(httpserver: HTTPServer, demo: Dataset) -> None:
    """The server answers each post's own truth in its spelling: a perfect score proves the names line up."""
    post_ids = [post.id for post in demo if any("(" in tag for tag in post.tags)][:3]
    assert post_ids, "the demo dataset must have tags with parentheses for this test to mean anything"
    current: dict[str, Any] = {}
    serve_webui(httpserver, lambda request, hit: flat_caption(dict.fromkeys(current["post"].tags, 0.9)))
    tagger = WebuiTagger(base_url(httpserver), MODEL)
    run = TaggerRun(TaggerSettings(TaggerSpec("webui", f"{base_url(httpserver)}#{MODEL}"), tagger.default_threshold,
                                   tagger.default_score_floor, "all"), tagger)
    for post_id in post_ids:
        current["post"] = demo.get(post_id)
        result = run.evaluate(demo, post_id)
        assert (result.score, result.wrong_tags, result.missed_tags) == (1.0, [], []), post_id
    run.close()


def test_webui_model_not_served_lists_the_served_models(httpserver: HTTPServer) -> None:
    serve_webui(httpserver, lambda request, hit: {})
    with pytest.raises(TaggerServerError) as error:
        WebuiTagger(base_url(httpserver), "wd-v1-4-moat-tagger-v2")
    message = str(error.value)
    assert base_url(httpserver) in message
    assert "'wd-v1-4-moat-tagger-v2'" in message
    assert "wd14-vit-v2-git, wd14-convnext-v2-git" in message


@pytest.mark.parametrize("argument", ["http://127.0.0.1:7860", "http://127.0.0.1:7860#", "#wd14-vit-v2-git", None])
def test_webui_argument_needs_url_and_model(argument: str | None) -> None:
    with pytest.raises(ValueError, match=r"expected URL#MODEL.*webui:http://127\.0\.0\.1:7860#wd14-vit-v2-git"):
        ENTRIES[0].factory(argument, TaggerOptions())


def test_webui_argument_parsing() -> None:
    assert parse_webui_argument("http://host:7860/#wd14-vit-v2-git") == ("http://host:7860", "wd14-vit-v2-git")
    with pytest.raises(ValueError, match="expected the webui server's http:// or https:// URL"):
        parse_webui_argument("127.0.0.1:7860#wd14-vit-v2-git")


def test_server_errors_are_retried(httpserver: HTTPServer, sample: Sample) -> None:
    def respond(request: Request, hit: int) -> Response | dict:
        if hit <= 2:
            return Response("overloaded", status=500)
        return flat_caption(RATINGS)

    recorder = serve_webui(httpserver, respond)
    tagger = WebuiTagger(base_url(httpserver), MODEL)  # the default session: make_session()'s retries
    assert tagger.predict([sample]) == [RATINGS]
    assert recorder.hits == 3
    for body in recorder.bodies:  # every retry sends the whole request again
        check_interrogation(body, sample.image)


def test_retry_after_is_honoured(httpserver: HTTPServer, sample: Sample) -> None:
    def respond(request: Request, hit: int) -> Response | dict:
        if hit == 1:
            return Response("busy", status=503, headers={"Retry-After": "1"})
        return flat_caption(RATINGS)

    recorder = serve_webui(httpserver, respond)
    tagger = WebuiTagger(base_url(httpserver), MODEL)
    start = time.monotonic()
    assert tagger.predict([sample]) == [RATINGS]
    assert time.monotonic() - start >= 0.95
    assert recorder.hits == 2


@pytest.mark.parametrize("make", [
    lambda url: WebuiTagger(url, MODEL, session=quick_session()),
    lambda url: HydrusDDTagger(url, session=quick_session()),
], ids=["webui", "hydrus-dd"])
def test_server_down_fails_at_construction_naming_it(closed_port_url: str, make: Callable[[str], Any]) -> None:
    start = time.monotonic()
    with pytest.raises(TaggerServerError, match=f"cannot reach the .* tagger server at {closed_port_url}") as error:
        make(closed_port_url)
    assert "could not connect (2 attempts)" in str(error.value)
    assert time.monotonic() - start < 5


def test_server_going_down_during_the_run(own_server: HTTPServer, sample: Sample) -> None:
    serve_webui(own_server, lambda request, hit: flat_caption(RATINGS))
    tagger = WebuiTagger(base_url(own_server), MODEL, session=quick_session())
    assert tagger.predict([sample]) == [RATINGS]
    own_server.stop()
    with pytest.raises(TaggerServerError, match=f"cannot reach the webui tagger server at {base_url(own_server)}"):
        tagger.predict([sample])


def test_http_error_status_is_reported_without_the_request_body(httpserver: HTTPServer, sample: Sample) -> None:
    image_base64: list[str] = []

    def respond(request: Request, hit: int) -> Response:
        image = request.get_json()["image"]
        image_base64.append(image)
        # FastAPI's validation error echoes the input: it must not end up in the message.
        detail = [{"loc": ["body", "image"], "msg": "invalid", "input": image}]
        return Response(json.dumps({"detail": detail}), status=422, content_type="application/json")

    serve_webui(httpserver, respond)
    tagger = WebuiTagger(base_url(httpserver), MODEL)
    with pytest.raises(TaggerServerError) as error:
        tagger.predict([sample])
    message = str(error.value)
    assert f"webui tagger server at {base_url(httpserver)}" in message
    assert "HTTP 422" in message and INTERROGATE_PATH in message
    assert image_base64 and image_base64[0][:40] not in message


def test_http_error_quotes_a_short_detail(httpserver: HTTPServer, sample: Sample) -> None:
    serve_webui(httpserver, lambda request, hit: Response(json.dumps({"detail": "Model not found"}), status=404,
                                                          content_type="application/json"))
    tagger = WebuiTagger(base_url(httpserver), MODEL)
    with pytest.raises(TaggerServerError, match=r"HTTP 404 NOT FOUND: 'Model not found'"):
        tagger.predict([sample])


@pytest.mark.parametrize(("answer", "complaint"), [
    (Response("<html>Internal error page</html>", content_type="text/html"), "not JSON (text/html"),
    ({"tags": ["long hair"]}, "an object with keys ['tags']"),
    ({"caption": {"long hair": "high"}}, "the probability of 'long hair' is str 'high'"),
    ({"caption": {"tag": {"long hair": 0.9}}}, "the probability of 'tag' is an object"),
    ({"caption": {"long hair": float("inf")}}, "the probability of 'long hair' is float 'inf', not a number from 0"),
    ({"caption": {"long hair": -0.25}}, "the probability of 'long hair' is float '-0.25', not a number from 0 to 1"),
    ({"caption": {"tag": {"smile": 0.5}, "rating": {"general": 1.5}}}, "the probability of 'general' is float '1.5'"),
], ids=["html", "no-caption", "string-probability", "half-nested", "infinity", "negative", "above-one"])
def test_malformed_answers_say_what_was_expected(
    httpserver: HTTPServer, sample: Sample, answer: Any, complaint: str
) -> None:
    serve_webui(httpserver, lambda request, hit: answer)
    tagger = WebuiTagger(base_url(httpserver), MODEL)
    with pytest.raises(TaggerServerError) as error:
        tagger.predict([sample])
    message = str(error.value)
    assert complaint in message
    assert 'expected {"caption": {"<tag>": probability' in message
    assert base_url(httpserver) in message


def test_malformed_model_list(httpserver: HTTPServer) -> None:
    httpserver.expect_request(MODELS_PATH).respond_with_json(["wd14-vit-v2-git"])
    with pytest.raises(TaggerServerError, match=r'a list of 1 item\(s\); expected \{"models": \["<name>", ...\]\}'):
        WebuiTagger(base_url(httpserver), MODEL)


def test_timeout_is_retried_then_reported(own_server: HTTPServer, sample: Sample) -> None:
    def respond(request: Request, hit: int) -> dict:
        time.sleep(1.0)
        return flat_caption(RATINGS)

    recorder = serve_webui(own_server, respond)
    tagger = WebuiTagger(base_url(own_server), MODEL, TaggerOptions(http_timeout=0.5), session=quick_session())
    start = time.monotonic()
    with pytest.raises(TaggerServerError, match=f"server at {base_url(own_server)} did not answer .* within 0.5 s "
                                                r"\(2 attempts\)"):
        tagger.predict([sample])
    assert time.monotonic() - start < 2.5
    assert recorder.hits == 2  # the first try and one retry


def test_a_timeout_counts_the_attempts_made(own_server: HTTPServer, sample: Sample) -> None:
    """The default session does not retry a timeout: the message says one attempt, not the session's retries."""
    serve_webui(own_server, lambda request, hit: time.sleep(1.0) or flat_caption(RATINGS))
    tagger = WebuiTagger(base_url(own_server), MODEL, TaggerOptions(http_timeout=0.5))
    with pytest.raises(TaggerServerError, match=r"within 0.5 s \(1 attempt\); raise the limit") as error:
        tagger.predict([sample])
    assert "retries" not in str(error.value)


def test_a_trickled_answer_ends_at_the_timeout(raw_webui: Callable[[Handler], str], sample: Sample) -> None:
    """One byte every 0.2 s never trips a read timeout; the timeout bounds each attempt as a whole."""
    url = raw_webui(trickle("body"))
    tagger = WebuiTagger(url, MODEL, TaggerOptions(http_timeout=1.0))
    start = time.monotonic()
    with pytest.raises(TaggerServerError, match=f"at {url} did not answer POST {url}{INTERROGATE_PATH} in full "
                                                r"within 1 s \(1 attempt\)"):
        tagger.predict([sample])
    assert time.monotonic() - start < 5


def reset(connection: socket.socket, head: bytes, stop: threading.Event) -> None:
    """Closes the connection with a TCP reset once the request has arrived."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_a_reset_after_connecting_is_not_reported_as_unreachable(raw_webui: Callable[[Handler], str],
                                                                 sample: Sample) -> None:
    url = raw_webui(reset)
    tagger = WebuiTagger(url, MODEL)
    with pytest.raises(TaggerServerError, match=f"server at {url} broke off POST {url}{INTERROGATE_PATH} after the "
                                                r"connection was made \(1 attempt\)") as error:
        tagger.predict([sample])
    assert "cannot reach" not in str(error.value)


def test_a_failing_server_is_not_asked_again(httpserver: HTTPServer, sample: Sample) -> None:
    recorder = serve_webui(httpserver, lambda request, hit: Response("overloaded", status=500))
    tagger = WebuiTagger(base_url(httpserver), MODEL, session=quick_session())
    with pytest.raises(TaggerServerError) as first:
        tagger.predict([sample])
    assert recorder.hits == 2
    message = str(first.value)
    assert f"answered POST {base_url(httpserver)}{INTERROGATE_PATH} with HTTP 500 INTERNAL SERVER ERROR: " \
           "'overloaded' (2 attempts); no further requests are sent to it in this run" in message
    with pytest.raises(TaggerServerError) as again:
        tagger.predict([sample])
    assert str(again.value) == message
    assert recorder.hits == 2, "the failed server must not be asked again"


def test_a_failed_server_fails_each_post_with_its_message_and_never_the_image(
    pytester: pytest.Pytester, raw_webui: Callable[[Handler], str], demo_subset: Callable[..., Path]
) -> None:
    """pytest prints the arguments of the frame that raised: that frame must not hold the request (the image)."""
    url = raw_webui(reset)
    result = pytester.runpytest(f"--tagger=webui:{url}#{MODEL}", f"--dataset={demo_subset(3)}", "--benchmark-disable")
    result.assert_outcomes(failed=3)
    output = result.stdout.str()
    assert output.count(f"broke off POST {url}{INTERROGATE_PATH} after the connection was made (1 attempt)") >= 3
    assert base64.b64encode(PNG_SIGNATURE).decode()[:8] not in output


def test_a_long_retry_after_is_capped_and_reported(httpserver: HTTPServer, sample: Sample) -> None:
    recorder = serve_webui(httpserver, lambda request, hit: Response("slow down", status=429,
                                                                     headers={"Retry-After": "100000"}))
    tagger = WebuiTagger(base_url(httpserver), MODEL, session=make_session(retries=1, retry_after_max=0.5))
    start = time.monotonic()
    with pytest.warns(RetryAfterCapped, match="asking to wait 100000 s"), pytest.raises(TaggerServerError) as error:
        tagger.predict([sample])
    assert time.monotonic() - start < 10
    assert recorder.hits == 2
    assert "HTTP 429 TOO MANY REQUESTS: 'slow down' (2 attempts; it asked to wait 100000 s before retrying, more " \
           "than the 0.5 s this suite waits at most)" in str(error.value)


# --- hydrus-dd -----------------------------------------------------------------------------------------------------


def test_hydrus_dd_tags_count_as_certain(httpserver: HTTPServer, sample: Sample) -> None:
    recorder = serve_hydrus(httpserver, lambda request, hit: ["1girl", "long_hair", "rating:safe"])
    tagger = HydrusDDTagger(base_url(httpserver))
    [prediction] = tagger.predict([sample])

    assert prediction == {"1girl": 1.0, "long_hair": 1.0, "rating:safe": 1.0}
    assert tagger.threshold_applied_by_server and tagger.vocabulary() is None
    [(filename, content_type, data)] = recorder.uploads
    assert filename and filename.endswith(".png") and content_type == "image/png"
    assert np.array_equal(pixels(decode_png(data)), pixels(sample.image))
    httpserver.check()


def test_hydrus_dd_threshold_is_recorded_as_the_servers(httpserver: HTTPServer, demo: Dataset) -> None:
    post = demo.get(1)
    assert post.rating == "s"
    # DeepDanbooru's pre-2022 `rating:safe` stands for general or sensitive.
    answer = [tag for tag in post.tags if not is_rating(tag)] + ["rating:safe"]
    serve_hydrus(httpserver, lambda request, hit: answer)
    tagger = HydrusDDTagger(base_url(httpserver))
    run = TaggerRun(TaggerSettings(TaggerSpec("hydrus-dd", base_url(httpserver)), 0.99, 0.0, "all"), tagger)
    result = run.evaluate(demo, post.id)
    assert result.threshold is None
    # Probability 1.0 beats even a 0.99 threshold (ours does not apply), and `safe` counts as `sensitive`.
    assert (result.score, result.wrong_tags) == (1.0, [])


def test_hydrus_dd_malformed_answer(httpserver: HTTPServer, sample: Sample) -> None:
    serve_hydrus(httpserver, lambda request, hit: {"long_hair": 0.9})
    tagger = HydrusDDTagger(base_url(httpserver))
    with pytest.raises(TaggerServerError, match=r"an object with keys \['long_hair'\]; expected \[\"<tag>\", ...\]"):
        tagger.predict([sample])


# --- registry entries ------------------------------------------------------------------------------------------------


def test_entries_are_registered() -> None:
    assert [(entry.usage, entry.needs_argument) for entry in ENTRIES] == [("webui:URL#MODEL", True),
                                                                          ("hydrus-dd:URL", True)]
    assert all(registry.get_entry(entry.name) is entry for entry in ENTRIES)
    assert all(entry.unavailable_reason() is None for entry in ENTRIES)
    assert (WebuiTagger.default_threshold, WebuiTagger.default_score_floor) == (0.35, REAL_MODEL_SCORE_FLOOR)


@pytest.mark.parametrize(("spec", "complaint"), [
    ("webui:http://127.0.0.1:9", "expected URL#MODEL"),
    ("webui:127.0.0.1:7860#wd14-vit-v2-git", "expected the webui server's http:// or https:// URL with a host"),
    ("hydrus-dd:notaurl", "expected the hydrus-dd server's http:// or https:// URL with a host"),
    ("hydrus-dd:http://:4443", "got 'http://:4443'"),
    ("hydrus-dd:http://127.0.0.1:99999", "got 'http://127.0.0.1:99999'"),
    ("hydrus-dd:ftp://127.0.0.1", "e.g. --tagger=hydrus-dd:http://127.0.0.1:4443"),
    ("hydrus-dd:http://me:s3cret@127.0.0.1:4443", r"^--tagger=hydrus-dd:http://\*\*\*@127.0.0.1:4443: the hydrus-dd "
     r"server's URL carries user:password@ credentials, which would be printed and saved"),
    ("webui:https://me:s3cret@127.0.0.1#m", r"^--tagger=webui:https://\*\*\*@127.0.0.1#m: the webui server's URL "
     "carries"),
])
def test_server_specs_are_checked_when_parsed(spec: str, complaint: str) -> None:
    """(Credentials in a server URL are refused, and never quoted back.)"""
    with pytest.raises(registry.InvalidTaggerSpec, match=complaint):
        registry.parse_specs(spec)


@pytest.mark.parametrize("spec", ["webui:http://127.0.0.1:9", "hydrus-dd:notaurl"])
def test_a_bad_server_spec_is_a_one_line_usage_error(pytester: pytest.Pytester, spec: str) -> None:
    result = pytester.runpytest(f"--tagger={spec}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = [line for line in result.outlines + result.errlines if line.strip()]
    assert len(output) == 1 and output[0].startswith(f"ERROR: --tagger={spec}: expected "), output
    assert "Traceback" not in str(output)


# --- end to end through the plugin ---------------------------------------------------------------------------------


def summary_rows(result: pytest.RunResult) -> dict[str, list[str]]:
    """The summary table's rows by tagger label, split into cells."""
    lines = result.outlines
    start = next(index for index, line in enumerate(lines) if "tagger-eval summary" in line)
    rows = {}
    for line in lines[start + 5 :]:
        if not line or line.startswith(("=", "not run:")):
            break
        rows[line.split()[0]] = line.split()
    return rows


def test_end_to_end_servers_running_demo_pixel(pytester: pytest.Pytester, own_server: HTTPServer) -> None:
    """A webui and a hydrus-dd server that run demo-pixel score exactly like demo-pixel run in-process."""
    demo_pixel = PixelTagger()

    def analyse(image: Image.Image) -> dict[str, float]:
        return demo_pixel.analyse(np.asarray(image.convert("RGB"), dtype=np.float32))

    def webui(request: Request, hit: int) -> dict:
        body = request.get_json()
        assert body["model"] == "demo-pixel"
        return flat_caption(analyse(decode_png(base64.b64decode(body["image"]))), body["threshold"])

    def hydrus(request: Request, hit: int) -> list[str]:
        return sorted(select_tags(analyse(decode_png(request.files["file"].read())), 0.5))

    webui_recorder = serve_webui(own_server, webui, models=["wd14-vit-v2-git", "demo-pixel"])
    hydrus_recorder = Recorder(hydrus)
    own_server.expect_request("/", method="GET").respond_with_data("<form>upload</form>", content_type="text/html")
    own_server.expect_request("/", method="POST").respond_with_handler(hydrus_recorder)
    url = base_url(own_server)

    # In-process, so this process's server thread answers; -x: a broken handler stops the run instead of every post
    # waiting for its retries.
    result = pytester.runpytest(f"--tagger=webui:{url}#demo-pixel,hydrus-dd:{url},demo-pixel", "--threshold=0.5",
                                "--benchmark-disable", "-x")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=3 * 96)
    own_server.check()
    rows = summary_rows(result)
    webui_row, hydrus_row, local = rows[f"webui:{url}#demo-pixel"], rows[f"hydrus-dd:{url}"], rows["demo-pixel"]
    # threshold, posts, mean, median, then (past ms/image) wrong tags, practical, rating err, skip, errors
    same = [1, 2, 3, 4, 6, 7, 8, 11, 12]
    assert [webui_row[i] for i in same] == [local[i] for i in same]
    assert hydrus_row[1] == "server"
    assert [hydrus_row[i] for i in same[1:]] == [local[i] for i in same[1:]]
    assert webui_recorder.hits == hydrus_recorder.hits == 96
    assert float(local[3]) > 0.5, "demo-pixel must score well for the comparison to mean anything"


def test_every_backend_in_one_run(pytester: pytest.Pytester, own_server: HTTPServer, wd14_v3_dir: Path,
                                  tmp_path: Path) -> None:
    """The issue's acceptance run: ONNX and Keras models in process, webui and hydrus-dd servers, one summary."""
    from builders import DD_MODEL_NAME, DD_TAGS, build_deepdanbooru_model, write_deepdanbooru_project

    model_file = tmp_path / DD_MODEL_NAME
    build_deepdanbooru_model(model_file, len(DD_TAGS))
    deepdanbooru_dir = write_deepdanbooru_project(tmp_path / "deepdanbooru", model_file)
    demo_pixel = PixelTagger()

    def analyse(image: Image.Image) -> dict[str, float]:
        return demo_pixel.analyse(np.asarray(image.convert("RGB"), dtype=np.float32))

    serve_webui(own_server, lambda request, hit: flat_caption(analyse(decode_png(base64.b64decode(
        request.get_json()["image"])))), models=["demo-pixel"])
    own_server.expect_request("/", method="GET").respond_with_data("<form>upload</form>", content_type="text/html")
    own_server.expect_request("/", method="POST").respond_with_handler(Recorder(
        lambda request, hit: sorted(select_tags(analyse(decode_png(request.files["file"].read())), 0.5))))
    url = base_url(own_server)
    specs = [f"wd14-onnx:{wd14_v3_dir}", f"deepdanbooru:{deepdanbooru_dir}", f"webui:{url}#demo-pixel",
             f"hydrus-dd:{url}"]

    result = pytester.runpytest(f"--tagger={','.join(specs)}", "--benchmark-disable", "--score-floor=-50",
                                "--execution-provider=cpu", "-x")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=4 * 96)
    rows = summary_rows(result)
    assert set(rows) == set(specs)
    thresholds = {spec: rows[spec][1] for spec in specs}
    assert thresholds == {specs[0]: "0.35/c0.85", specs[1]: "0.50", specs[2]: "0.35", specs[3]: "server"}
    assert all(rows[spec][2] == "96" for spec in specs)
