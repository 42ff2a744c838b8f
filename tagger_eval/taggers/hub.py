"""Model files from the Hugging Face hub: looked up in its cache at evaluation time, downloaded only by `fetch`.

Evaluation never touches the network: a model whose files are not cached is reported as unavailable with the
command that fetches it. The hub's own settings apply (`HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`, `HF_ENDPOINT`,
`HF_TOKEN`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tagger_eval import __version__


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

    def require_cached(self, fetch_name: str, cache_dir: str | Path | None = None) -> dict[str, Path]:
        paths = self.cached(cache_dir)
        if paths is None:
            raise ModelFilesError(self.missing_message(fetch_name))
        return paths

    def missing_message(self, fetch_name: str) -> str:
        revision = f" at revision {self.revision}" if self.revision else ""
        return (
            f"{', '.join(self.filenames)} of {self.repo_id}{revision} not in the Hugging Face cache; "
            f"run `tagger-eval fetch {fetch_name}` where the hub is reachable"
        )

    def download(self, cache_dir: str | Path | None = None, endpoint: str | None = None) -> dict[str, Path]:
        """Fetch every file into the hub cache (a no-op for files already there); errors name the repository."""
        from huggingface_hub import constants, hf_hub_download

        if constants.HF_HUB_OFFLINE:
            raise ModelFilesError(f"HF_HUB_OFFLINE is set: cannot fetch {self.repo_id}; unset it where the hub is "
                                  "reachable, or copy the files into this machine's Hugging Face cache")
        paths = {}
        for filename in self.filenames:
            try:
                paths[filename] = Path(
                    hf_hub_download(self.repo_id, filename, revision=self.revision, cache_dir=cache_dir,
                                    endpoint=endpoint, library_name="tagger-eval",
                                    library_version=__version__)
                )
            except Exception as error:  # the hub raises many kinds (offline, HTTP, missing entry): one message
                raise ModelFilesError(
                    f"could not fetch {filename} of {self.repo_id}: {type(error).__name__}: {error}"
                ) from error
        return paths
