"""Model releases published as zip files: downloaded into a cache directory and extracted safely.

A release is either fully there or not there at all: the zip is streamed to a temporary file beside the target,
extracted into a temporary directory beside it, checked by the caller (`verify`), and only then renamed into place.
An interrupted, failed or unverified fetch leaves no partial target and no temporary file, and an older complete copy
stays untouched until the new one has passed.

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
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:  # requests is imported when a download starts: importing this module stays cheap
    import requests

CACHE_ENV = "TAGGER_EVAL_CACHE"
DEFAULT_TIMEOUT = (10.0, 60.0)  # seconds: (connect, between two reads of the body)
# The whole download at most: a server trickling bytes just inside the read timeout would otherwise never end. An
# hour holds 1.5 GB at 0.5 MB/s.
DEFAULT_DEADLINE = 3600.0
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
    verify: Callable[[Path], str | None] | None = None,
    deadline: float = DEFAULT_DEADLINE,
) -> Path:
    """Download the zip at `url` and extract it as `target_dir`, replacing any previous copy only on success.

    `max_bytes` bounds the download (the announced Content-Length and the bytes actually received);
    `max_extracted_bytes` bounds the sum of the members' uncompressed sizes (default: 4 x `max_bytes`).
    `verify(extracted_dir)` returns None when the extracted release is usable, else why not: it runs before the swap,
    so a bad release never replaces a working copy. Each attempt of the download ends at `deadline` seconds. Raises
    `ReleaseError` for every failure, naming the URL.
    """
    from tagger_eval.http_client import exchange, make_session

    where = without_credentials(url)
    target = Path(target_dir).expanduser().absolute()
    limit = 4 * max_bytes if max_extracted_bytes is None else max_extracted_bytes
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, part_name = tempfile.mkstemp(prefix=f".{target.name}-", suffix=".zip.part", dir=target.parent)
    part = Path(part_name)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".extracting", dir=target.parent))
    try:
        with os.fdopen(descriptor, "wb") as stream:
            with exchange(deadline) as trace:
                try:
                    _download(url, where, stream, max_bytes, session or make_session(), timeout)
                except ReleaseError:
                    if not trace.timed_out:
                        raise
            if trace.timed_out:
                raise ReleaseError(f"downloading {where} did not finish within {deadline:g} s; {target} was left "
                                   "as it was")
        extract_zip(part, staging, max_extracted_bytes=limit, source=where)
        if verify is not None and (problem := verify(staging)) is not None:
            raise ReleaseError(f"{where}: {problem}; {target} was left as it was")
        _replace_directory(staging, target)
    finally:
        part.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful swap
    return target


def without_credentials(url: str) -> str:
    """`url` without any `user:password@`, for messages: a credential in a URL never reaches the output."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])) if "@" in parts.netloc else url


def _causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and what caused it, through urllib3's `MaxRetryError.reason` and Python's exception chaining."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        current = reason if isinstance(reason, BaseException) else current.__cause__ or current.__context__


def unreachable_reason(url: str, error: BaseException) -> str | None:
    """Why no connection to `url`'s host could be made, in words (host unknown, refused, no answer), or None when
    `error` happened after connecting. Offline, this is the one line a user needs instead of a urllib3 repr."""
    from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

    parts = urlsplit(url)
    host = parts.hostname or url
    for cause in _causes(error):
        if isinstance(cause, NameResolutionError):
            return f"the host {host} could not be resolved (no network, or a wrong host name)"
        if isinstance(cause, NewConnectionError):
            detail = getattr(cause.__cause__, "strerror", None) or "connection failed"
            return f"could not connect to {parts.netloc.rpartition('@')[2]}: {detail.lower()}"
        if isinstance(cause, ConnectTimeoutError):
            return f"{host} did not accept a connection in time (no network, or a firewall)"
    return None


def _download(
    url: str, where: str, stream: BinaryIO, max_bytes: int, session: requests.Session,
    timeout: float | tuple[float, float],
) -> None:
    import requests

    try:
        with session.get(url, stream=True, timeout=timeout) as response:
            if response.status_code != 200:
                raise ReleaseError(f"downloading {where} failed: HTTP {response.status_code} {response.reason or ''}"
                                   .rstrip())
            announced = response.headers.get("Content-Length")
            expected: int | None = None
            if announced is not None:
                try:
                    expected = int(announced)
                except ValueError:
                    raise ReleaseError(f"downloading {where} failed: invalid Content-Length {announced!r}") from None
                if expected > max_bytes:
                    raise ReleaseError(f"{where} is {expected} bytes, more than the limit of {max_bytes} bytes; "
                                       "refusing to download it")
            received = 0
            for chunk in response.iter_content(CHUNK_SIZE):
                received += len(chunk)
                if received > max_bytes:
                    raise ReleaseError(f"{where} sent more than the limit of {max_bytes} bytes; download aborted")
                stream.write(chunk)
            # Without a content encoding the body is the file itself, so its length must match the announced one.
            if expected is not None and not response.headers.get("Content-Encoding") and received != expected:
                raise ReleaseError(f"downloading {where} failed: received {received} of {expected} bytes "
                                   "(the connection was cut)")
    except requests.RequestException as error:
        detail = unreachable_reason(url, error) or f"{type(error).__name__}: {error}"
        raise ReleaseError(f"downloading {where} failed: {detail}") from error


def extract_zip(
    archive: str | Path, target: str | Path, *, max_extracted_bytes: int, source: str | None = None
) -> None:
    """Extract `archive` into the existing directory `target` after checking every member (see the module doc).

    All or nothing: the members are written into a staging directory inside `target` and moved into place only when
    every one was read in full and passed its CRC check; after any error nothing of the archive is left in `target`.
    `source` (the URL) is named in the messages.
    """
    where = source or str(archive)
    root = Path(target).resolve()
    staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=root))
    try:
        with zipfile.ZipFile(archive) as bundle:
            tops = _checked_top_names(bundle.infolist(), root, where, max_extracted_bytes)
            _write_members(bundle, staging, where)
        for name in tops:
            os.replace(staging / name, root / name)
    except zipfile.BadZipFile as error:  # a CRC mismatch too
        raise ReleaseError(f"{where} is not a valid zip file: {error}") from error
    except (zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError) as error:
        # Unsupported compression, encrypted members, a truncated member.
        raise ReleaseError(f"{where}: cannot extract the archive: {error}") from error
    except OSError as error:  # disk full, no permission: named, without a traceback
        raise ReleaseError(f"{where}: cannot extract the archive into {root}: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _checked_top_names(members: list[zipfile.ZipInfo], root: Path, where: str, limit: int) -> list[str]:
    """Check every member and the total size; the archive's top-level names, none of which may exist in `root`."""
    for info in members:
        _check_member(info, root, where)
    total = sum(info.file_size for info in members)
    if total > limit:
        raise ReleaseError(f"{where} would extract to {total} bytes, more than the limit of {limit} bytes; "
                           "refusing to extract it")
    tops = list(dict.fromkeys(_parts(info.filename)[0] for info in members))
    for name in tops:
        if os.path.lexists(root / name):
            raise ReleaseError(f"{where}: member {name!r} already exists in {root}; extract into an empty directory")
    return tops


def _write_members(bundle: zipfile.ZipFile, staging: Path, where: str) -> None:
    for info in bundle.infolist():
        destination = staging.joinpath(*_parts(info.filename))
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
