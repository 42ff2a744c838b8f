"""Model releases published as zip files: downloaded into a cache directory and extracted safely.

A release is either fully there or not there at all: the zip is streamed to a temporary file beside the target,
extracted into a temporary directory beside it, and only then renamed into place. An interrupted or failed fetch
leaves no partial target (and an older complete copy stays until the new one is ready).

Extraction trusts nothing in the archive: absolute member paths, `..` components, paths that resolve outside the
target, symbolic links and other special files are refused, and the total uncompressed size is checked against a
limit before anything is written (a zip bomb is refused up front).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # requests is imported when a download starts: importing this module stays cheap
    import requests

CACHE_ENV = "TAGGER_EVAL_CACHE"
DEFAULT_TIMEOUT = (10.0, 60.0)  # seconds: (connect, between two reads of the body)
CHUNK_SIZE = 1 << 20


class ReleaseError(Exception):
    """A release could not be downloaded or extracted; the message names the URL or the offending member."""


def cache_dir() -> Path:
    """Where downloaded models live: `$TAGGER_EVAL_CACHE`, else `~/.cache/tagger-eval` (read at every call)."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "tagger-eval"


def fetch_release_zip(
    url: str,
    target_dir: str | Path,
    *,
    max_bytes: int,
    max_extracted_bytes: int | None = None,
    session: requests.Session | None = None,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
) -> Path:
    """Download the zip at `url` and extract it as `target_dir`, replacing any previous copy only on success.

    `max_bytes` bounds the download (the announced Content-Length and the bytes actually received);
    `max_extracted_bytes` bounds the sum of the members' uncompressed sizes (default: 4 x `max_bytes`).
    Raises `ReleaseError` for every failure, with the URL or the member in the message.
    """
    from tagger_eval.http_client import make_session

    target = Path(target_dir).expanduser().absolute()
    limit = 4 * max_bytes if max_extracted_bytes is None else max_extracted_bytes
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, part_name = tempfile.mkstemp(prefix=f".{target.name}-", suffix=".zip.part", dir=target.parent)
    part = Path(part_name)
    staging: Path | None = None
    try:
        with os.fdopen(descriptor, "wb") as stream:
            _download(url, stream, max_bytes, session or make_session(), timeout)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".extracting", dir=target.parent))
        extract_zip(part, staging, max_extracted_bytes=limit, source=url)
        _replace_directory(staging, target)
        staging = None
    finally:
        part.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _download(
    url: str, stream: BinaryIO, max_bytes: int, session: requests.Session, timeout: float | tuple[float, float]
) -> None:
    import requests

    try:
        with session.get(url, stream=True, timeout=timeout) as response:
            if response.status_code != 200:
                raise ReleaseError(f"downloading {url} failed: HTTP {response.status_code} {response.reason or ''}"
                                   .rstrip())
            announced = response.headers.get("Content-Length")
            expected: int | None = None
            if announced is not None:
                try:
                    expected = int(announced)
                except ValueError:
                    raise ReleaseError(f"downloading {url} failed: invalid Content-Length {announced!r}") from None
                if expected > max_bytes:
                    raise ReleaseError(f"{url} is {expected} bytes, more than the limit of {max_bytes} bytes; "
                                       "refusing to download it")
            received = 0
            for chunk in response.iter_content(CHUNK_SIZE):
                received += len(chunk)
                if received > max_bytes:
                    raise ReleaseError(f"{url} sent more than the limit of {max_bytes} bytes; download aborted")
                stream.write(chunk)
            # Without a content encoding the body is the file itself, so its length must match the announced one.
            if expected is not None and not response.headers.get("Content-Encoding") and received != expected:
                raise ReleaseError(f"downloading {url} failed: received {received} of {expected} bytes "
                                   "(the connection was cut)")
    except requests.RequestException as error:
        raise ReleaseError(f"downloading {url} failed: {type(error).__name__}: {error}") from error


def extract_zip(
    archive: str | Path, target: str | Path, *, max_extracted_bytes: int, source: str | None = None
) -> None:
    """Extract `archive` into the existing directory `target` after checking every member (see the module doc).

    Nothing is written unless every member passes. `source` (the URL) is named in the messages.
    """
    where = source or str(archive)
    root = Path(target).resolve()
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            for info in members:
                _check_member(info, root, where)
            total = sum(info.file_size for info in members)
            if total > max_extracted_bytes:
                raise ReleaseError(f"{where} would extract to {total} bytes, more than the limit of "
                                   f"{max_extracted_bytes} bytes; refusing to extract it")
            for info in members:
                destination = root.joinpath(*_parts(info.filename))
                if info.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                try:
                    # "xb": never overwrite (a duplicate member) and never follow a link already there.
                    with bundle.open(info) as source_stream, open(destination, "xb") as out:
                        shutil.copyfileobj(source_stream, out, CHUNK_SIZE)
                except FileExistsError:
                    raise ReleaseError(f"{where}: member {info.filename!r} appears twice in the archive") from None
    except zipfile.BadZipFile as error:
        raise ReleaseError(f"{where} is not a valid zip file: {error}") from error
    except (zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError) as error:
        # Unsupported compression, encrypted members, a CRC mismatch (zipfile raises BadZipFile for that too).
        raise ReleaseError(f"{where}: cannot extract the archive: {error}") from error


def _parts(name: str) -> list[str]:
    """A member name's path components; zip names use `/`, but a `\\` is treated as a separator too."""
    return [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]


def _check_member(info: zipfile.ZipInfo, root: Path, where: str) -> None:
    name = info.filename
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or PurePosixPath(normalised).is_absolute() or PureWindowsPath(name).drive:
        raise ReleaseError(f"{where}: refusing member {name!r}: absolute path")
    parts = _parts(name)
    if ".." in parts:
        raise ReleaseError(f"{where}: refusing member {name!r}: the path contains '..'")
    if not parts:
        raise ReleaseError(f"{where}: refusing member {name!r}: empty path")
    if not root.joinpath(*parts).resolve().is_relative_to(root):
        raise ReleaseError(f"{where}: refusing member {name!r}: it would be written outside {root}")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ReleaseError(f"{where}: refusing member {name!r}: symbolic links are not extracted")
    file_type = stat.S_IFMT(mode)
    if file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
        raise ReleaseError(f"{where}: refusing member {name!r}: not a regular file or directory")
    if info.flag_bits & 0x1:
        raise ReleaseError(f"{where}: refusing member {name!r}: it is encrypted")


def _replace_directory(new: Path, target: Path) -> None:
    """Rename `new` to `target`; an existing target is moved aside first and removed once `new` is in place."""
    if not target.exists() and not target.is_symlink():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".old", dir=target.parent))
    old.rmdir()
    os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        os.replace(old, target)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
