"""`tagger_eval.taggers.release`: zip releases fetched from a real local HTTP server and extracted safely."""

from __future__ import annotations

import io
import re
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug import Request, Response

from tagger_eval.http_client import make_session
from tagger_eval.taggers.deepdanbooru import ENTRIES, fetch_v3, v3_dir
from tagger_eval.taggers.release import ReleaseError, cache_dir, extract_zip, fetch_release_zip

# The placeholder model files are no real models: a fetch says it could not convert them, and keeps the release.
PLACEHOLDER_MODEL = "deepdanbooru-v3 was fetched but cannot be loaded"
PROJECT = {
    "tags.txt": b"1girl\nrating:safe\nrating:questionable\nrating:explicit\n",
    "project.json": b'{"image_width": 512, "image_height": 512, "model": "resnet_custom_v3"}',
    "model-resnet_custom_v3.h5": bytes(range(256)) * 64,
}
MAX = 1 << 20


def make_zip(members: dict[str, bytes] | None = None, *, symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in (PROJECT if members is None else members).items():
            info = zipfile.ZipInfo(name)  # keeps the name exactly as given
            info.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            bundle.writestr(info, target)
    return buffer.getvalue()


def leftovers(directory: Path) -> list[str]:
    """Names in `directory`, temporary files included (they start with a dot)."""
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


@pytest.fixture
def session():
    """The project's session without retry waits, so error paths stay fast."""
    return make_session(retries=0)


def test_fetch_extracts_the_release_and_makes_v3_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            httpserver) -> None:
    monkeypatch.setenv("TAGGER_EVAL_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    entry = next(entry for entry in ENTRIES if entry.name == "deepdanbooru-v3")
    assert entry.unavailable_reason() == "not downloaded; run `tagger-eval fetch deepdanbooru-v3`"
    httpserver.expect_request("/dd.zip").respond_with_data(make_zip(), content_type="application/zip")
    with pytest.warns(RuntimeWarning, match=PLACEHOLDER_MODEL):
        project = fetch_v3(url=httpserver.url_for("/dd.zip"))
    assert project == v3_dir() == tmp_path / "cache" / "deepdanbooru-v3-20211112-sgd-e28"
    assert {name: (project / name).read_bytes() for name in PROJECT} == PROJECT
    assert entry.unavailable_reason() is None
    assert leftovers(tmp_path / "cache") == [project.name]  # no temporary file or directory left behind


def test_a_release_zipped_inside_one_folder_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      httpserver) -> None:
    monkeypatch.setenv("TAGGER_EVAL_CACHE", str(tmp_path))
    nested = make_zip({f"release/{name}": data for name, data in PROJECT.items()})
    httpserver.expect_request("/dd.zip").respond_with_data(nested)
    with pytest.warns(RuntimeWarning, match=PLACEHOLDER_MODEL):
        assert fetch_v3(url=httpserver.url_for("/dd.zip")) == v3_dir() / "release"
    assert next(entry for entry in ENTRIES if entry.name == "deepdanbooru-v3").unavailable_reason() is None


def test_a_new_fetch_replaces_the_old_copy(tmp_path: Path, httpserver, session) -> None:
    target = tmp_path / "release"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    httpserver.expect_request("/dd.zip").respond_with_data(make_zip({"tags.txt": b"new\n", "sub/a.txt": b"a"}))
    assert fetch_release_zip(httpserver.url_for("/dd.zip"), target, max_bytes=MAX, session=session) == target
    assert sorted(str(path.relative_to(target)) for path in target.rglob("*")) == ["sub", "sub/a.txt", "tags.txt"]
    assert leftovers(tmp_path) == ["release"]


def test_a_release_without_a_project_leaves_the_working_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             httpserver) -> None:
    monkeypatch.setenv("TAGGER_EVAL_CACHE", str(tmp_path))
    httpserver.expect_oneshot_request("/dd.zip").respond_with_data(make_zip())
    with pytest.warns(RuntimeWarning, match=PLACEHOLDER_MODEL):
        working = fetch_v3(url=httpserver.url_for("/dd.zip"))
    httpserver.expect_oneshot_request("/dd.zip").respond_with_data(make_zip({"README.md": b"moved to a new URL"}))
    url = httpserver.url_for("/dd.zip")
    with pytest.raises(ReleaseError, match=re.escape(f"{url}: no DeepDanbooru project (tags.txt and a model file) "
                                                     f"in the archive; {v3_dir()} was left as it was")):
        fetch_v3(url=url)
    assert {name: (working / name).read_bytes() for name in PROJECT} == PROJECT
    assert leftovers(tmp_path) == [v3_dir().name] and leftovers(v3_dir()) == sorted(PROJECT)


def test_verify_sees_the_extracted_release_before_the_swap(tmp_path: Path, httpserver, session) -> None:
    target = tmp_path / "release"
    target.mkdir()
    (target / "tags.txt").write_text("old\n")
    seen: list[bytes] = []

    def verify(extracted: Path) -> str | None:
        seen.append((extracted / "tags.txt").read_bytes())
        assert (target / "tags.txt").read_text() == "old\n"  # not replaced yet
        return None if seen[-1] == b"new\n" else "tags.txt is not the new one"

    httpserver.expect_oneshot_request("/bad.zip").respond_with_data(make_zip({"tags.txt": b"bad\n"}))
    with pytest.raises(ReleaseError, match=r"bad\.zip: tags\.txt is not the new one; .* was left as it was"):
        fetch_release_zip(httpserver.url_for("/bad.zip"), target, max_bytes=MAX, session=session, verify=verify)
    assert (target / "tags.txt").read_text() == "old\n" and leftovers(tmp_path) == ["release"]
    httpserver.expect_oneshot_request("/good.zip").respond_with_data(make_zip({"tags.txt": b"new\n"}))
    fetch_release_zip(httpserver.url_for("/good.zip"), target, max_bytes=MAX, session=session, verify=verify)
    assert seen == [b"bad\n", b"new\n"] and (target / "tags.txt").read_text() == "new\n"
    assert leftovers(tmp_path) == ["release"]


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../evil.txt", "contains '..'"),
        ("project/../../evil.txt", "contains '..'"),
        ("..\\evil.txt", "contains '..'"),
        ("C:/evil.txt", "absolute path"),
    ],
)
def test_members_escaping_the_target_are_refused(tmp_path: Path, httpserver, session, member: str,
                                                 reason: str) -> None:
    (tmp_path / "cache").mkdir()
    httpserver.expect_request("/evil.zip").respond_with_data(make_zip({"tags.txt": b"x\n", member: b"evil"}))
    url = httpserver.url_for("/evil.zip")
    expected = re.escape(f"{url}: refusing member {member!r}: ") + f".*{re.escape(reason)}"
    with pytest.raises(ReleaseError, match=expected):
        fetch_release_zip(url, tmp_path / "cache" / "release", max_bytes=MAX, session=session)
    assert leftovers(tmp_path) == ["cache"] and leftovers(tmp_path / "cache") == []
    assert not list(tmp_path.rglob("evil.txt"))


def test_an_absolute_member_is_refused(tmp_path: Path, httpserver, session) -> None:
    outside = tmp_path / "absolute-evil.txt"
    httpserver.expect_request("/evil.zip").respond_with_data(make_zip({"tags.txt": b"x\n", str(outside): b"evil"}))
    with pytest.raises(ReleaseError, match=rf"refusing member '{outside}': absolute path"):
        fetch_release_zip(httpserver.url_for("/evil.zip"), tmp_path / "release", max_bytes=MAX, session=session)
    assert not outside.exists()
    assert leftovers(tmp_path) == []


def test_a_symlink_member_is_refused(tmp_path: Path, httpserver, session) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    archive = make_zip({"tags.txt": b"x\n"}, symlinks={"model.h5": "../../secret.txt"})
    httpserver.expect_request("/link.zip").respond_with_data(archive)
    with pytest.raises(ReleaseError, match=r"refusing member 'model\.h5': symbolic links are not extracted"):
        fetch_release_zip(httpserver.url_for("/link.zip"), tmp_path / "release", max_bytes=MAX, session=session)
    assert leftovers(tmp_path) == ["secret.txt"]


def test_the_uncompressed_size_is_checked_before_extracting(tmp_path: Path, httpserver, session) -> None:
    bomb = make_zip({"tags.txt": b"x\n", "zeros.bin": bytes(2_000_000)})
    assert len(bomb) < 10_000
    httpserver.expect_request("/bomb.zip").respond_with_data(bomb)
    with pytest.raises(ReleaseError, match=r"would extract to 2000002 bytes, more than the limit of 100000"):
        fetch_release_zip(httpserver.url_for("/bomb.zip"), tmp_path / "release", max_bytes=MAX,
                          max_extracted_bytes=100_000, session=session)
    assert leftovers(tmp_path) == []


def test_extract_zip_writes_nothing_when_one_member_is_bad(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip({"good.txt": b"fine", "../bad.txt": b"evil"}))
    (tmp_path / "out").mkdir()
    with pytest.raises(ReleaseError, match=r"a\.zip: refusing member '\.\./bad\.txt'"):
        extract_zip(archive, tmp_path / "out", max_extracted_bytes=MAX)
    assert leftovers(tmp_path / "out") == []


def with_bad_crc(archive: bytes, member: bytes) -> bytes:
    """`archive` with the CRC-32 recorded for `member` (in its local header and the central directory) altered."""
    recorded = zlib.crc32(member).to_bytes(4, "little")
    assert archive.count(recorded) == 2
    return archive.replace(recorded, (zlib.crc32(member) ^ 1).to_bytes(4, "little"))


def test_a_member_with_a_bad_crc_leaves_nothing(tmp_path: Path, httpserver, session) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB, more than one chunk: part of it would be written before the check
    archive = with_bad_crc(make_zip({"good.txt": b"fine", "sub/big.bin": big}), big)
    (tmp_path / "a.zip").write_bytes(archive)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("kept")
    with pytest.raises(ReleaseError, match=r"a\.zip is not a valid zip file: Bad CRC-32 for file 'sub/big\.bin'"):
        extract_zip(tmp_path / "a.zip", tmp_path / "out", max_extracted_bytes=4 * MAX)
    assert leftovers(tmp_path / "out") == ["mine.txt"]
    httpserver.expect_request("/crc.zip").respond_with_data(archive)
    with pytest.raises(ReleaseError, match=r"crc\.zip is not a valid zip file: Bad CRC-32"):
        fetch_release_zip(httpserver.url_for("/crc.zip"), tmp_path / "release", max_bytes=4 * MAX, session=session)
    assert leftovers(tmp_path) == ["a.zip", "out"]


def test_extract_zip_never_mixes_into_existing_files(tmp_path: Path) -> None:
    (tmp_path / "a.zip").write_bytes(make_zip({"new.txt": b"new", "tags.txt": b"from the archive"}))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "tags.txt").write_text("mine")
    with pytest.raises(ReleaseError, match=r"member 'tags\.txt' already exists in .*out; extract into an empty"):
        extract_zip(tmp_path / "a.zip", tmp_path / "out", max_extracted_bytes=MAX)
    assert leftovers(tmp_path / "out") == ["tags.txt"] and (tmp_path / "out" / "tags.txt").read_text() == "mine"


def test_credentials_in_a_url_never_reach_a_message(tmp_path: Path, httpserver, session) -> None:
    httpserver.expect_request("/missing.zip").respond_with_data("Not Found", status=404)
    url = httpserver.url_for("/missing.zip").replace("://", "://user:s3cret@")
    with pytest.raises(ReleaseError) as raised:
        fetch_release_zip(url, tmp_path / "release", max_bytes=MAX, session=session)
    assert str(raised.value) == f"downloading {httpserver.url_for('/missing.zip')} failed: HTTP 404 NOT FOUND"


def test_a_too_large_content_length_is_refused_before_downloading(tmp_path: Path, httpserver, session) -> None:
    httpserver.expect_request("/big.zip").respond_with_data(b"0" * 5000)
    url = httpserver.url_for("/big.zip")
    with pytest.raises(ReleaseError, match=rf"{url} is 5000 bytes, more than the limit of 1000 bytes; refusing"):
        fetch_release_zip(url, tmp_path / "release", max_bytes=1000, session=session)
    assert leftovers(tmp_path) == []


def test_a_body_without_length_is_cut_at_the_limit(tmp_path: Path, httpserver, session) -> None:
    def endless(_request: Request) -> Response:
        return Response((b"0" * 1000 for _ in range(50)), content_type="application/zip")  # chunked, no length

    httpserver.expect_request("/stream.zip").respond_with_handler(endless)
    with pytest.raises(ReleaseError, match=r"sent more than the limit of 10000 bytes; download aborted"):
        fetch_release_zip(httpserver.url_for("/stream.zip"), tmp_path / "release", max_bytes=10_000, session=session)
    assert leftovers(tmp_path) == []


def test_http_errors_name_the_status_and_the_url(tmp_path: Path, httpserver) -> None:
    httpserver.expect_request("/missing.zip").respond_with_data("Not Found", status=404)
    url = httpserver.url_for("/missing.zip")
    with pytest.raises(ReleaseError, match=rf"downloading {url} failed: HTTP 404"):
        fetch_release_zip(url, tmp_path / "release", max_bytes=MAX)  # the default session: 404 is not retried
    assert leftovers(tmp_path) == []


def test_an_unreachable_server_is_a_release_error(tmp_path: Path, httpserver, session) -> None:
    url = httpserver.url_for("/dd.zip")
    httpserver.stop()
    try:
        with pytest.raises(ReleaseError, match=rf"downloading {url} failed: could not connect to "
                                               rf"{httpserver.host}:{httpserver.port}: connection refused$"):
            fetch_release_zip(url, tmp_path / "release", max_bytes=MAX, session=session)
    finally:
        httpserver.start()
    assert leftovers(tmp_path) == []


def test_an_interrupted_download_leaves_the_old_copy_and_no_partial_target(tmp_path: Path, httpserver,
                                                                          session) -> None:
    archive = make_zip()

    def cut(_request: Request) -> Response:
        def body() -> Iterator[bytes]:
            yield archive[: len(archive) // 2]
            raise ConnectionAbortedError("the server went away")

        return Response(body(), headers={"Content-Length": str(len(archive))}, content_type="application/zip")

    httpserver.expect_request("/cut.zip").respond_with_handler(cut)
    url = httpserver.url_for("/cut.zip")
    with pytest.raises(ReleaseError, match=rf"downloading {url} failed: .*IncompleteRead"):
        fetch_release_zip(url, tmp_path / "fresh", max_bytes=MAX, session=session)
    assert leftovers(tmp_path) == []
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "tags.txt").write_text("old\n")
    with pytest.raises(ReleaseError, match=rf"downloading {url} failed: .*IncompleteRead"):
        fetch_release_zip(url, tmp_path / "kept", max_bytes=MAX, session=session)
    assert leftovers(tmp_path) == ["kept"] and (tmp_path / "kept" / "tags.txt").read_text() == "old\n"


def test_a_body_that_is_not_a_zip_is_refused(tmp_path: Path, httpserver, session) -> None:
    httpserver.expect_request("/page.zip").respond_with_data("<html>sign in</html>", content_type="text/html")
    url = httpserver.url_for("/page.zip")
    with pytest.raises(ReleaseError, match=rf"{url} is not a valid zip file"):
        fetch_release_zip(url, tmp_path / "release", max_bytes=MAX, session=session)
    assert leftovers(tmp_path) == []


def test_a_download_that_trickles_ends_at_its_deadline(tmp_path: Path) -> None:
    """A server sending a byte just often enough to dodge the read timeout cannot hold the fetch forever."""
    import time

    from test_http_client import RawServer, trickle

    target = tmp_path / "release"
    target.mkdir()
    (target / "tags.txt").write_text("old\n")
    server = RawServer(trickle("body"))
    try:
        start = time.monotonic()
        with pytest.raises(ReleaseError, match=rf"did not finish within 1 s; {re.escape(str(target))} was left"):
            fetch_release_zip(f"{server.url}/dd.zip", target, max_bytes=1 << 20, session=make_session(retries=0),
                              deadline=1.0)
        assert time.monotonic() - start < 6.0  # the server would go on for 8 s
    finally:
        server.close()
    assert (target / "tags.txt").read_text() == "old\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["release"]  # no partial file left
