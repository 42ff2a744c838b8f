"""The fake Danbooru itself, driven with plain `requests` over HTTP, so the downloader's tests can trust it."""

from __future__ import annotations

import hashlib
import io
import re
import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from fake_danbooru import FakeDanbooru, start_fake_danbooru
from fake_danbooru import fake_danbooru as fake_danbooru  # the fixture, requested by name
from PIL import Image

from tagger_eval.run.evaluation import DEFAULT_DATASET

TIMEOUT = 5


@pytest.fixture(scope="module")
def demo() -> Iterator[FakeDanbooru]:
    """The bundled demo posts (ids 1-96), read-only: tests that inject faults make their own fake."""
    with FakeDanbooru.from_demo_dataset() as fake:
        yield fake
        fake.check()


@pytest.fixture
def fresh(fake_danbooru: FakeDanbooru) -> FakeDanbooru:
    """An empty fake of this test's own, for tests that add posts or inject faults."""
    return fake_danbooru


def get(fake: FakeDanbooru, path: str, **params: object) -> requests.Response:
    return requests.get(fake.url + path, params=params, timeout=TIMEOUT)


def ids(response: requests.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [post["id"] for post in response.json()]


def walk_before(fake: FakeDanbooru, tags: str = "", limit: int = 200) -> list[int]:
    """Every result of a search, by b<id> cursors, the way a downloader pages past page 1000."""
    found: list[int] = []
    page = f"b{10**9}"
    while batch := ids(get(fake, "/posts.json", tags=tags, limit=limit, page=page)):
        found += batch
        page = f"b{batch[-1]}"
    return found


# -------------------------------------------------------------------------------------------- posts and fields


def test_demo_posts_keep_their_data_and_newest_is_highest_id(demo: FakeDanbooru) -> None:
    response = get(demo, "/posts.json")
    assert response.headers["Content-Type"].startswith("application/json")
    assert ids(response) == list(range(96, 76, -1))  # default limit 20, id descending
    connection = sqlite3.connect(DEFAULT_DATASET)
    row = connection.execute("SELECT md5, rating, tag_string_general, tag_string_artist, image_path FROM posts"
                             " WHERE id = 2").fetchone()
    connection.close()
    post = get(demo, "/posts/2.json").json()
    assert (post["md5"], post["rating"], post["tag_string_general"], post["tag_string_artist"]) == row[:4]
    assert post["tag_string"] == " ".join(sorted(post["tag_string"].split()))
    assert set(post["tag_string"].split()) == {tag for name in ("general", "character", "copyright", "artist", "meta")
                                               for tag in post[f"tag_string_{name}"].split()}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", post["created_at"])
    assert (post["image_width"], post["image_height"], post["file_ext"]) == (128, 128, "png")
    assert (post["is_deleted"], post["is_banned"]) == (False, False)
    assert post["file_url"] == f"{demo.url}/data/original/{row[0][:2]}/{row[0][2:4]}/{row[0]}.png"
    image = requests.get(post["file_url"], timeout=TIMEOUT)
    assert image.headers["Content-Type"] == "image/png"
    assert image.content == (DEFAULT_DATASET.parent / row[4]).read_bytes()
    assert hashlib.md5(image.content).hexdigest() == post["md5"]
    assert get(demo, "/posts/4242.json").status_code == 404


def test_from_demo_dataset_first_id() -> None:
    fake = FakeDanbooru.from_demo_dataset(DEFAULT_DATASET, first_id=7_000_001)
    assert fake.post_ids[0] == 7_000_096 and fake.post_ids[-1] == 7_000_001
    assert fake.post(7_000_002)["md5"] == "3924cc7fa9f70f8c8fafda650ca628cc"
    assert fake.post(7_000_002)["file_url"].startswith("/data/original/39/24/")  # relative until started


def test_rating_metatag_short_long_and_comma_forms(demo: FakeDanbooru) -> None:
    general = ids(get(demo, "/posts.json", tags="rating:g", limit=200))
    assert len(general) == 24 and general == sorted(general, reverse=True)
    assert all(demo.post(post_id)["rating"] == "g" for post_id in general)
    assert ids(get(demo, "/posts.json", tags="rating:general", limit=200)) == general
    assert ids(get(demo, "/posts.json", tags="RATING:General", limit=200)) == general
    both = ids(get(demo, "/posts.json", tags="rating:g,s", limit=200))
    assert len(both) == 48 and set(general) < set(both)
    assert len(ids(get(demo, "/posts.json", tags="-rating:e", limit=200))) == 72
    assert set(ids(get(demo, "/posts.json", tags="rating:safe", limit=200))) == {  # "safe" means s since 2022
        post["id"] for post in demo.posts if post["rating"] == "s"}


def test_plain_tags_must_all_be_present_and_the_tag_limit(demo: FakeDanbooru) -> None:
    stars = ids(get(demo, "/posts.json", tags="star_(symbol)", limit=200))
    both = ids(get(demo, "/posts.json", tags="star_(symbol) translated", limit=200))
    assert both and set(both) < set(stars)
    for post_id in both:
        assert {"star_(symbol)", "translated"} <= set(demo.post(post_id)["tag_string"].split())
    without = ids(get(demo, "/posts.json", tags="star_(symbol) -translated", limit=200))
    assert sorted(without + both) == sorted(stars)
    assert ids(get(demo, "/posts.json", tags="no_such_tag")) == []
    # free metatags (rating:, status:, limit:, id:) don't count against the limit of 2 tags; a third tag does
    assert get(demo, "/posts.json", tags="star_(symbol) translated rating:g status:active").status_code == 200
    too_many = get(demo, "/posts.json", tags="star_(symbol) translated border")
    assert too_many.status_code == 422
    assert too_many.json()["error"] == "PostQuery::TagLimitError"
    assert too_many.json()["message"] == "You cannot search for more than 2 tags at a time."
    assert ids(get(demo, "/posts.json", tags="id:10..12")) == [12, 11, 10]
    assert ids(get(demo, "/posts.json", tags="id:<4")) == [3, 2, 1]
    assert ids(get(demo, "/posts.json", tags="order:id limit:3")) == [1, 2, 3]


def test_limit_defaults_to_20_and_is_capped_at_200(fresh: FakeDanbooru) -> None:
    fresh.add_generated(230, image_size=(8, 8))
    assert len(ids(get(fresh, "/posts.json"))) == 20
    assert len(ids(get(fresh, "/posts.json", limit=500))) == 200
    assert len(ids(get(fresh, "/posts.json", limit=200))) == 200
    assert len(ids(get(fresh, "/posts.json", limit=0))) == 1  # clamped to 1..200, like Ruby's to_i.clamp
    assert len(ids(get(fresh, "/posts.json", limit="junk"))) == 1
    assert len(ids(get(fresh, "/posts.json", tags="limit:7"))) == 7


def test_numeric_pages(demo: FakeDanbooru) -> None:
    assert ids(get(demo, "/posts.json", limit=10, page=2)) == list(range(86, 76, -1))
    assert ids(get(demo, "/posts.json", limit=10, page=10)) == list(range(6, 0, -1))
    assert ids(get(demo, "/posts.json", limit=10, page=11)) == []
    first = ids(get(demo, "/posts.json", limit=5))
    for page in ("0", "-3", "junk", "1"):
        assert ids(get(demo, "/posts.json", limit=5, page=page)) == first
    paged = [post_id for page in range(1, 6) for post_id in ids(get(demo, "/posts.json", limit=20, page=page))]
    assert paged == list(range(96, 0, -1))


def test_page_beyond_the_limit_is_410_like_danbooru(demo: FakeDanbooru) -> None:
    assert ids(get(demo, "/posts.json", page=1000)) == []
    response = get(demo, "/posts.json", page=1001, tags="rating:g")
    assert response.status_code == 410
    body = response.json()
    assert body["success"] is False
    assert body["error"] == "PaginationExtension::PaginationError"
    assert body["message"] == "You cannot go beyond page 1000."
    assert get(demo, "/tag_aliases.json", page=1001).status_code == 410  # every index shares the paginator
    assert ids(get(demo, "/posts.json", page="b5000000", limit=2)) == [96, 95]  # cursors have no page limit


def test_the_last_allowed_page_comes_back_in_ascending_order() -> None:
    with FakeDanbooru(page_limit=3) as fake:
        fake.add_generated(12, image_size=(8, 8))
        assert ids(get(fake, "/posts.json", limit=3, page=2)) == [9, 8, 7]
        assert ids(get(fake, "/posts.json", limit=3, page=3)) == [4, 5, 6]  # Danbooru's sequential_after quirk
        assert get(fake, "/posts.json", limit=3, page=4).json()["message"] == "You cannot go beyond page 3."


def test_before_and_after_cursors(demo: FakeDanbooru) -> None:
    assert ids(get(demo, "/posts.json", page="b50", limit=3)) == [49, 48, 47]
    assert ids(get(demo, "/posts.json", page="B50", limit=3)) == [49, 48, 47]
    assert ids(get(demo, "/posts.json", page="a50", limit=3)) == [53, 52, 51]  # nearest ids above, newest first
    assert ids(get(demo, "/posts.json", page="a94", limit=5)) == [96, 95]
    assert ids(get(demo, "/posts.json", page="b1")) == []
    assert walk_before(demo, limit=7) == list(range(96, 0, -1))
    general = ids(get(demo, "/posts.json", tags="rating:g", limit=200))
    assert walk_before(demo, "rating:g", limit=5) == general


# -------------------------------------------------------------------------------------------- files and odd posts


def test_generated_posts_have_distinct_real_images(fresh: FakeDanbooru) -> None:
    new = fresh.add_generated(8, rating_cycle="gsqe", start_id=1000, image_size=(24, 24))
    assert new == list(range(1000, 1008))
    posts = get(fresh, "/posts.json").json()
    assert [post["rating"] for post in posts] == list("eqsgeqsg")
    assert len({post["md5"] for post in posts}) == 8
    for post in posts:
        data = requests.get(post["file_url"], timeout=TIMEOUT).content
        assert hashlib.md5(data).hexdigest() == post["md5"]
        assert Image.open(io.BytesIO(data)).size == (24, 24) == (post["image_width"], post["image_height"])
        assert post["file_size"] == len(data)
        assert post["tag_string_general"] and post["tag_string_artist"]
    head = requests.head(posts[0]["file_url"], timeout=TIMEOUT)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == posts[0]["file_size"]
    assert requests.get(fresh.url + "/data/original/00/00/" + "0" * 32 + ".png", timeout=TIMEOUT).status_code == 404


def test_deleted_banned_and_other_unusable_posts(fresh: FakeDanbooru) -> None:
    good = fresh.add_post(rating="g", tag_string_general="1girl solo")
    deleted = fresh.add_post(rating="g", is_deleted=True)  # on Danbooru deleted posts keep md5 and file_url
    hidden = fresh.add_post(rating="g", is_deleted=True, visible=False)
    banned = fresh.add_post(rating="g", is_banned=True)
    no_url = fresh.add_post(rating="g", file_url=None)
    video = fresh.add_post(rating="g", file_ext="mp4")
    ugoira = fresh.add_post(rating="g", file_ext="zip")
    lying = fresh.add_post(rating="g", image_bytes=b"announced", served_bytes=b"served")
    missing = fresh.add_post(rating="g", serve_file=False)
    jpeg = fresh.add_post(rating="g", file_ext="jpg")
    shown = {post["id"]: post for post in get(fresh, "/posts.json", limit=200).json()}
    assert set(shown) == {good, deleted, hidden, banned, no_url, video, ugoira, lying, missing, jpeg}
    assert shown[deleted]["is_deleted"] is True and "file_url" in shown[deleted] and "md5" in shown[deleted]
    for post_id in (hidden, banned):
        assert not {"md5", "file_url", "large_file_url", "preview_file_url"} & set(shown[post_id])
    assert shown[banned]["is_banned"] is True
    assert "file_url" not in shown[no_url] and "md5" in shown[no_url]
    assert shown[ugoira]["large_file_url"].endswith(f"/sample-{shown[ugoira]['md5']}.webm")
    video_bytes = requests.get(shown[video]["file_url"], timeout=TIMEOUT)
    assert video_bytes.headers["Content-Type"] == "video/mp4" and video_bytes.content[4:8] == b"ftyp"
    assert shown[lying]["md5"] == hashlib.md5(b"announced").hexdigest()
    assert requests.get(shown[lying]["file_url"], timeout=TIMEOUT).content == b"served"
    assert requests.get(shown[missing]["file_url"], timeout=TIMEOUT).status_code == 404
    assert Image.open(io.BytesIO(requests.get(shown[jpeg]["file_url"], timeout=TIMEOUT).content)).format == "JPEG"
    reasons = {post_id: fresh.unusable_reason(post_id) for post_id in shown}
    assert reasons == {good: None, deleted: "deleted", hidden: "deleted", banned: "banned", no_url: "no file_url",
                       video: "file type mp4", ugoira: "file type zip", lying: "md5 mismatch",
                       missing: "file missing", jpeg: None}
    assert fresh.raw_post(banned)["md5"]  # the test can still see what the API hides
    assert ids(get(fresh, "/posts.json", tags="status:deleted")) == [hidden, deleted]
    assert ids(get(fresh, "/posts.json", tags="-status:deleted status:active", limit=200)) == sorted(
        set(shown) - {deleted, hidden}, reverse=True)


def test_deleted_and_banned_posts_can_be_left_out_of_results() -> None:
    with FakeDanbooru(include_deleted=False, include_banned=False) as fake:
        kept = fake.add_post()
        deleted = fake.add_post(is_deleted=True)
        fake.add_post(is_banned=True)
        assert ids(get(fake, "/posts.json")) == [kept]
        assert ids(get(fake, "/posts.json", tags="status:deleted")) == [deleted]  # unless asked for


def test_expected_posts(fresh: FakeDanbooru) -> None:
    fresh.add_generated(20, rating_cycle="gs")  # ids 1-20: odd g, even s
    fresh.add_post(id=21, rating="g", is_deleted=True)
    fresh.add_post(id=22, rating="g", file_ext="webm")
    fresh.add_post(id=23, rating="g", image_bytes=b"x", served_bytes=b"y")
    fresh.add_generated(2, rating_cycle="g", start_id=24)  # 24, 25
    assert fresh.expected_ids("g") == [25, 24, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1]
    assert fresh.expected_ids("g", count=3) == [25, 24, 19]
    assert fresh.expected_ids("g", skip=3, count=2) == [19, 17]  # results 25 24 23 skipped; 22 21 unusable
    assert fresh.expected_ids("g", skip=6, count=2) == [17, 15]  # results 25 24 23 22 21 19 skipped
    assert fresh.expected_ids("g", skip=3, count=2, skip_mode="usable") == [17, 15]  # 25 24 19 skipped
    assert fresh.expected_ids("g", skip=4, count=2, skip_mode="site") == [19, 17]  # ids 25-22 skipped
    assert fresh.expected_ids("general,sensitive", count=3) == [25, 24, 20]
    assert fresh.expected_ids(["g", "s"], count=3) == [25, 24, 20]
    assert fresh.expected_ids(None, count=4) == [25, 24, 20, 19]
    walked = [post_id for post_id in walk_before(fresh, "rating:g", limit=4) if fresh.is_usable(post_id)]
    assert walked == fresh.expected_ids("g")
    assert fresh.expected_posts("g", count=1)[0] == get(fresh, "/posts/25.json").json()


def test_expected_posts_follow_include_deleted() -> None:
    with FakeDanbooru(include_deleted=False) as fake:
        fake.add_generated(3, rating_cycle="g")
        fake.add_post(rating="g", is_deleted=True)  # id 4: not a search result, so it doesn't use up a skip
        assert fake.expected_ids("g", skip=1) == [2, 1]


# -------------------------------------------------------------------------------------------- faults


def test_fail_next_429_with_retry_after_then_recovers(fresh: FakeDanbooru) -> None:
    fresh.add_generated(2)
    fresh.fail_next("/posts.json", 429, headers={"Retry-After": "1"})
    limited = get(fresh, "/posts.json")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert limited.json()["error"] == "RateLimiter::RateLimitError"
    assert limited.json()["message"] == "You're doing that too fast. Wait a minute and try again."
    assert get(fresh, "/posts.json").status_code == 200
    assert [record.status for record in fresh.requests_to("/posts.json")] == [429, 200]


def test_fail_next_503_n_times_only_on_its_path(fresh: FakeDanbooru) -> None:
    post_id = fresh.add_post()
    fresh.fail_next("/data/", 503, times=3)
    file_url = fresh.post(post_id)["file_url"]
    assert get(fresh, "/posts.json").status_code == 200  # another path: untouched
    assert [requests.get(file_url, timeout=TIMEOUT).status_code for _ in range(4)] == [503, 503, 503, 200]
    fresh.fail_next("/posts.json", 502, times=None)  # forever, until cleared
    assert [get(fresh, "/posts.json").status_code for _ in range(3)] == [502, 502, 502]
    assert "Bad Gateway" in get(fresh, "/posts.json").text
    fresh.clear_faults()
    assert get(fresh, "/posts.json").status_code == 200


def test_delay_next_makes_a_client_time_out(fresh: FakeDanbooru) -> None:
    fresh.add_post()
    fresh.delay_next("/posts.json", 0.6, times=1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(fresh.url + "/posts.json", timeout=0.15)
    started = time.monotonic()
    assert get(fresh, "/posts.json").status_code == 200
    assert time.monotonic() - started < 0.4


def test_stop_wakes_a_long_delay() -> None:
    fake = start_fake_danbooru()
    fake.delay_next("/", 30)
    thread = threading.Thread(target=lambda: requests.get(fake.url + "/posts.json", timeout=60), daemon=True)
    thread.start()
    fake.wait_for_requests("/posts.json", completed=False, timeout=TIMEOUT)
    started = time.monotonic()
    fake.stop()
    thread.join(TIMEOUT)
    assert time.monotonic() - started < 2 and not thread.is_alive()


def test_dropped_connections_and_truncated_bodies(fresh: FakeDanbooru) -> None:
    post_id = fresh.add_post(image_size=(64, 64))
    file_url = fresh.post(post_id)["file_url"]
    fresh.drop_next("/posts.json")
    with pytest.raises(requests.exceptions.ConnectionError):
        get(fresh, "/posts.json")
    assert get(fresh, "/posts.json").status_code == 200
    fresh.truncate_next("/data/")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(file_url, timeout=TIMEOUT)
    assert requests.get(file_url, timeout=TIMEOUT).content == fresh.file_bytes(post_id)
    assert [record.status for record in fresh.requests] == [0, 200, 200, 200]


def test_stall_next_stops_a_body_mid_way(fresh: FakeDanbooru) -> None:
    post_id = fresh.add_post(image_size=(64, 64))
    file_url = fresh.post(post_id)["file_url"]
    fresh.stall_next("/data/", 2.0)
    started = time.monotonic()
    with requests.get(file_url, timeout=0.3, stream=True) as response:
        assert response.status_code == 200  # the head came in time: only the body stalls
        with pytest.raises(requests.exceptions.ConnectionError, match="Read timed out"):
            response.content  # noqa: B018
    assert time.monotonic() - started < 2
    fresh.stall_next("/data/", 0.1)  # shorter than the timeout: the whole file arrives
    assert requests.get(file_url, timeout=TIMEOUT).content == fresh.file_bytes(post_id)


def test_echo_credentials_next_puts_the_header_in_the_error_body(fresh: FakeDanbooru) -> None:
    fresh.echo_credentials_next("/posts.json", status=502)
    answer = requests.get(fresh.url + "/posts.json", auth=("alice", "s3cret"), timeout=TIMEOUT)
    assert answer.status_code == 502
    assert answer.json()["message"] == "Request failed. Authorization: Basic YWxpY2U6czNjcmV0 (decoded: alice:s3cret)"
    assert get(fresh, "/posts.json").status_code == 200


def test_hostile_post_fields_are_served_as_given(fresh: FakeDanbooru) -> None:
    """An md5 that is a path, and a file URL of another scheme: the post shows them, its file is still served."""
    traversal = fresh.add_post(md5="../../victim", served_bytes=b"payload")
    plain = fresh.add_post(file_url="http://cdn.invalid/data/x.png")
    shown = fresh.post(traversal)
    assert shown["md5"] == "../../victim" and ".." not in shown["file_url"]
    assert requests.get(shown["file_url"], timeout=TIMEOUT).content == b"payload"
    assert fresh.post(plain)["file_url"] == "http://cdn.invalid/data/x.png"


def test_hook_sees_every_request_can_block_and_can_answer(fresh: FakeDanbooru) -> None:
    urls = [fresh.post(post_id)["file_url"] for post_id in fresh.add_generated(3)]
    release = threading.Event()
    seen: list[str] = []

    @fresh.on_request
    def hook(record):
        seen.append(record.path)
        if record.path.startswith("/data/") and len(fresh.requests_to("/data/")) == 2:
            release.wait(TIMEOUT)  # e.g. hold the 2nd image download while the test kills the client
        if record.query.get("tags") == "teapot":
            return 418, {"success": False, "message": "I'm a teapot"}, {"X-Fake": "yes"}
        return None

    assert requests.get(urls[0], timeout=TIMEOUT).status_code == 200
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(urls[1], timeout=0.2)
    release.set()
    assert requests.get(urls[2], timeout=TIMEOUT).status_code == 200
    teapot = get(fresh, "/posts.json", tags="teapot")
    assert (teapot.status_code, teapot.headers["X-Fake"], teapot.json()["message"]) == (418, "yes", "I'm a teapot")
    assert seen == [urlpath(urls[0]), urlpath(urls[1]), urlpath(urls[2]), "/posts.json"]


def urlpath(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def test_request_log(fresh: FakeDanbooru) -> None:
    fresh.add_post()
    session = requests.Session()
    session.headers["User-Agent"] = "tagger-eval-test/1.0"
    session.get(fresh.url + "/posts.json", params={"tags": "rating:g", "limit": 5, "page": "b10"}, timeout=TIMEOUT)
    session.get(fresh.url + "/tags.json", params={"search[name_comma]": "a,b"}, timeout=TIMEOUT)
    first, second = fresh.requests
    assert (first.index, first.method, first.path, first.status) == (0, "GET", "/posts.json", 200)
    assert first.query == {"tags": "rating:g", "limit": "5", "page": "b10"}
    assert first.headers["user-agent"] == first.user_agent == "tagger-eval-test/1.0"
    assert first.auth is None and first.login is None
    assert second.query == {"search[name_comma]": "a,b"}
    assert all(record.user_agent == "tagger-eval-test/1.0" for record in fresh.requests)
    assert fresh.wait_for_requests("/tags.json") == [second]
    with pytest.raises(TimeoutError):
        fresh.wait_for_requests("/tags.json", count=2, timeout=0.05)
    fresh.clear_log()
    assert fresh.requests == []


# -------------------------------------------------------------------------------------------- authentication


def test_auth_required_and_accepted_by_header_or_params() -> None:
    with FakeDanbooru(credentials=("alice", "s3cret")) as fake:
        post_id = fake.add_post()
        anonymous = get(fake, "/posts.json")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"] == "SessionLoader::AuthenticationFailure"
        by_header = requests.get(fake.url + "/posts.json", auth=("alice", "s3cret"), timeout=TIMEOUT)
        assert ids(by_header) == [post_id]
        by_params = get(fake, "/posts.json", login="alice", api_key="s3cret")
        assert ids(by_params) == [post_id]
        wrong = requests.get(fake.url + "/posts.json", auth=("alice", "nope"), timeout=TIMEOUT)
        assert (wrong.status_code, wrong.json()["message"]) == (401, "Invalid API key")
        assert get(fake, "/posts.json", login="alice", api_key="nope").status_code == 401
        half = get(fake, "/posts.json", login="alice")
        assert (half.status_code, half.json()["message"]) == (401, "Missing `login` or `api_key`")
        assert requests.get(fake.post(post_id)["file_url"], timeout=TIMEOUT).status_code == 200  # files: no auth
        methods = [(record.auth, record.login, record.status) for record in fake.requests]
        assert methods == [(None, None, 401), ("basic", "alice", 200), ("params", "alice", 200),
                           ("basic", "alice", 401), ("params", "alice", 401), ("params", "alice", 401),
                           (None, None, 200)]
        header_record = fake.requests[1]
        assert "api_key" not in header_record.query and "s3cret" not in header_record.url
        assert header_record.headers["Authorization"].startswith("Basic ")
        assert "api_key=s3cret" in fake.requests[2].url


def test_without_configured_credentials_any_auth_is_accepted(fresh: FakeDanbooru) -> None:
    fresh.add_post()
    assert get(fresh, "/posts.json").status_code == 200
    assert requests.get(fresh.url + "/posts.json", auth=("bob", "key"), timeout=TIMEOUT).status_code == 200
    assert fresh.requests[1].auth == "basic"


def test_optional_auth_mode() -> None:
    with FakeDanbooru(credentials=("alice", "s3cret"), require_auth=False) as fake:
        assert get(fake, "/posts.json").status_code == 200  # anonymous, as on Danbooru
        assert requests.get(fake.url + "/posts.json", auth=("alice", "x"), timeout=TIMEOUT).status_code == 401


# ------------------------------------------------------------------------------------ aliases, implications, tags


def test_alias_and_implication_search(fresh: FakeDanbooru) -> None:
    fresh.add_alias("kitty", "cat")
    fresh.add_alias("doggy", "dog")
    fresh.add_alias("old_name", "new_name", status="deleted")
    fresh.add_alias("puppy", "dog", status="retired")
    fresh.add_implication("cat", "animal")
    fresh.add_implication("dog", "animal", status="deleted")
    rows = get(fresh, "/tag_aliases.json").json()
    assert [row["id"] for row in rows] == [4, 3, 2, 1]  # id descending
    assert {"id", "antecedent_name", "consequent_name", "status", "created_at"} <= set(rows[0])
    found = get(fresh, "/tag_aliases.json", **{"search[antecedent_name_comma]": "kitty,old_name,puppy,nothing"})
    assert [row["antecedent_name"] for row in found.json()] == ["puppy", "old_name", "kitty"]
    active = get(fresh, "/tag_aliases.json", **{"search[antecedent_name_comma]": "kitty,old_name,puppy",
                                                  "search[status]": "active"}).json()
    assert [(row["antecedent_name"], row["consequent_name"], row["status"]) for row in active] == [
        ("kitty", "cat", "active")]
    assert [row["id"] for row in get(fresh, "/tag_aliases.json", limit=2, page=2).json()] == [2, 1]
    assert [row["id"] for row in get(fresh, "/tag_aliases.json", limit=2, page="b4").json()] == [3, 2]
    assert get(fresh, "/tag_aliases.json", **{"search[consequent_name]": "dog"}).json()[0]["antecedent_name"] == \
        "puppy"
    implications = get(fresh, "/tag_implications.json", **{"search[antecedent_name_comma]": "cat,dog",
                                                             "search[status]": "active"}).json()
    assert [(row["antecedent_name"], row["consequent_name"]) for row in implications] == [("cat", "animal")]


def test_tags_derive_categories_and_counts_from_posts(fresh: FakeDanbooru) -> None:
    fresh.add_post(tag_string_general="1girl solo", tag_string_character="hatsune_miku",
                   tag_string_copyright="vocaloid", tag_string_artist="someone", tag_string_meta="highres")
    fresh.add_post(tag_string_general="1girl", tag_string_meta="highres")
    fresh.add_tag("obsolete_tag", category=0, post_count=0)
    names = "1girl,solo,hatsune_miku,vocaloid,someone,highres,obsolete_tag,unknown"
    rows = {row["name"]: row for row in get(fresh, "/tags.json", **{"search[name_comma]": names}).json()}
    assert {name: (row["category"], row["post_count"]) for name, row in rows.items()} == {
        "1girl": (0, 2), "solo": (0, 1), "hatsune_miku": (4, 1), "vocaloid": (3, 1), "someone": (1, 1),
        "highres": (5, 2), "obsolete_tag": (0, 0)}
    assert {"id", "name", "category", "post_count"} <= set(rows["1girl"])
    characters = get(fresh, "/tags.json", **{"search[category]": "4"}).json()
    assert [row["name"] for row in characters] == ["hatsune_miku"]
    nonempty = get(fresh, "/tags.json", **{"search[name_comma]": names, "search[hide_empty]": "true"}).json()
    assert "obsolete_tag" not in {row["name"] for row in nonempty}
    assert len(get(fresh, "/tags.json", **{"search[name_comma]": names}, limit=2).json()) == 2


def test_active_aliases_apply_to_post_searches(fresh: FakeDanbooru) -> None:
    post_id = fresh.add_post(tag_string_general="cat")
    fresh.add_alias("kitty", "cat")
    fresh.add_alias("neko", "cat", status="deleted")
    assert ids(get(fresh, "/posts.json", tags="kitty")) == [post_id]
    assert ids(get(fresh, "/posts.json", tags="neko")) == []


# -------------------------------------------------------------------------------------------- conveniences


def test_counts_single_posts_and_only(demo: FakeDanbooru) -> None:
    assert get(demo, "/counts/posts.json", tags="rating:q").json() == {"counts": {"posts": 24}}
    assert get(demo, "/posts.json", limit=2, only="id,rating").json() == [
        {"id": 96, "rating": demo.post(96)["rating"]}, {"id": 95, "rating": demo.post(95)["rating"]}]
    assert get(demo, "/posts/7.json").json() == demo.post(7)
    assert get(demo, "/nothing.json").status_code == 404


def test_the_fixture_gives_a_running_empty_fake(fake_danbooru: FakeDanbooru) -> None:
    assert fake_danbooru.running and not fake_danbooru.url.endswith("/")
    assert get(fake_danbooru, "/posts.json").json() == []


def test_start_fake_danbooru_with_the_demo() -> None:
    fake = start_fake_danbooru(demo=True, first_id=101)
    try:
        assert ids(get(fake, "/posts.json", limit=1)) == [196]
    finally:
        fake.stop()
    fake.stop()  # twice is fine
    assert not fake.running
