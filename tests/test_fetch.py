"""`tagger-eval fetch` without a network: against a closed loopback port and an unresolvable host name, it fails
within seconds with one line that names the endpoint or URL and how to proceed, and exits 1."""

from __future__ import annotations

import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest
from huggingface_hub import constants as hub_constants

from tagger_eval.cli import main
from tagger_eval.http_client import make_session
from tagger_eval.taggers import get_entry, registered
from tagger_eval.taggers.deepdanbooru import fetch_v3
from tagger_eval.taggers.wd14 import PUBLISHED_MODELS

BOUND_S = 10.0  # generous: the hub's own retries alone took 24 s


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed_fetch(*names: str) -> tuple[int, float]:
    start = time.monotonic()
    status = main(["fetch", *names])
    return status, time.monotonic() - start


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_an_unreachable_hub_fails_fast_naming_the_endpoint(hub_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://mirror-user:s3cret@127.0.0.1:{port}")  # read at the call
    status, elapsed = timed_fetch("wd-vit-v3")
    out, err = capsys.readouterr()
    assert status == 1 and elapsed < BOUND_S
    assert err.splitlines() == [
        f"error: wd-vit-v3: cannot fetch SmilingWolf/wd-vit-tagger-v3: the Hugging Face hub at "
        f"http://127.0.0.1:{port} (HF_ENDPOINT) is unreachable: could not connect to 127.0.0.1:{port}: connection "
        f"refused; run this fetch where the hub is reachable and copy that machine's Hugging Face cache into "
        f"{hub_cache}, or set HF_ENDPOINT to a reachable mirror"]
    assert "s3cret" not in out + err
    assert not hub_cache.exists()


@pytest.mark.parametrize("endpoint", ["not a url", "ftp://mirror.example", "http://127.0.0.1:99999"])
def test_an_invalid_hub_endpoint_is_named(endpoint: str, hub_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    assert main(["fetch", "wd-vit-v3"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: wd-vit-v3: cannot fetch SmilingWolf/wd-vit-tagger-v3: the hub endpoint {endpoint} (HF_ENDPOINT) is "
        "not a valid http(s) URL; set HF_ENDPOINT to one, such as https://huggingface.co, or unset it"]


def test_an_unreachable_hub_keeps_what_is_cached(hub_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    model = next(m for m in PUBLISHED_MODELS if m.name == "wd-vit-v3")
    repo = hub_cache / f"models--{model.repo_id.replace('/', '--')}"  # the hub cache's documented layout
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for filename in model.files.filenames:
        (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / commit / filename).write_bytes(b"cached")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    status, elapsed = timed_fetch("wd-vit-v3")
    assert status == 0 and elapsed < BOUND_S
    assert capsys.readouterr().out.splitlines()[-1].startswith("wd-vit-v3: fetched {")


@pytest.mark.parametrize(
    ("host", "reason"),
    [("nonexistent.invalid", "the host nonexistent.invalid could not be resolved (no network, or a wrong host name)"),
     ("127.0.0.1:{port}", "could not connect to 127.0.0.1:{port}: connection refused")],
    ids=["unresolvable", "refused"],
)
def test_an_unreachable_release_host_is_one_line(host: str, reason: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TAGGER_EVAL_CACHE", str(tmp_path))
    port = closed_port()
    url = f"http://{host.format(port=port)}/dd.zip"
    # The real entry and fetch_v3 at an unreachable URL (a test must not download the published one), no retry waits.
    entry = replace(get_entry("deepdanbooru-v3"), name="dd-test",
                    fetch=lambda: fetch_v3(url=url, session=make_session(retries=0)))
    with registered(entry):
        status, elapsed = timed_fetch("dd-test")
    assert status == 1 and elapsed < BOUND_S
    assert capsys.readouterr().err.splitlines() == [
        f"error: dd-test: downloading {url} failed: {reason.format(port=port)}"]
    assert list(tmp_path.iterdir()) == []


def test_an_argument_to_a_model_without_revisions_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch", "deepdanbooru-v3:latest"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: deepdanbooru-v3 takes no argument, got 'deepdanbooru-v3:latest': run `tagger-eval fetch "
        "deepdanbooru-v3`"]
