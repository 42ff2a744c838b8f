"""Taggers that run in someone else's process, behind HTTP: the stable-diffusion-webui wd14 tagger extension's API
(`webui:URL#MODEL`) and hydrus-dd's server mode (`hydrus-dd:URL`).

Requests go through `tagger_eval.http_client.make_session()` (retries on connection errors, 429 and 5xx, Retry-After
capped) inside `http_client.exchange()`: each attempt as a whole ends within `TaggerOptions.http_timeout`. Whatever
goes wrong is one `TaggerServerError` naming the server and saying what happened (attempts, reached or not) and what
was expected, never quoting the images. A server that was not reached, broke off, timed out or still failed with
429/5xx after the retries is not asked again: later requests fail at once with the same message, so a dead server
costs one timeout per run, not one per image. `requests` is imported only when a tagger is built.
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
from tagger_eval.taggers.base import REAL_MODEL_SCORE_FLOOR, Sample, Tagger, TaggerError
from tagger_eval.taggers.registry import InvalidTaggerSpec, TaggerEntry
from tagger_eval.tags import RATING_PREFIX

if TYPE_CHECKING:
    import requests

    from tagger_eval.http_client import Exchange

# The bare rating names the webui extension reports: WD14's four, and DeepDanbooru's pre-2022 `safe`.
RATING_WORDS = frozenset({"general", "sensitive", "questionable", "explicit", "safe"})
# DeepDanbooru models (behind hydrus-dd, or the webui's DeepDanbooru interrogator) still say `safe` for g or s.
_SAFE_ALIASES = MappingProxyType({"rating:safe": frozenset({"rating:general", "rating:sensitive"})})
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})
_EXCERPT = 200  # characters of a server's error answer quoted in messages
_GIVING_UP = "; no further requests are sent to it in this run"
_WEBUI_EXAMPLE = "--tagger=webui:http://127.0.0.1:7860#wd14-vit-v2-git"
_HYDRUS_EXAMPLE = "--tagger=hydrus-dd:http://127.0.0.1:4443"


class TaggerServerError(TaggerError, RuntimeError):
    """A tagger server is down, too slow, or answered with an HTTP error or something other than its API's JSON."""


def parse_server_url(url: str, tagger: str, example: str = _HYDRUS_EXAMPLE) -> str:
    """An http(s) URL with a host, without its trailing slash; anything else is an `InvalidTaggerSpec` (a
    ValueError) that shows the expected form."""
    text = url.strip()
    parts = urlsplit(text)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number from 1 to 65535
        valid = False
    if not valid or any(character.isspace() for character in text):
        raise InvalidTaggerSpec(f"expected the {tagger} server's http:// or https:// URL with a host name or address "
                                f"(e.g. {example}), got {url!r}")
    if parts.username is not None or parts.password is not None:  # never echo them: the message shows no URL
        raise InvalidTaggerSpec(f"the {tagger} server's URL carries user:password@ credentials, which would be "
                                "printed and saved with the tagger's label; reach the server without them")
    return text.rstrip("/")


def parse_webui_argument(argument: str | None) -> tuple[str, str]:
    """`URL#MODEL` -> (url, model)."""
    url, separator, model = (argument or "").rpartition("#")
    if not separator or not model.strip() or not url.strip():
        raise InvalidTaggerSpec(
            f"expected URL#MODEL, the server's URL and the name of one of its interrogators (e.g. "
            f"{_WEBUI_EXAMPLE}), got {argument!r}; GET URL/tagger/v1/interrogators lists the models it serves"
        )
    return parse_server_url(url, "webui", _WEBUI_EXAMPLE), model.strip()


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
    """A finite number from 0 to 1 (Python's JSON reader also accepts NaN and Infinity)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


def _attempts(trace: Exchange) -> str:
    return f"{trace.attempts} attempt{'' if trace.attempts == 1 else 's'}"


class _ServerTagger(Tagger):
    """What both server taggers share: the URL, the session, the timeout, and turning failures into messages."""

    kind: str  # how messages name the server
    example: str  # a spec that works, for messages
    rating_aliases = _SAFE_ALIASES
    default_score_floor = REAL_MODEL_SCORE_FLOOR

    def __init__(self, url: str, options: TaggerOptions | None = None,
                 session: requests.Session | None = None) -> None:
        self.url = parse_server_url(url, self.kind, self.example)
        self.where = f"the {self.kind} tagger server at {self.url}"
        self.timeout = (options or TaggerOptions()).http_timeout
        self._owns_session = session is None
        self._gave_up: str | None = None  # why the server is not asked again
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
        """One request, with the session's retries and each attempt within the timeout as a whole. A server that
        cannot be reached, breaks off, does not answer in time or still answers 429/5xx after the retries is a
        TaggerServerError, raised again at once, without a request, by every later call."""
        import requests

        from tagger_eval.http_client import RETRY_STATUSES, exchange

        self._refuse_if_given_up()
        url = self.url + path
        with exchange(self.timeout) as trace:
            try:
                response = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except requests.exceptions.RequestException as error:
                self._give_up(self._failure(error, trace, method, url))
        if trace.timed_out:  # the deadline cut the answer short, even if what arrived looked complete
            self._give_up(self._failure(None, trace, method, url))
        if response.status_code in RETRY_STATUSES:
            self._give_up(f"{self.where} answered {method} {url} with HTTP {response.status_code} {response.reason}"
                          f"{self._error_detail(response)} ({_attempts(trace)}{self._retry_after(response, url)})")
        return response

    def _refuse_if_given_up(self) -> None:
        """Raised from a frame of its own: pytest prints the innermost frame's arguments, here never the image."""
        if self._gave_up is not None:
            raise TaggerServerError(self._gave_up)

    def _give_up(self, message: str) -> NoReturn:
        self._gave_up = message + _GIVING_UP
        raise TaggerServerError(self._gave_up) from None  # the chain adds nothing the message lacks

    def _failure(self, error: requests.RequestException | None, trace: Exchange, method: str, url: str) -> str:
        """What happened to a request that got no usable answer, in words: reached or not, attempts, the cause."""
        from tagger_eval.http_client import why_failed

        why, reason = why_failed(error, trace)
        if why == "timeout":
            return (f"{self.where} did not answer {method} {url} in full within {self.timeout:g} s "
                    f"({_attempts(trace)}); raise the limit with --http-timeout=SECONDS")
        if why == "unreachable":
            return f"cannot reach {self.where}: {method} {url} could not connect ({_attempts(trace)}): {reason}"
        if why == "broken off":
            return f"{self.where} broke off {method} {url} after the connection was made ({_attempts(trace)}): {reason}"
        return f"{method} {url} to {self.where} failed: {type(reason).__name__}: {reason}"

    def _retry_after(self, response: requests.Response, url: str) -> str:
        """The wait the server asked for, when it asked, and whether it was more than the session waits."""
        from tagger_eval.http_client import RETRY_AFTER_MAX, retry_after_seconds

        asked = retry_after_seconds(response.headers.get("Retry-After"))
        if asked is None:
            return ""
        cap = getattr(getattr(self.session.get_adapter(url), "max_retries", None), "retry_after_max", RETRY_AFTER_MAX)
        return f"; it asked to wait {asked:g} s before retrying" + (
            f", more than the {cap:g} s this suite waits at most" if asked > cap else "")

    def _decode(self, response: requests.Response, method: str, expected: str) -> Any:
        if response.status_code >= 400:
            raise TaggerServerError(
                f"{self.where} answered {method} {response.url} with HTTP {response.status_code} {response.reason}"
                f"{self._error_detail(response)}"
            )
        try:
            return json.loads(response.content)
        except ValueError:
            content_type = response.headers.get("Content-Type", "no content type")
            excerpt = response.text[:_EXCERPT].strip()
            raise TaggerServerError(
                f"{self.where} answered {method} {response.url} with something that is not JSON ({content_type}, "
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
    example = _WEBUI_EXAMPLE
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
            raise TaggerServerError(f"{self.where} answered GET {self.url}{self.MODELS_PATH} with {_describe(answer)}; "
                                    f"expected {expected}")
        return models

    def check_model(self) -> None:
        models = self.served_models()
        if self.model not in models:
            served = ", ".join(models) if models else "none"
            raise TaggerServerError(f"{self.where} does not serve the model {self.model!r}; the models it serves: "
                                    f"{served}")

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
                self._malformed(answer, f"the probability of {name!r} is {_describe(p)}, not a number from 0 to 1")
        probabilities.update((name, float(p)) for name, p in tags.items())
        for name, p in ratings.items():
            probabilities[name if name.startswith(RATING_PREFIX) else RATING_PREFIX + name] = float(p)
        return probabilities

    def _malformed(self, answer: Any, problem: str | None = None) -> NoReturn:
        raise TaggerServerError(
            f"{self.where} answered POST {self.url}{self.INTERROGATE_PATH} with "
            f"{problem or _describe(answer)}; expected {self.EXPECTED_CAPTION}"
        )


class HydrusDDTagger(_ServerTagger):
    """hydrus-dd's server mode (DeepDanbooru): `hydrus-dd:URL`, answering tag names only.

    The server thresholds (its own default is 0.5), so each tag it names counts as probability 1.0 and our
    threshold does not apply; the summary shows `server` as the threshold.
    """

    name = "hydrus-dd"
    kind = "hydrus-dd"
    example = _HYDRUS_EXAMPLE
    threshold_applied_by_server = True
    EXPECTED = '["<tag>", ...] (a JSON list of tag names)'

    def __init__(self, url: str, options: TaggerOptions | None = None,
                 session: requests.Session | None = None) -> None:
        super().__init__(url, options, session)
        try:
            # There is nothing to list (GET / is its upload form), but a server that is down should fail once here,
            # not once per image; any answer but 429 or 5xx will do.
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
            raise TaggerServerError(f"{self.where} answered POST {self.url}/ with {_describe(answer)}; "
                                    f"expected {self.EXPECTED}")
        return dict.fromkeys(answer, 1.0)


def _webui(argument: str | None, options: TaggerOptions) -> WebuiTagger:
    url, model = parse_webui_argument(argument)
    return WebuiTagger(url, model, options)


def _hydrus_dd(argument: str | None, options: TaggerOptions) -> HydrusDDTagger:
    return HydrusDDTagger(argument or "", options)


def _check_webui(argument: str | None) -> None:
    parse_webui_argument(argument)


def _check_hydrus_dd(argument: str | None) -> None:
    parse_server_url(argument or "", "hydrus-dd")


ENTRIES: list[TaggerEntry] = [
    TaggerEntry(
        "webui",
        "a stable-diffusion-webui wd14 tagger extension server: webui:URL#MODEL "
        "(e.g. webui:http://127.0.0.1:7860#wd14-vit-v2-git)",
        _webui,
        needs_argument=True,
        argument_name="URL#MODEL",
        check_argument=_check_webui,
    ),
    TaggerEntry(
        "hydrus-dd",
        "a hydrus-dd (DeepDanbooru) server: hydrus-dd:URL (e.g. hydrus-dd:http://127.0.0.1:4443); "
        "it applies its own threshold",
        _hydrus_dd,
        needs_argument=True,
        argument_name="URL",
        check_argument=_check_hydrus_dd,
    ),
]
