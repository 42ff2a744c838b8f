"""`tagger-eval download` against a faithful fake Danbooru served over loopback."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest
from fake_danbooru import FakeDanbooru
from fake_danbooru import fake_danbooru as fake_danbooru  # the fixture

from tagger_eval.cli import main as cli_main
from tagger_eval.data.danbooru import Credentials, DanbooruClient, DanbooruError, origin
from tagger_eval.data.dataset import Dataset
from tagger_eval.data.downloader import DatasetDownloader, DownloadError, DownloadPlan

RATINGS = ("g", "s", "q", "e")


def client_for(fake: FakeDanbooru, **options) -> DanbooruClient:
    return DanbooruClient(fake.url, rate=1000.0, **options)


def quick_client(fake: FakeDanbooru, retries: int = 2, **options) -> DanbooruClient:
    """Short timeouts and a tiny backoff, for tests of faults."""
    return DanbooruClient(fake.url, rate=1000.0, timeout=(2.0, 0.5), retries=retries, backoff=0.01, **options)


def run_cli(capsys, *arguments: str) -> tuple[int, str, str]:
    status = cli_main(["download", "--rate", "1000", "--no-progress", *arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def download(fake: FakeDanbooru, out: Path, **plan) -> dict:
    client = client_for(fake)
    try:
        return DatasetDownloader(out, client, DownloadPlan(**plan)).run(progress=False)
    finally:
        client.close()


def stored(out: Path) -> dict[str, list[int]]:
    """Post ids per rating in data.db, newest first."""
    with sqlite3.connect(out) as db:
        rows = db.execute("SELECT rating, id FROM posts ORDER BY id DESC").fetchall()
    db.close()
    result: dict[str, list[int]] = {}
    for rating, post_id in rows:
        result.setdefault(rating, []).append(post_id)
    return result


def assert_images_complete(out: Path) -> None:
    """Every row's image is in place with the row's md5, and no partial file is left."""
    with Dataset(out) as dataset:
        for post in dataset:
            assert hashlib.md5(post.image_path.read_bytes()).hexdigest() == post.md5, post.id
    assert not list((out.parent / "images").glob("*.part"))


def test_stratified_sample_skips_the_newest_pages(fake_danbooru: FakeDanbooru, tmp_path: Path) -> None:
    fake_danbooru.add_generated(200)
    out = tmp_path / "data.db"
    reports = download(fake_danbooru, out, per_rating=6, page_skip=1, limit=7)
    expected = {rating: fake_danbooru.expected_ids(rating, skip=20, count=6) for rating in RATINGS}
    assert stored(out) == expected
    assert all(report.stored == report.downloaded == 6 and not report.exhausted for report in reports.values())
    assert_images_complete(out)
    # After the first numeric page, paging goes by id cursors.
    pages = [request.query["page"] for request in fake_danbooru.requests_to("/posts.json")]
    assert pages.count("3") == 4  # 20 skipped with 7 per page: page 3 from its 7th post, once per rating
    assert all(page.startswith("b") for page in pages if page != "3")


@pytest.mark.parametrize("limit", [20, 200, 3])
def test_page_skip_counts_pages_of_twenty_whatever_the_page_size(fake_danbooru: FakeDanbooru, tmp_path: Path,
                                                                  limit: int) -> None:
    fake_danbooru.add_generated(120, rating_cycle="g")
    out = tmp_path / "data.db"
    download(fake_danbooru, out, per_rating=10, page_skip=3, ratings=("g",), limit=limit)
    assert stored(out)["g"] == fake_danbooru.expected_ids("g", skip=60, count=10)


def test_skips_beyond_page_1000_hop_with_cursors(fake_danbooru: FakeDanbooru, tmp_path: Path) -> None:
    fake_danbooru.add_generated(1030, rating_cycle="g", image_size=(4, 4))
    out = tmp_path / "data.db"
    # 51 pages of 20 = 1020 posts; with one post per page that would be page 1021.
    download(fake_danbooru, out, per_rating=3, page_skip=51, ratings=("g",), limit=1)
    assert stored(out)["g"] == fake_danbooru.expected_ids("g", skip=1020, count=3)
    numeric = [int(r.query["page"]) for r in fake_danbooru.requests_to("/posts.json") if r.query["page"].isdigit()]
    assert numeric == [1]


def test_the_last_numeric_page_is_never_used(fake_danbooru: FakeDanbooru, tmp_path: Path) -> None:
    """Danbooru serves page 1000 oldest first; skipping into it must still give the right posts."""
    fake_danbooru.add_generated(1010, rating_cycle="g", image_size=(4, 4))
    out = tmp_path / "data.db"
    download(fake_danbooru, out, per_rating=2, page_skip=50, ratings=("g",), limit=1)  # page 1001 would be needed
    assert stored(out)["g"] == fake_danbooru.expected_ids("g", skip=1000, count=2)


def test_unusable_posts_are_skipped_and_counted(fake_danbooru: FakeDanbooru, tmp_path: Path) -> None:
    fake_danbooru.add_generated(3, rating_cycle="g")
    specials = {
        fake_danbooru.add_post(rating="g", is_deleted=True): "deleted",
        fake_danbooru.add_post(rating="g", is_banned=True): "banned",
        fake_danbooru.add_post(rating="g", file_ext="mp4"): "file type mp4",
        fake_danbooru.add_post(rating="g", file_ext="zip"): "file type zip",
        fake_danbooru.add_post(rating="g", served_bytes=b"not the image"): "md5 mismatch",
        fake_danbooru.add_post(rating="g", serve_file=False): "file unavailable (HTTP 404)",
        fake_danbooru.add_post(rating="g", file_url=None): "no file_url",
    }
    fake_danbooru.add_generated(2, rating_cycle="g")
    out = tmp_path / "data.db"
    reports = download(fake_danbooru, out, per_rating=4, page_skip=0, ratings=("g",), limit=4)
    assert stored(out)["g"] == fake_danbooru.expected_ids("g", count=4)
    assert not set(stored(out)["g"]) & set(specials)
    assert reports["g"].skipped == {reason: 1 for reason in specials.values()}
    assert_images_complete(out)
    with sqlite3.connect(out) as db:
        progress = json.loads(db.execute("SELECT skipped FROM download_progress WHERE rating = 'g'").fetchone()[0])
    db.close()
    assert progress == {reason: 1 for reason in specials.values()}


def test_videos_are_kept_when_asked_for(fake_danbooru: FakeDanbooru, tmp_path: Path) -> None:
    video = fake_danbooru.add_post(rating="g", file_ext="webm")
    out = tmp_path / "data.db"
    download(fake_danbooru, out, per_rating=1, page_skip=0, ratings=("g",), extensions=("png", "webm"))
    assert stored(out)["g"] == [video]


def test_a_search_that_runs_out_says_so(fake_danbooru: FakeDanbooru, tmp_path: Path) -> None:
    fake_danbooru.add_generated(8, rating_cycle="gs")
    reports = download(fake_danbooru, tmp_path / "data.db", per_rating=10, page_skip=0, ratings=("g", "s"))
    assert reports["g"].exhausted and reports["g"].stored == 4


def test_extra_tags_narrow_every_search(fake_danbooru: FakeDanbooru, tmp_path: Path) -> None:
    fake_danbooru.add_generated(40)
    out = tmp_path / "data.db"
    download(fake_danbooru, out, per_rating=2, page_skip=0, tags="smile")
    for rating in RATINGS:
        assert stored(out)[rating] == fake_danbooru.expected_ids(rating, count=2, tags="smile")
    assert all("smile" in request.query["tags"] for request in fake_danbooru.requests_to("/posts.json"))


def test_rate_limits_and_server_errors_are_retried(fake_danbooru: FakeDanbooru, tmp_path: Path) -> None:
    fake_danbooru.add_generated(8, rating_cycle="g")
    fake_danbooru.fail_next("/posts.json", 429, times=1, headers={"Retry-After": "1"})
    fake_danbooru.fail_next("/data/", 503, times=2)
    out = tmp_path / "data.db"
    download(fake_danbooru, out, per_rating=3, page_skip=0, ratings=("g",))
    assert stored(out)["g"] == fake_danbooru.expected_ids("g", count=3)
    log = fake_danbooru.requests
    first, second = log[0], log[1]
    assert (first.status, second.path) == (429, "/posts.json")
    assert second.time - first.time >= 0.95  # Retry-After: 1 was honoured
    assert [r.status for r in fake_danbooru.requests_to("/data/")][:3] == [503, 503, 200]


def test_timeouts_stop_the_run_clearly_and_it_resumes(fake_danbooru: FakeDanbooru, tmp_path: Path) -> None:
    fake_danbooru.add_generated(6, rating_cycle="g")
    fake_danbooru.delay_next("/data/", 3.0, times=None)
    out = tmp_path / "data.db"
    plan = DownloadPlan(per_rating=3, page_skip=0, ratings=("g",))
    client = quick_client(fake_danbooru, retries=2)
    with pytest.raises(DanbooruError, match=r"GET http://127\.0\.0\.1:\d+/data/\S+ failed after 3 attempts: "
                                            r"ReadTimeoutError: .*Read timed out") as raised:
        DatasetDownloader(out, client, plan).run(progress=False)
    client.close()
    assert raised.value.transient
    assert len(fake_danbooru.requests_to("/data/")) == 3  # the attempts the message counts
    assert stored(out) == {}
    fake_danbooru.clear_faults()
    download(fake_danbooru, out, per_rating=3, page_skip=0, ratings=("g",))
    assert stored(out)["g"] == fake_danbooru.expected_ids("g", count=3)


def test_an_interrupted_run_resumes_without_duplicates(fake_danbooru: FakeDanbooru, tmp_path: Path) -> None:
    fake_danbooru.add_generated(120)
    out = tmp_path / "data.db"
    downloads = []

    @fake_danbooru.on_request
    def interrupt_on_the_fifth_image(record) -> None:
        if record.path.startswith("/data/"):
            downloads.append(record.path)

    class InterruptingClient(DanbooruClient):
        def download(self, url: str, destination: Path) -> str:
            if len(downloads) == 5:
                destination.write_bytes(b"half an image")
                raise KeyboardInterrupt
            return super().download(url, destination)

    client = InterruptingClient(fake_danbooru.url, rate=1000.0)
    with pytest.raises(KeyboardInterrupt):
        DatasetDownloader(out, client, DownloadPlan(per_rating=4, page_skip=1)).run(progress=False)
    client.close()
    assert sum(len(ids) for ids in stored(out).values()) == 5
    download(fake_danbooru, out, per_rating=4, page_skip=1)
    assert stored(out) == {rating: fake_danbooru.expected_ids(rating, skip=20, count=4) for rating in RATINGS}
    assert_images_complete(out)


def test_a_killed_process_resumes_with_exactly_the_requested_posts(fake_danbooru: FakeDanbooru,
                                                                   tmp_path: Path) -> None:
    """kill -9 in the middle of an image download, then the same command again."""
    fake_danbooru.add_generated(120, image_size=(64, 64))
    out = tmp_path / "data.db"
    command = [sys.executable, "-m", "tagger_eval.cli", "download", "--out", str(out), "--per-rating", "5",
               "--page-skip", "1", "--base-url", fake_danbooru.url, "--rate", "1000", "--no-progress"]
    in_flight, release = threading.Event(), threading.Event()
    images = []

    @fake_danbooru.on_request
    def hold_the_seventh_image(record) -> None:
        if record.path.startswith("/data/"):
            images.append(record.path)
            if len(images) == 7:
                in_flight.set()
                release.wait(10)

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert in_flight.wait(60), "the download never reached its seventh image"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        release.set()
    assert process.returncode == -signal.SIGKILL
    assert sum(len(ids) for ids in stored(out).values()) == 6

    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    assert stored(out) == {rating: fake_danbooru.expected_ids(rating, skip=20, count=5) for rating in RATINGS}
    assert_images_complete(out)
    assert len(list((tmp_path / "images").iterdir())) == 20
    assert "rating:g: 5 posts" in completed.stdout


def test_growing_a_dataset_and_refusing_a_different_one(fake_danbooru: FakeDanbooru, tmp_path: Path) -> None:
    fake_danbooru.add_generated(120)
    out = tmp_path / "data.db"
    download(fake_danbooru, out, per_rating=2, page_skip=1)
    download(fake_danbooru, out, per_rating=4, page_skip=1)
    assert stored(out) == {rating: fake_danbooru.expected_ids(rating, skip=20, count=4) for rating in RATINGS}
    with pytest.raises(DownloadError, match=r"was downloaded with .*page_skip.*: 1.*not .*page_skip.*: 2"):
        download(fake_danbooru, out, per_rating=4, page_skip=2)


def test_a_data_db_that_no_download_made_is_refused(fake_danbooru: FakeDanbooru, tmp_path: Path) -> None:
    from builders import build_dataset

    db_path = build_dataset(tmp_path / "mine", [(1, "g", "smile")], {})
    with pytest.raises(DownloadError, match="already holds 1 posts that no download made"):
        download(fake_danbooru, db_path, per_rating=1, page_skip=0)


def test_provenance_is_recorded(fake_danbooru: FakeDanbooru, tmp_path: Path) -> None:
    fake_danbooru.add_generated(8)
    out = tmp_path / "data.db"
    download(fake_danbooru, out, per_rating=1, page_skip=0, tags="smile")
    with Dataset(out) as dataset:
        metadata = dataset.metadata()
        post = dataset.get(stored(out)["g"][0])
    assert metadata["source"] == "danbooru"
    assert json.loads(metadata["download_params"]) == {
        "base_url": fake_danbooru.url, "page_skip": 0, "tags": "smile",
        "extensions": sorted(["jpg", "jpeg", "png", "webp", "gif", "bmp"])}
    assert metadata["created_at"] <= metadata["updated_at"] and metadata["per_rating"] == "1"
    with sqlite3.connect(out) as db:
        source, source_url = db.execute("SELECT source, source_url FROM posts WHERE id = ?", (post.id,)).fetchone()
    db.close()
    assert (source, source_url) == (fake_danbooru.url, f"{fake_danbooru.url}/posts/{post.id}")


def test_every_request_says_who_it_is(fake_danbooru: FakeDanbooru, tmp_path: Path) -> None:
    fake_danbooru.add_generated(4)
    download(fake_danbooru, tmp_path / "data.db", per_rating=1, page_skip=0)
    agents = {request.user_agent for request in fake_danbooru.requests}
    assert len(agents) == 1 and agents.pop().startswith("tagger-eval/")


def test_the_api_key_never_appears_anywhere(tmp_path: Path, monkeypatch, capsys) -> None:
    secret = "s3cr3t-api-key-0123456789"
    fake = FakeDanbooru(credentials=("tester", secret)).start()
    try:
        fake.add_generated(12)
        fake.fail_next("/posts.json", 500, times=None)  # so the run also prints an error
        monkeypatch.setenv("DANBOORU_LOGIN", "tester")
        monkeypatch.setenv("DANBOORU_API_KEY", secret)
        out = tmp_path / "data.db"
        arguments = ["download", "--out", str(out), "--per-rating", "2", "--page-skip", "0",
                     "--base-url", fake.url, "--rate", "1000", "--no-progress", "--retries", "1"]
        assert cli_main(arguments) == 1
        failed = capsys.readouterr()
        fake.clear_faults()
        assert cli_main([*arguments, "--with-tag-relations"]) == 0
        succeeded = capsys.readouterr()
        assert sum(len(ids) for ids in stored(out).values()) == 8
        assert {request.auth for request in fake.requests if request.path.endswith(".json")} == {"basic"}
        assert all(secret not in request.url for request in fake.requests)
        assert "failed after 2 attempts: HTTP 500" in failed.err  # --retries 1: two attempts, as counted
        for text in (failed.out, failed.err, succeeded.out, succeeded.err, repr(Credentials("tester", secret))):
            assert secret not in text
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
    finally:
        fake.stop()


def test_half_given_credentials_are_an_error(monkeypatch) -> None:
    monkeypatch.setenv("DANBOORU_LOGIN", "tester")
    monkeypatch.delenv("DANBOORU_API_KEY", raising=False)
    with pytest.raises(DanbooruError, match="set both DANBOORU_LOGIN and DANBOORU_API_KEY, or neither"):
        Credentials.from_environment()


def test_tag_relations_and_categories(fake_danbooru: FakeDanbooru, tmp_path: Path) -> None:
    fake_danbooru.add_post(rating="g", tag_string_general="very_long_hair smile", tag_string_character="miku")
    fake_danbooru.add_alias("long_hair_(very)", "very_long_hair")
    fake_danbooru.add_alias("grin_(old)", "smile", status="deleted")
    fake_danbooru.add_implication("very_long_hair", "long_hair")
    fake_danbooru.add_implication("long_hair", "hair")  # implied by an implied tag: found transitively
    fake_danbooru.add_implication("unrelated", "smile")
    out = tmp_path / "data.db"
    download(fake_danbooru, out, per_rating=1, page_skip=0, ratings=("g",))
    client = client_for(fake_danbooru)
    counts = DatasetDownloader(out, client, DownloadPlan(per_rating=1, page_skip=0, ratings=("g",))) \
        .download_tag_relations()
    client.close()
    with sqlite3.connect(out) as db:
        aliases = db.execute("SELECT antecedent_name, consequent_name FROM tag_aliases").fetchall()
        implications = set(db.execute("SELECT antecedent_name, consequent_name FROM tag_implications").fetchall())
        tags = dict(db.execute("SELECT name, category FROM tags").fetchall())
        counted = db.execute("SELECT count(*) FROM tags WHERE post_count IS NOT NULL").fetchone()[0]
    db.close()
    assert aliases == [("long_hair_(very)", "very_long_hair")]
    assert implications == {("very_long_hair", "long_hair"), ("long_hair", "hair")}
    assert tags["miku"] == 4 and tags["very_long_hair"] == 0 and tags["smile"] == 0
    assert counted == len(tags) and counts["tag_implications"] == 2
    with Dataset(out) as dataset:
        assert dataset.tag_aliases() == {"long_hair_(very)": "very_long_hair"}


def test_the_suite_evaluates_a_downloaded_dataset(tmp_path: Path, pytester: pytest.Pytester) -> None:
    """The issue's acceptance: download from a fake Danbooru holding the demo posts, then `pytest --tagger=all`."""
    fake = FakeDanbooru.from_demo_dataset(first_id=5000).start()
    try:
        out = tmp_path / "downloaded" / "data.db"
        arguments = ["download", "--out", str(out), "--per-rating", "8", "--page-skip", "0",
                     "--base-url", fake.url, "--rate", "1000", "--no-progress"]
        assert cli_main(arguments) == 0
    finally:
        fake.stop()
    assert {rating: len(ids) for rating, ids in stored(out).items()} == dict.fromkeys(RATINGS, 8)
    result = pytester.runpytest("--tagger=all", f"--dataset={out}", "--benchmark-disable")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=4 * 32)
    result.stdout.fnmatch_lines(["control * 32 * 1.000 *"])


# ------------------------------------------------------------------------------------ faults of a hostile world


def test_a_stalled_or_cut_transfer_is_fetched_again_and_the_run_goes_on(fake_danbooru: FakeDanbooru,
                                                                        tmp_path: Path) -> None:
    fake_danbooru.add_generated(4, rating_cycle="g", image_size=(64, 64))
    fake_danbooru.stall_next("/posts.json", 2.0)  # the listing's body stalls past the 0.5 s timeout
    fake_danbooru.stall_next("/data/", 2.0)  # the first image stalls, then is cut short, then comes whole
    fake_danbooru.truncate_next("/data/")
    out = tmp_path / "data.db"
    client = quick_client(fake_danbooru, retries=2)
    reports = DatasetDownloader(out, client, DownloadPlan(per_rating=3, page_skip=0, ratings=("g",))).run(False)
    client.close()
    assert stored(out)["g"] == fake_danbooru.expected_ids("g", count=3) and not reports["g"].skipped
    assert_images_complete(out)
    first_image = fake_danbooru.requests_to("/data/")[0].path
    assert len(fake_danbooru.requests_to(first_image)) == 3
    assert len(fake_danbooru.requests_to("/posts.json")) == 2  # the stalled page, then the same page whole


def test_a_transfer_that_always_breaks_off_stops_the_run_saying_how_often(fake_danbooru: FakeDanbooru,
                                                                           tmp_path: Path) -> None:
    fake_danbooru.add_generated(2, rating_cycle="g", image_size=(64, 64))
    fake_danbooru.truncate_next("/data/", times=None)
    out = tmp_path / "data.db"
    client = quick_client(fake_danbooru, retries=2)
    with pytest.raises(DanbooruError, match=r"/data/\S+ failed: the transfer broke off in each of 3 attempts; the "
                                            r"last: ChunkedEncodingError: .*IncompleteRead") as raised:
        DatasetDownloader(out, client, DownloadPlan(per_rating=1, page_skip=0, ratings=("g",))).run(False)
    client.close()
    assert raised.value.transient
    assert len(fake_danbooru.requests_to("/data/")) == 3
    assert stored(out) == {} and list((tmp_path / "images").iterdir()) == []


def test_each_attempt_has_a_deadline_however_slowly_the_server_sends(fake_danbooru: FakeDanbooru,
                                                                      tmp_path: Path) -> None:
    fake_danbooru.add_generated(2, rating_cycle="g", image_size=(64, 64))
    fake_danbooru.stall_next("/data/", 0.4, times=None)  # pauses shorter than the 0.5 s timeout: no read times out
    out = tmp_path / "data.db"
    client = quick_client(fake_danbooru, retries=1, deadline=0.2)
    started = time.monotonic()
    with pytest.raises(DanbooruError, match=r"/data/\S+ failed: the transfer broke off in each of 2 attempts; the "
                                            r"last: cut off at the 0.2 s deadline"):
        DatasetDownloader(out, client, DownloadPlan(per_rating=1, page_skip=0, ratings=("g",))).run(False)
    client.close()
    assert time.monotonic() - started < 10
    assert len(fake_danbooru.requests_to("/data/")) == 2 and stored(out) == {}


def test_hostile_post_values_are_skipped_and_nothing_outside_the_dataset_is_touched(fake_danbooru: FakeDanbooru,
                                                                                    tmp_path: Path) -> None:
    victim = tmp_path / "victim.png.part"  # what `images/../../victim.png.part` names
    victim.write_bytes(b"not yours")
    good = fake_danbooru.add_generated(2, rating_cycle="g")
    hostile = {
        fake_danbooru.add_post(md5="../../victim", served_bytes=b"x"): "invalid md5",
        fake_danbooru.add_post(md5="A" * 32): "invalid md5",
        fake_danbooru.add_post(file_ext="png/../../x"): "invalid file_ext",
        fake_danbooru.add_post(file_url="file:///etc/passwd"): "invalid file_url",
        fake_danbooru.add_post(file_url="http:///no/host.png"): "invalid file_url",
        fake_danbooru.add_post(image_width="wide"): "invalid image_width",
    }
    served = []

    @fake_danbooru.on_request
    def add_malformed_entries(record):
        if record.path == "/posts.json" and not served:
            served.append(record)
            return 200, [*fake_danbooru.posts, "not a post", {"id": "7"}, {"id": True, "md5": "0" * 32}]
        return None

    out = tmp_path / "dataset" / "data.db"
    reports = download(fake_danbooru, out, per_rating=5, page_skip=0, ratings=("g",))
    assert sorted(stored(out)["g"]) == good
    assert reports["g"].skipped == {**Counter(hostile.values()), "malformed post": 3}
    assert victim.read_bytes() == b"not yours"
    assert {path.relative_to(tmp_path).parts[0] for path in tmp_path.rglob("*")} == {"victim.png.part", "dataset"}
    assert_images_complete(out)


def test_an_images_folder_that_leads_outside_the_dataset_is_refused(fake_danbooru: FakeDanbooru,
                                                                     tmp_path: Path) -> None:
    fake_danbooru.add_generated(2, rating_cycle="g")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "images").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(DownloadError, match=r"images leads outside .*dataset \(a symbolic link\?\); use a new --out"):
        download(fake_danbooru, tmp_path / "dataset" / "data.db", per_rating=1, page_skip=0, ratings=("g",))
    assert list(elsewhere.iterdir()) == []


def test_a_link_left_in_the_images_folder_is_replaced_not_followed(fake_danbooru: FakeDanbooru,
                                                                    tmp_path: Path) -> None:
    (post_id,) = fake_danbooru.add_generated(1, rating_cycle="g")
    outside = tmp_path / "outside.png"
    outside.write_bytes(fake_danbooru.file_bytes(post_id))  # even with the right md5, the link is not used
    images = tmp_path / "dataset" / "images"
    images.mkdir(parents=True)
    name = f"{fake_danbooru.post(post_id)['md5']}.png"
    (images / name).symlink_to(outside)
    (images / f"{name}.part").symlink_to(outside)
    download(fake_danbooru, tmp_path / "dataset" / "data.db", per_rating=1, page_skip=0, ratings=("g",))
    assert not (images / name).is_symlink() and outside.read_bytes() == fake_danbooru.file_bytes(post_id)
    assert_images_complete(tmp_path / "dataset" / "data.db")


def test_credentials_go_only_to_the_apis_own_scheme_host_and_port(tmp_path: Path) -> None:
    with FakeDanbooru(credentials=("tester", "s3cr3t-key")) as fake:
        file_url = fake.post(fake.add_post())["file_url"]  # http://127.0.0.1:PORT/data/...
        port = fake.url.rsplit(":", 1)[1]
        for base_url, expected in ((f"https://127.0.0.1:{port}", None), ("http://localhost:" + port, None),
                                   (fake.url, "basic")):
            client = DanbooruClient(base_url, Credentials("tester", "s3cr3t-key"), rate=1000.0)
            client.download(file_url, tmp_path / "file.png")
            client.close()
            assert fake.requests[-1].auth == expected, base_url
    assert origin("https://Danbooru.donmai.us") == origin("https://danbooru.donmai.us:443/posts.json")
    assert origin("http://danbooru.donmai.us") != origin("https://danbooru.donmai.us")
    assert origin("ftp://danbooru.donmai.us") is None and origin("https://host:99999") is None


def test_credentials_echoed_by_a_server_are_redacted_everywhere(tmp_path: Path, monkeypatch, capsys) -> None:
    login, secret = "tester", "s3cr3t/api+key=0123456789"
    forms = [secret, login, base64.b64encode(f"{login}:{secret}".encode()).decode(), quote(secret, safe="")]
    fake = FakeDanbooru(credentials=(login, secret)).start()
    try:
        fake.add_generated(3, rating_cycle="g")
        fake.add_post(rating="g", tag_string_meta=f"leaked_{secret}")  # a post that carries the key
        fake.echo_credentials_next("/posts.json", 503, times=None)
        monkeypatch.setenv("DANBOORU_LOGIN", login)
        monkeypatch.setenv("DANBOORU_API_KEY", secret)
        arguments = ["--out", str(tmp_path / "data.db"), "--per-rating", "3", "--page-skip", "0", "--ratings", "g",
                     "--base-url", fake.url, "--retries", "0"]
        status, failed_out, failed_err = run_cli(capsys, *arguments)
        assert status == 1 and "HTTP 503: Request failed. Authorization: Basic *** (decoded: ***)" in failed_err
        fake.clear_faults()
        status, out, err = run_cli(capsys, *arguments)
        assert status == 0 and "skipped: 1 echoes the credentials" in out
    finally:
        fake.stop()
    for text in (failed_out, failed_err, out, err):
        assert not [form for form in forms if form in text]
    for path in tmp_path.rglob("*"):
        assert path.is_dir() or not [form for form in forms if form.encode() in path.read_bytes()], path


def test_the_resume_hint_appears_only_where_a_rerun_can_help(fake_danbooru: FakeDanbooru, tmp_path: Path,
                                                              capsys) -> None:
    from builders import build_dataset

    fake_danbooru.add_generated(4, rating_cycle="g")
    hint = "run the same command again"
    base = ["--per-rating", "1", "--ratings", "g", "--base-url", fake_danbooru.url, "--retries", "0"]
    foreign = build_dataset(tmp_path / "mine", [(1, "g", "smile")], {})
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("my notes\n" * 100)
    out = str(tmp_path / "data.db")
    assert run_cli(capsys, "--out", out, "--page-skip", "0", *base)[0] == 0
    refusals = {
        "no download made": ["--out", str(foreign), "--page-skip", "0"],
        "was downloaded with": ["--out", out, "--page-skip", "1"],
        "is not a data.db": ["--out", str(not_a_database), "--page-skip", "0"],
    }
    for message, arguments in refusals.items():
        status, _, err = run_cli(capsys, *arguments, *base)
        assert (status, message in err, hint in err, "Traceback" in err) == (2, True, False, False), err
    more = ["--out", out, "--page-skip", "0", *base, "--per-rating", "2"]
    fake_danbooru.fail_next("/posts.json", 401)  # a wrong key: the same command fails the same way
    status, _, err = run_cli(capsys, *more)
    assert (status, "HTTP 401" in err, hint in err) == (1, True, False)
    fake_danbooru.fail_next("/posts.json", 503)
    status, _, err = run_cli(capsys, *more)
    assert (status, "HTTP 503" in err, hint in err) == (1, True, True)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--ratings", "x,g", "--ratings: 'x' is not a rating; use letters from g,s,q,e, e.g. --ratings g,s"),
    ("--ratings", ",", "--ratings: nothing given; use letters from g,s,q,e"),
    ("--extensions", "png,../x", "--extensions: '../x' is not a file extension"),
    ("--timeout", "nan", "--timeout must be a positive number, got nan"),
    ("--timeout", "0", "--timeout must be a positive number, got 0.0"),
    ("--rate", "inf", "--rate must be a positive number, got inf"),
    ("--deadline", "-1", "--deadline must be a positive number, got -1.0"),
    ("--retries", "-1", "--retries must be 0 or more, got -1"),
    ("--base-url", "ftp://example.org", "--base-url must be an http(s) URL"),
    ("--base-url", "https://tester:key@example.org", "--base-url must not hold credentials"),
])
def test_bad_options_are_named_with_how_to_fix_them(tmp_path: Path, capsys, option: str, value: str,
                                                     message: str) -> None:
    status, _, err = run_cli(capsys, "--out", str(tmp_path / "data.db"), "--per-rating", "1", option, value)
    assert status == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert "key@" not in err and "('" not in err  # no secret, no Python tuple
    assert not (tmp_path / "data.db").exists()


def test_download_help_shows_every_default(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["download", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in ("150", "g,s,q,e", "none", "jpg,jpeg,png,webp,gif,bmp", "https://danbooru.donmai.us", "200",
                    "4.0", "60.0", "300.0", "5"):
        assert f"(default: {default})" in text
