"""Model files from the Hugging Face hub: looked up in its cache at evaluation time, downloaded only by `fetch`.

Evaluation never touches the network: a model whose files are not cached is reported as unavailable with the
command that fetches it. The hub's own settings apply (`HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`, `HF_ENDPOINT`,
`HF_TOKEN`). A fetch first checks with one quick request that the hub answers at all: `hf_hub_download` would retry
a dead network for about 25 s and then not say which endpoint it tried.

A family of published models (WD today; Camie, PixAI, JoyTag, ML-Danbooru next) declares each model as data, a
`PublishedModel`, and gets its registry entry from `PublishedModel.entry` with the family's build function.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from tagger_eval import __version__
from tagger_eval.config import TaggerOptions
from tagger_eval.taggers.base import Tagger
from tagger_eval.taggers.registry import TaggerEntry
from tagger_eval.taggers.release import unreachable_reason, without_credentials

PROBE_CONNECT_TIMEOUT = 5.0  # seconds to open a connection to the hub before calling it unreachable


class ModelFilesError(Exception):
    """Model files could not be found or fetched; the message says how to get them."""


@dataclass(frozen=True)
class HubFiles:
    """The files one model needs from one hub repository, at a revision (None: the `main` branch)."""

    repo_id: str
    filenames: tuple[str, ...]
    revision: str | None = None

    def cached(self, cache_dir: str | Path | None = None) -> dict[str, Path] | None:
        """Each file's path in the local cache, or None if any is missing."""
        from huggingface_hub import try_to_load_from_cache

        paths = {}
        for filename in self.filenames:
            found = try_to_load_from_cache(self.repo_id, filename, cache_dir=cache_dir, revision=self.revision)
            if not isinstance(found, str):
                return None
            paths[filename] = Path(found)
        return paths

    def missing_message(self, fetch_name: str) -> str:
        revision = f" at revision {self.revision}" if self.revision else ""
        return (
            f"{', '.join(self.filenames)} of {self.repo_id}{revision} not in the Hugging Face cache; "
            f"run `tagger-eval fetch {fetch_name}` where the hub is reachable"
        )

    def download(self, cache_dir: str | Path | None = None, endpoint: str | None = None) -> dict[str, Path]:
        """Fetch every file into the hub cache (a no-op for files already there); errors name the repository and
        the endpoint. An unreachable hub fails at once, unless every file is cached already (then those are used)."""
        from huggingface_hub import constants  # hf_hub_download is imported after the endpoint passed the check

        if constants.HF_HUB_OFFLINE:
            raise ModelFilesError(f"HF_HUB_OFFLINE is set: cannot fetch {self.repo_id}; unset it where the hub is "
                                  "reachable, or copy the files into this machine's Hugging Face cache")
        endpoint, named = (endpoint, without_credentials(endpoint)) if endpoint else hub_endpoint()
        if not _is_http_url(endpoint):
            raise ModelFilesError(f"cannot fetch {self.repo_id}: the hub endpoint {named} is not a valid http(s) "
                                  "URL; set HF_ENDPOINT to one, such as https://huggingface.co, or unset it")
        if (reason := _unreachable(endpoint)) is not None:
            if (cached := self.cached(cache_dir)) is not None:
                return cached
            raise ModelFilesError(
                f"cannot fetch {self.repo_id}: the Hugging Face hub at {named} is unreachable: {reason}; run this "
                "fetch where the hub is reachable and copy that machine's Hugging Face cache into "
                f"{cache_dir or constants.HF_HUB_CACHE}, or set HF_ENDPOINT to a reachable mirror")
        from huggingface_hub import hf_hub_download

        paths = {}
        for filename in self.filenames:
            try:
                paths[filename] = Path(
                    hf_hub_download(self.repo_id, filename, revision=self.revision, cache_dir=cache_dir,
                                    endpoint=endpoint, library_name="tagger-eval",
                                    library_version=__version__)
                )
            except Exception as error:  # the hub raises many kinds (offline, HTTP, missing entry): one message
                # The hub's messages span lines (the CLI prints one) and may quote the endpoint's URL.
                detail = " ".join(str(error).split()).replace(endpoint, without_credentials(endpoint))
                raise ModelFilesError(
                    f"could not fetch {filename} of {self.repo_id} from {named}: {type(error).__name__}: {detail}"
                ) from error
        return paths


def hub_endpoint() -> tuple[str, str]:
    """The hub endpoint in use, and how messages name it (with where it comes from, without credentials).

    `HF_ENDPOINT` is read at every call, as the cache directory is, else the hub library's own default."""
    from huggingface_hub import constants

    configured = os.environ.get("HF_ENDPOINT", "").rstrip("/")
    if configured:
        return configured, f"{without_credentials(configured)} (HF_ENDPOINT)"
    return constants.ENDPOINT, f"{without_credentials(constants.ENDPOINT)} (the default; HF_ENDPOINT changes it)"


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError when out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in url)


def _unreachable(endpoint: str) -> str | None:
    """Why the hub at `endpoint` cannot be reached, or None when it answers at all (any status).

    One request, no retry, bounded by PROBE_CONNECT_TIMEOUT and the hub's own HF_HUB_ETAG_TIMEOUT."""
    import requests
    from huggingface_hub import constants

    from tagger_eval.http_client import make_session

    with make_session(retries=0) as session:
        try:
            session.head(f"{endpoint}/", allow_redirects=False,
                         timeout=(PROBE_CONNECT_TIMEOUT, float(constants.HF_HUB_ETAG_TIMEOUT)))
        except requests.RequestException as error:
            return unreachable_reason(endpoint, error) or f"{type(error).__name__}: {error}"
    return None


@dataclass(frozen=True)
class PublishedModel:
    """One model published on the hub: where its files are and its published defaults, as data.

    `NAME:REVISION` pins a hub commit (`at`), so results are reproducible; None is the hub's `main`.
    """

    name: str
    repo_id: str
    model_file: str
    tags_file: str
    input_size: int
    threshold: float
    character_threshold: float | None = None  # None: characters use the general threshold
    description: str = ""  # what the listing says before the repository and defaults
    revision: str | None = None
    extra_files: tuple[str, ...] = ()  # other files the family reads (thresholds, settings)
    licence: str = ""
    gated: bool = False  # the repository's files need HF_TOKEN and the model's conditions accepted
    min_onnxruntime: tuple[int, int] | None = None  # the oldest onnxruntime that runs the model, where published

    @property
    def files(self) -> HubFiles:
        return HubFiles(self.repo_id, (self.model_file, self.tags_file, *self.extra_files), self.revision)

    @property
    def fetch_name(self) -> str:
        """What `tagger-eval fetch` is given for this model at this revision."""
        return self.name if self.revision is None else f"{self.name}:{self.revision}"

    @property
    def summary(self) -> str:
        """The listing's description: the repository, input size and default thresholds."""
        thresholds = (f"thresholds general {self.threshold}, character {self.character_threshold}"
                      if self.character_threshold is not None else f"threshold {self.threshold}")
        licence = f"; {self.licence}" if self.licence else ""
        details = f"{self.repo_id} ({self.input_size}px; {thresholds}{licence})"
        return f"{self.description}: {details}" if self.description else details

    def at(self, revision: str | None) -> PublishedModel:
        return self if revision is None else replace(self, revision=revision)

    def cached_files(self) -> dict[str, Path]:
        """The model and tag file in the hub cache; ModelFilesError says which command fetches them."""
        paths = self.files.cached()
        if paths is None:
            raise ModelFilesError(self.missing_message())
        return paths

    def missing_message(self) -> str:
        gated = (f"; {self.repo_id} is gated: accept its conditions on the hub and set HF_TOKEN before fetching"
                 if self.gated else "")
        return self.files.missing_message(self.fetch_name) + gated

    def unavailable_reason(self, missing_package: Callable[[], str | None] | None = None) -> str | None:
        """Why the model cannot run here: the family's missing package first, an onnxruntime older than the model
        needs, then files not in the cache."""
        if missing_package is not None and (reason := missing_package()):
            return reason
        if (reason := self.onnxruntime_too_old()) is not None:
            return reason
        return None if self.files.cached() is not None else self.missing_message()

    def onnxruntime_too_old(self) -> str | None:
        """Why the installed onnxruntime cannot run the model (its card names the oldest that can), or None."""
        if self.min_onnxruntime is None:
            return None
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("onnxruntime")
        except PackageNotFoundError:
            return None  # the family's missing-package check names it
        numbers = tuple(int(part) for part in installed.split(".")[:2] if part.isdigit())
        if numbers >= self.min_onnxruntime:
            return None
        needed = ".".join(map(str, self.min_onnxruntime))
        return f"needs onnxruntime >= {needed} (installed: {installed}); pip install -U 'onnxruntime>={needed}'"

    def fetch(self, revision: str | None = None) -> dict[str, Path]:
        return self.at(revision).files.download()

    def read_vocabulary(self, read_tags: Callable[[Mapping[str, Path]], Mapping[str, int]],
                        revision: str | None = None) -> Mapping[str, int]:
        """The cached tag files read with the family's reader (given the cached files by name), without loading
        the weights."""
        return read_tags(self.at(revision).cached_files())

    def entry(
        self,
        build: Callable[[PublishedModel, TaggerOptions], Tagger],
        *,
        missing_package: Callable[[], str | None] | None = None,
        read_tags: Callable[[Mapping[str, Path]], Mapping[str, int]] | None = None,
    ) -> TaggerEntry:
        """The registry entry: `build(model at the revision asked for, options)` makes the tagger; `read_tags` reads
        the cached files (by name) into tag -> category, so the vocabulary is known without loading the weights."""
        return TaggerEntry(
            self.name,
            self.summary,
            lambda revision, options: build(self.at(revision), options),
            accepts_argument=True,
            argument_name="REVISION",
            unavailable_reason=lambda: self.unavailable_reason(missing_package),
            fetch=self.fetch,
            vocabulary=None if read_tags is None else partial(self.read_vocabulary, read_tags),
        )
