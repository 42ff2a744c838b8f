"""Taggers that run in someone else's process, behind HTTP: the stable-diffusion-webui wd14 tagger extension's API
(`webui:URL#MODEL`) and hydrus-dd's server mode (`hydrus-dd:URL`).

Every request goes through `tagger_eval.http_client.make_session()` (retries with backoff on connection errors, 429
and 5xx, Retry-After honoured) with `TaggerOptions.http_timeout` as its timeout. Whatever goes wrong ends in one
`TaggerServerError` that names the server and says what was expected; request bodies (the images) never appear in
it. `requests` is imported only when a tagger is built, so importing this module (the registry does) stays cheap and
works without the `http` extra.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from PIL import Image

from tagger_eval.config import TaggerOptions
from tagger_eval.taggers.base import REAL_MODEL_SCORE_FLOOR, Sample, Tagger
from tagger_eval.taggers.registry import TaggerEntry
from tagger_eval.tags import RATING_PREFIX

if TYPE_CHECKING:
    import requests

# The bare rating names the webui extension reports: WD14's four, and DeepDanbooru's pre-2022 `safe`.
RATING_WORDS = frozenset({"general", "sensitive", "questionable", "explicit", "safe"})
# DeepDanbooru models (behind hydrus-dd, or the webui's DeepDanbooru interrogator) still say `safe` for g or s.
_SAFE_ALIASES = MappingProxyType({"rating:safe": frozenset({"rating:general", "rating:sensitive"})})
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})
_EXCERPT = 200  # characters of a server's error answer quoted in messages


class TaggerServerError(RuntimeError):
    """A tagger server is down, too slow, or answered with an HTTP error or something other than its API's JSON."""


def parse_server_url(url: str, tagger: str) -> str:
    """An http(s) URL without its trailing slash; anything else is a clear error."""
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{tagger}: expected an http:// or https:// URL of the tagger server, got {url!r}")
    return text.rstrip("/")


def parse_webui_argument(argument: str | None) -> tuple[str, str]:
    """`URL#MODEL` -> (url, model)."""
    example = "e.g. --tagger=webui:http://127.0.0.1:7860#wd14-vit-v2-git"
    url, separator, model = (argument or "").rpartition("#")
    if not separator or not model.strip() or not url.strip():
        raise ValueError(
            f"webui: expected URL#MODEL, the server's URL and the name of one of its interrogators ({example}), "
            f"got {argument!r}; GET URL/tagger/v1/interrogators lists the models the server serves"
        )
    return parse_server_url(url, "webui"), model.strip()


def encode_png(image: Image.Image) -> bytes:
    """The image as PNG, which is lossless: the server decodes exactly the pixels we were given."""
    if image.mode not in _PNG_MODES:
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast; the level changes the size, never the pixels
    return buffer.getvalue()


def _describe(value: Any) -> str:
    """A short description of a JSON value for error messages (never the whole value: it may be huge)."""
    if isinstance(value, dict):
        keys = list(value)
        shown = ", ".join(repr(key) for key in keys[:8]) + (", ..." if len(keys) > 8 else "")
        return f"an object with keys [{shown}]"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    return f"{type(value).__name__} {str(value)[:_EXCERPT]!r}"


def _is_probability(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


class _ServerTagger(Tagger):
    """What both server taggers share: the URL, the session, the timeout, and turning failures into messages."""

    kind: str  # how messages name the server
    rating_aliases = _SAFE_ALIASES
    default_score_floor = REAL_MODEL_SCORE_FLOOR

    def __init__(self, url: str, options: TaggerOptions | None = None,
                 session: requests.Session | None = None) -> None:
        self.url = parse_server_url(url, self.kind)
        self.timeout = (options or TaggerOptions()).http_timeout
        self._owns_session = session is None
        if session is None:
            from tagger_eval.http_client import make_session

            # A read timeout means a hung server: retrying it would multiply the wait per image, so only
            # connection errors and 429/5xx answers are retried.
            session = make_session(read_retries=0)
        self.session = session

    def identity(self) -> dict[str, str]:
        model = getattr(self, "model", None)
        return {**super().identity(), "url": self.url, **({"model": model} if model else {})}

    def vocabulary(self) -> Mapping[str, int] | None:
        return None  # open: the server's model is unknown to us

    def close(self) -> None:
        if self._owns_session:
            self.session.close()

    def request(self, method: str, path: str, expected: str, **kwargs: Any) -> Any:
        """The decoded JSON answer to one request; `expected` describes it for the error messages."""
        return self._decode(self.send(method, path, **kwargs), method, expected)

    def send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request (with the session's retries); connection failures and timeouts become TaggerServerError."""
        import requests
        from urllib3.exceptions import MaxRetryError, ReadTimeoutError

        url = self.url + path
        where = f"the {self.kind} tagger server at {self.url}"
        try:
            return self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.exceptions.RequestException as error:
            # With retries configured, urllib3 wraps the last failure in MaxRetryError and requests reports most of
            # them as ConnectionError: dig out the real reason.
            reason: BaseException = error
            if error.args and isinstance(error.args[0], MaxRetryError) and error.args[0].reason is not None:
                reason = error.args[0].reason
            retries = getattr(getattr(self.session.get_adapter(url), "max_retries", None), "total", None)
            after = f" after {retries} retries" if retries else ""
            if isinstance(error, requests.exceptions.Timeout) or isinstance(reason, (ReadTimeoutError, TimeoutError)):
                message = (f"{where} did not answer {method} {url} within {self.timeout:g} s{after} "
                           "(raise it with --http-timeout=SECONDS)")
            elif isinstance(error, requests.exceptions.ConnectionError):
                message = f"cannot reach {where}: {method} {url} failed{after}: {reason}"
            else:
                message = f"{method} {url} to {where} failed: {reason}"
            raise TaggerServerError(message) from None  # the chain adds nothing the message lacks

    def _decode(self, response: requests.Response, method: str, expected: str) -> Any:
        where = f"the {self.kind} tagger server at {self.url}"
        if response.status_code >= 400:
            raise TaggerServerError(
                f"{where} answered {method} {response.url} with HTTP {response.status_code} {response.reason}"
                f"{self._error_detail(response)}"
            )
        try:
            return json.loads(response.content)
        except ValueError:
            content_type = response.headers.get("Content-Type", "no content type")
            excerpt = response.text[:_EXCERPT].strip()
            raise TaggerServerError(
                f"{where} answered {method} {response.url} with something that is not JSON ({content_type}, "
                f"{len(response.content)} bytes{f': {excerpt!r}' if excerpt else ''}); expected {expected}"
            ) from None

    @staticmethod
    def _error_detail(response: requests.Response) -> str:
        """The server's own explanation, when it is short text; structured details may echo the request (FastAPI's
        422 lists the invalid input), so only a string `detail`/`error`/`message` is quoted."""
        try:
            body = json.loads(response.content)
        except ValueError:
            content_type = response.headers.get("Content-Type", "")
            text = " ".join(response.text[:_EXCERPT].split()) if content_type.startswith("text/") else ""
            return f": {text!r}" if text else ""
        if isinstance(body, dict):
            for key in ("detail", "error", "message"):
                if isinstance(body.get(key), str):
                    return f": {body[key][:_EXCERPT]!r}"
        return ""


class WebuiTagger(_ServerTagger):
    """The stable-diffusion-webui wd14 tagger extension (toriato's, and the forks): `webui:URL#MODEL`.

    The server is asked for every tag (`request_threshold`); the session applies our own threshold afterwards, so
    a server-side model is thresholded exactly like a local one.
    """

    name = "webui"
    kind = "webui"
    default_threshold = 0.35  # the WD14 family's default
    request_threshold = 0.0  # the original extension keeps tags with probability >= this: all of them
    MODELS_PATH = "/tagger/v1/interrogators"
    INTERROGATE_PATH = "/tagger/v1/interrogate"
    EXPECTED_CAPTION = (
        '{"caption": {"<tag>": probability, ..., "general": p, "sensitive": p, "questionable": p, "explicit": p}} '
        'or {"caption": {"tag": {"<tag>": probability, ...}, "rating": {"<rating>": probability, ...}}}'
    )

    def __init__(self, url: str, model: str, options: TaggerOptions | None = None,
                 session: requests.Session | None = None) -> None:
        super().__init__(url, options, session)
        self.model = model
        try:
            self.check_model()
        except BaseException:
            self.close()
            raise

    def served_models(self) -> list[str]:
        expected = '{"models": ["<name>", ...]}'
        answer = self.request("GET", self.MODELS_PATH, expected)
        models = answer.get("models") if isinstance(answer, dict) else None
        if not isinstance(models, list) or not all(isinstance(model, str) for model in models):
            raise TaggerServerError(
                f"the webui tagger server at {self.url} answered GET {self.url}{self.MODELS_PATH} with "
                f"{_describe(answer)}; expected {expected}"
            )
        return models

    def check_model(self) -> None:
        models = self.served_models()
        if self.model not in models:
            served = ", ".join(models) if models else "none"
            raise TaggerServerError(
                f"the webui tagger server at {self.url} does not serve the model {self.model!r}; "
                f"the models it serves: {served}"
            )

    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        return [self.interrogate(sample.image) for sample in samples]  # the API takes one image per request

    def interrogate(self, image: Image.Image) -> dict[str, float]:
        body = {
            "image": base64.b64encode(encode_png(image)).decode("ascii"),
            "model": self.model,
            "threshold": self.request_threshold,
        }
        answer = self.request("POST", self.INTERROGATE_PATH, self.EXPECTED_CAPTION, json=body)
        return self.parse_caption(answer)

    def parse_caption(self, answer: Any) -> dict[str, float]:
        """Both response shapes in use, as `{tag: probability}` with the ratings as `rating:<name>`.

        Original: one flat object where the bare rating words are the ratings (a tag spelled like a rating word
        cannot be told apart, and counts as the rating). Later forks: `tag` and `rating` objects side by side.
        """
        caption = answer.get("caption") if isinstance(answer, dict) else None
        if not isinstance(caption, dict):
            self._malformed(answer)
        if isinstance(caption.get("tag"), dict) and isinstance(caption.get("rating"), dict):
            tags, ratings = caption["tag"], caption["rating"]
        else:
            tags = {name: p for name, p in caption.items() if name not in RATING_WORDS}
            ratings = {name: p for name, p in caption.items() if name in RATING_WORDS}
        probabilities: dict[str, float] = {}
        for name, p in [*tags.items(), *ratings.items()]:
            if not _is_probability(p):
                self._malformed(answer, f"the probability of {name!r} is {_describe(p)}")
        probabilities.update((name, float(p)) for name, p in tags.items())
        for name, p in ratings.items():
            probabilities[name if name.startswith(RATING_PREFIX) else RATING_PREFIX + name] = float(p)
        return probabilities

    def _malformed(self, answer: Any, problem: str | None = None) -> NoReturn:
        raise TaggerServerError(
            f"the webui tagger server at {self.url} answered POST {self.url}{self.INTERROGATE_PATH} with "
            f"{problem or _describe(answer)}; expected {self.EXPECTED_CAPTION}"
        )


class HydrusDDTagger(_ServerTagger):
    """hydrus-dd's server mode (DeepDanbooru): `hydrus-dd:URL`, answering tag names only.

    The server thresholds (its own default is 0.5), so each tag it names counts as probability 1.0 and our
    threshold does not apply; the summary shows `server` as the threshold.
    """

    name = "hydrus-dd"
    kind = "hydrus-dd"
    threshold_applied_by_server = True
    EXPECTED = '["<tag>", ...] (a JSON list of tag names)'

    def __init__(self, url: str, options: TaggerOptions | None = None,
                 session: requests.Session | None = None) -> None:
        super().__init__(url, options, session)
        try:
            # There is nothing to list (GET / is its upload form), but a server that is down should fail once here,
            # not once per image; any HTTP answer will do.
            self.send("GET", "/")
        except BaseException:
            self.close()
            raise

    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        return [self.evaluate(sample.image) for sample in samples]

    def evaluate(self, image: Image.Image) -> dict[str, float]:
        # hydrus-dd accepts uploads by their file name's extension: keep `.png`.
        files = {"file": ("image.png", encode_png(image), "image/png")}
        answer = self.request("POST", "/", self.EXPECTED, files=files)
        if not isinstance(answer, list) or not all(isinstance(tag, str) for tag in answer):
            raise TaggerServerError(
                f"the hydrus-dd tagger server at {self.url} answered POST {self.url}/ with {_describe(answer)}; "
                f"expected {self.EXPECTED}"
            )
        return dict.fromkeys(answer, 1.0)


def _webui(argument: str | None, options: TaggerOptions) -> WebuiTagger:
    url, model = parse_webui_argument(argument)
    return WebuiTagger(url, model, options)


def _hydrus_dd(argument: str | None, options: TaggerOptions) -> HydrusDDTagger:
    return HydrusDDTagger(parse_server_url(argument or "", "hydrus-dd"), options)


ENTRIES: list[TaggerEntry] = [
    TaggerEntry(
        "webui",
        "a stable-diffusion-webui wd14 tagger extension server: webui:URL#MODEL "
        "(e.g. webui:http://127.0.0.1:7860#wd14-vit-v2-git)",
        _webui,
        needs_argument=True,
    ),
    TaggerEntry(
        "hydrus-dd",
        "a hydrus-dd (DeepDanbooru) server: hydrus-dd:URL (e.g. hydrus-dd:http://127.0.0.1:4443); "
        "it applies its own threshold",
        _hydrus_dd,
        needs_argument=True,
    ),
]
