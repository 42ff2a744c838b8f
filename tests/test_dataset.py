"""`tagger_eval.data.dataset`: reading data.db files written in tmp_path, and every way one can be unusable."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tagger_eval.data import dataset as dataset_module
from tagger_eval.data.dataset import (
    REQUIRED_COLUMNS,
    Dataset,
    DatasetError,
    DatasetLocked,
    ImageTooLarge,
    ImageUnavailable,
    InvalidPost,
    Post,
    create_schema,
)
from tagger_eval.tags import ARTIST, CHARACTER, COPYRIGHT, GENERAL, META, RATING

POSTS = [
    {
        "id": 3,
        "rating": "g",
        "tag_string_general": "Long_Hair blue_eyes  1girl",
        "tag_string_character": "hatsune_miku_\\(vocaloid\\)",
        "tag_string_copyright": "vocaloid",
        "tag_string_artist": "some_artist",
        "tag_string_meta": "highres",
    },
    {"id": 1, "rating": "s", "tag_string_general": "solo"},
    {"id": 2, "rating": "q", "tag_string_general": "1boy", "tag_string_copyright": "original"},
    {"id": 10, "rating": "e", "tag_string_general": "solo"},
]


def write_png(path: Path, size: tuple[int, int] = (16, 16), mode: str = "RGB", noise: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if noise:
        # Incompressible pixels, so the file is mostly image data and cutting it in half truncates the pixels.
        image = Image.frombytes(mode, size, bytes((i * 7919 + (i >> 3) * 131) % 251 for i in range(
            size[0] * size[1] * len(mode))))
    else:
        colour = (200, 30, 40, 128) if mode == "RGBA" else (200, 30, 40)
        image = Image.new(mode, size, colour)
    image.save(path, format="PNG")
    return path


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_dataset(root: Path, posts: list[dict] | None = None, metadata: dict[str, str] | None = None,
                  images: bool = True, check_constraints: bool = True) -> Path:
    """A data.db with the library's own schema, and one small PNG per post under images/, its md5 in the row
    (without images, the md5 of the PNG that `write_png` writes by default)."""
    root.mkdir(parents=True, exist_ok=True)
    db_path = root / "data.db"
    connection = sqlite3.connect(db_path)
    try:
        create_schema(connection)
        if not check_constraints:
            connection.execute("PRAGMA ignore_check_constraints = ON")
        for post in POSTS if posts is None else posts:
            row = {column: "" for column in REQUIRED_COLUMNS if column.startswith("tag_string_")}
            row.update(file_ext="png", image_path=f"images/{post['id']}.png", source="test")
            image = write_png(root / row["image_path"])
            row.update(md5=md5_of(image), **post)
            if not images:
                image.unlink()
            columns = ", ".join(row)
            connection.execute(f"INSERT INTO posts ({columns}) VALUES ({', '.join('?' * len(row))})",
                               tuple(row.values()))
        connection.executemany("INSERT INTO metadata (key, value) VALUES (?, ?)", (metadata or {}).items())
        connection.commit()
    finally:
        connection.close()
    return db_path


@pytest.fixture
def dataset(tmp_path: Path):
    with Dataset(write_dataset(tmp_path / "ds", metadata={"source": "unit test", "posts": "4"})) as opened:
        yield opened


def test_post_ids_are_ordered_and_len_counts_posts(dataset: Dataset) -> None:
    assert dataset.post_ids() == [1, 2, 3, 10]
    assert len(dataset) == 4


def test_truth_tags_are_normalised_with_their_categories(dataset: Dataset) -> None:
    post = dataset.get(3)
    assert isinstance(post, Post)
    assert dict(post.tags) == {
        "long_hair": GENERAL,
        "blue_eyes": GENERAL,
        "1girl": GENERAL,
        "hatsune_miku_(vocaloid)": CHARACTER,
        "vocaloid": COPYRIGHT,
        "some_artist": ARTIST,
        "highres": META,
        "rating:general": RATING,
    }
    assert post.truth == frozenset(post.tags)
    assert (post.id, post.md5, post.file_ext, post.rating) == (3, md5_of(post.image_path), "png", "g")
    assert post.image_path == dataset.root / "images" / "3.png"
    with pytest.raises(TypeError):
        post.tags["extra"] = GENERAL  # type: ignore[index]


@pytest.mark.parametrize(("post_id", "expected"), [
    (3, "rating:general"), (1, "rating:sensitive"), (2, "rating:questionable"), (10, "rating:explicit"),
])
def test_rating_letter_becomes_rating_tag(dataset: Dataset, post_id: int, expected: str) -> None:
    post = dataset.get(post_id)
    ratings = {tag: category for tag, category in post.tags.items() if category == RATING}
    assert ratings == {expected: RATING}


def test_a_tag_in_two_columns_keeps_the_first_columns_category(tmp_path: Path) -> None:
    db = write_dataset(tmp_path, posts=[{"id": 1, "rating": "g", "tag_string_general": "Vocaloid",
                                         "tag_string_copyright": "vocaloid"}])
    with Dataset(db) as dataset:
        assert dataset.get(1).tags["vocaloid"] == GENERAL


def test_iteration_yields_every_post_in_id_order(dataset: Dataset) -> None:
    posts = []
    for post in dataset:
        posts.append(post)
    assert [post.id for post in posts] == [1, 2, 3, 10]
    assert all(isinstance(post, Post) for post in posts)
    assert posts[2] == dataset.get(3)


def test_iteration_streams_posts_one_at_a_time(tmp_path: Path) -> None:
    # The last post is broken: a streaming iterator hands out the first ones before it ever reads that row.
    db = write_dataset(tmp_path, posts=[{"id": 1, "rating": "g"}, {"id": 2, "rating": "s"},
                                        {"id": 3, "rating": "x"}], check_constraints=False)
    with Dataset(db) as dataset:
        iterator = iter(dataset)
        assert next(iterator).id == 1
        assert next(iterator).id == 2
        with pytest.raises(DatasetError, match="post 3 has an invalid rating"):
            next(iterator)


def test_metadata(dataset: Dataset) -> None:
    assert dataset.metadata() == {"source": "unit test", "posts": "4"}


def test_metadata_is_empty_without_a_metadata_table(tmp_path: Path) -> None:
    db = write_dataset(tmp_path)
    connection = sqlite3.connect(db)
    connection.execute("DROP TABLE metadata")
    connection.commit()
    connection.close()
    with Dataset(db) as dataset:
        assert dataset.metadata() == {}
        assert len(dataset) == len(POSTS)


def test_missing_file_is_a_dataset_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "data.db"
    with pytest.raises(DatasetError, match=r"dataset not found: .*nowhere.*data\.db"):
        Dataset(missing)


def test_a_directory_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=rf"dataset not found: {re.escape(str(tmp_path))} is a directory without a "
                                           "data.db; give the data.db file or the directory that holds it"):
        Dataset(tmp_path)


def test_a_file_that_is_not_sqlite_is_a_dataset_error(tmp_path: Path) -> None:
    garbage = tmp_path / "data.db"
    garbage.write_bytes(b"this is not a database, just some bytes\x00\xff\xfe" * 64)
    with pytest.raises(DatasetError, match="is not a readable sqlite database"):
        Dataset(garbage)


def test_a_database_without_posts_table_is_a_dataset_error(tmp_path: Path) -> None:
    db = tmp_path / "data.db"
    connection = sqlite3.connect(db)
    connection.execute("CREATE TABLE pictures (id INTEGER PRIMARY KEY)")
    connection.commit()
    connection.close()
    with pytest.raises(DatasetError, match="has no 'posts' table"):
        Dataset(db)


def test_a_posts_table_missing_columns_names_them(tmp_path: Path) -> None:
    db = tmp_path / "data.db"
    connection = sqlite3.connect(db)
    kept = [column for column in REQUIRED_COLUMNS if column not in ("rating", "tag_string_meta", "image_path")]
    connection.execute(f"CREATE TABLE posts ({', '.join(kept)})")
    connection.commit()
    connection.close()
    with pytest.raises(DatasetError, match=r"lacks column\(s\) rating, tag_string_meta, image_path$"):
        Dataset(db)


def test_an_invalid_rating_fails_only_when_that_post_is_read(tmp_path: Path) -> None:
    db = write_dataset(tmp_path, posts=[{"id": 1, "rating": "g"}, {"id": 2, "rating": "x"}],
                       check_constraints=False)
    with Dataset(db) as dataset:
        assert len(dataset) == 2
        assert dataset.get(1).rating == "g"
        with pytest.raises(InvalidPost, match=r"post 2 has an invalid rating: unknown Danbooru rating 'x'"):
            dataset.get(2)


def test_unknown_post_id_is_a_key_error(dataset: Dataset) -> None:
    with pytest.raises(KeyError, match="post 99 is not in"):
        dataset.get(99)


def set_md5(db: Path, post_id: int, image: Path) -> None:
    """Make the row's md5 the file's, so that what a test examines is the decoding, not the md5 check."""
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE posts SET md5 = ? WHERE id = ?", (md5_of(image), post_id))
    connection.close()


def png_header(width: int, height: int) -> bytes:
    """A PNG of that size with no pixel data: enough for Pillow to read the size, not to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_load_image(dataset: Dataset) -> None:
    image = Dataset.load_image(dataset.get(1))
    assert image.size == (16, 16)
    assert image.convert("RGB").getpixel((0, 0)) == (200, 30, 40)


def test_an_rgba_image_loads(tmp_path: Path) -> None:
    db = write_dataset(tmp_path, posts=[{"id": 1, "rating": "g"}], images=False)
    set_md5(db, 1, write_png(tmp_path / "images" / "1.png", size=(20, 12), mode="RGBA"))
    with Dataset(db) as dataset:
        image = Dataset.load_image(dataset.get(1))
    assert image.mode == "RGBA"
    assert image.size == (20, 12)
    assert image.getpixel((5, 5)) == (200, 30, 40, 128)


def test_a_missing_image_names_its_path(tmp_path: Path) -> None:
    db = write_dataset(tmp_path, posts=[{"id": 7, "rating": "g"}], images=False)
    with Dataset(db) as dataset, pytest.raises(ImageUnavailable, match="post 7: image file missing") as error:
        Dataset.load_image(dataset.get(7))
    assert str(tmp_path / "images" / "7.png") in str(error.value)


def test_a_truncated_png_is_unavailable(tmp_path: Path) -> None:
    db = write_dataset(tmp_path, posts=[{"id": 1, "rating": "g"}], images=False)
    path = write_png(tmp_path / "images" / "1.png", size=(64, 64), noise=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    set_md5(db, 1, path)
    with Dataset(db) as dataset, pytest.raises(ImageUnavailable, match="is unreadable") as error:
        Dataset.load_image(dataset.get(1))
    assert str(path) in str(error.value)


def test_a_file_that_is_not_an_image_is_unavailable(tmp_path: Path) -> None:
    db = write_dataset(tmp_path, posts=[{"id": 1, "rating": "g"}], images=False)
    path = tmp_path / "images" / "1.png"
    path.write_text("<html>not found</html>")
    set_md5(db, 1, path)
    with Dataset(db) as dataset, pytest.raises(ImageUnavailable, match="is unreadable") as error:
        Dataset.load_image(dataset.get(1))
    assert str(path) in str(error.value)


def test_swapped_image_files_are_not_their_posts_images(tmp_path: Path) -> None:
    db = write_dataset(tmp_path, posts=[{"id": 1, "rating": "g"}, {"id": 2, "rating": "s"}], images=False)
    one, two = tmp_path / "images" / "1.png", tmp_path / "images" / "2.png"
    write_png(one, size=(16, 16))
    write_png(two, size=(24, 24))
    set_md5(db, 1, one)
    set_md5(db, 2, two)
    with Dataset(db) as dataset:
        assert Dataset.load_image(dataset.get(1)).size == (16, 16)
        before = dataset.content_hash()
    one.rename(tmp_path / "swap.png")
    two.rename(one)
    (tmp_path / "swap.png").rename(two)
    with Dataset(db) as dataset:
        # The ground truth is unchanged, but no post is scored on another's bytes: each file is refused, naming
        # the post, the file and both md5s.
        assert dataset.content_hash() == before
        for post_id, path, actual in ((1, one, md5_of(one)), (2, two, md5_of(two))):
            post = dataset.get(post_id)
            expected = rf"post {post_id}: image {re.escape(str(path))} does not match the post's md5 \(expected " \
                       rf"{post.md5}, the file's is {actual}\): it is not this post's image; download it again"
            with pytest.raises(ImageUnavailable, match=expected):
                Dataset.load_image(post)


def test_the_content_hash_changes_with_a_posts_md5(tmp_path: Path) -> None:
    db = write_dataset(tmp_path, posts=[{"id": 1, "rating": "g"}])
    with Dataset(db) as dataset:
        before = dataset.content_hash()
    set_md5(db, 1, write_png(tmp_path / "images" / "1.png", size=(8, 8)))
    with Dataset(db) as dataset:
        assert dataset.content_hash() != before


def test_an_image_above_the_pixel_limit_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    db = write_dataset(tmp_path, posts=[{"id": 1, "rating": "g"}, {"id": 2, "rating": "g"}], images=False)
    huge = tmp_path / "images" / "1.png"
    huge.write_bytes(png_header(12000, 12000))  # 144 megapixels, below Pillow's own hard limit
    set_md5(db, 1, huge)
    set_md5(db, 2, write_png(tmp_path / "images" / "2.png", size=(16, 16)))
    with Dataset(db) as dataset:
        with pytest.warns(Image.DecompressionBombWarning), pytest.raises(ImageTooLarge, match=(
                rf"post 1: image {re.escape(str(huge))} is 12000x12000 \(144,000,000 pixels\), more than the limit "
                r"of 40,000,000; raise it with --max-image-pixels=144000000 to evaluate this post")):
            Dataset.load_image(dataset.get(1))
        # The limit is the caller's: a 16x16 image is refused under a limit of 255 pixels and loads under 256.
        with pytest.raises(ImageTooLarge, match=r"is 16x16 \(256 pixels\), more than the limit of 255"):
            Dataset.load_image(dataset.get(2), max_pixels=255)
        assert Dataset.load_image(dataset.get(2), max_pixels=256).size == (16, 16)


def test_pillows_own_hard_limit_is_named_when_the_option_goes_beyond_it(tmp_path: Path) -> None:
    db = write_dataset(tmp_path, posts=[{"id": 1, "rating": "g"}], images=False)
    bomb = tmp_path / "images" / "1.png"
    bomb.write_bytes(png_header(20000, 20000))
    set_md5(db, 1, bomb)
    with Dataset(db) as dataset, pytest.raises(ImageUnavailable, match=(
            r"post 1: image .*1\.png is refused by Pillow: .*400000000 pixels.*twice PIL\.Image\.MAX_IMAGE_PIXELS, "
            r"holds whatever --max-image-pixels says")):
        Dataset.load_image(dataset.get(1), max_pixels=10**9)


def test_broken_images_do_not_stop_iteration_over_the_other_posts(tmp_path: Path) -> None:
    posts = [{"id": n, "rating": "g"} for n in range(1, 6)]
    db = write_dataset(tmp_path, posts=posts)
    (tmp_path / "images" / "2.png").unlink()
    truncated = tmp_path / "images" / "3.png"
    data = write_png(truncated, size=(64, 64), noise=True).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    set_md5(db, 3, truncated)
    (tmp_path / "images" / "4.png").write_bytes(b"GIF89a but not really")
    loaded, unavailable = [], []
    with Dataset(db) as dataset:
        for post in dataset:
            try:
                loaded.append((post.id, Dataset.load_image(post).size))
            except ImageUnavailable as error:
                unavailable.append((post.id, str(error)))
    assert loaded == [(1, (16, 16)), (5, (16, 16))]
    assert [post_id for post_id, _ in unavailable] == [2, 3, 4]
    assert "missing" in unavailable[0][1]
    assert "unreadable" in unavailable[1][1]
    assert "does not match the post's md5" in unavailable[2][1]


def test_a_directory_holding_a_data_db_opens_it(tmp_path: Path) -> None:
    db = write_dataset(tmp_path / "ds")
    with Dataset(tmp_path / "ds") as dataset:
        assert dataset.path == db
        assert dataset.post_ids() == [1, 2, 3, 10]


def test_a_lock_held_by_another_process_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_module, "BUSY_TIMEOUT_S", 0.05)
    db = write_dataset(tmp_path)
    with Dataset(db) as dataset:
        writer = sqlite3.connect(db)
        writer.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(DatasetLocked, match=(
                    rf"another process holds a lock on {re.escape(str(db))} \(a download writing to it\?\); wait for "
                    r"it to finish or evaluate a copy of the dataset \(gave up after waiting 0\.05 s: database is "
                    r"locked\)")):
                dataset.get(1)
            with pytest.raises(DatasetLocked):
                dataset.metadata()  # not mistaken for a missing table
        finally:
            writer.close()
        assert dataset.get(1).id == 1


def test_opening_a_locked_file_says_it_is_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_module, "BUSY_TIMEOUT_S", 0.05)
    db = write_dataset(tmp_path)
    writer = sqlite3.connect(db)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DatasetLocked, match="another process holds a lock on"):
            Dataset(db)
    finally:
        writer.close()
