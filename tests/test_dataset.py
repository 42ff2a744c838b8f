"""`tagger_eval.data.dataset`: reading data.db files written in tmp_path, and every way one can be unusable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from tagger_eval.data.dataset import REQUIRED_COLUMNS, Dataset, DatasetError, ImageUnavailable, Post, create_schema
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


def write_dataset(root: Path, posts: list[dict] | None = None, metadata: dict[str, str] | None = None,
                  images: bool = True, check_constraints: bool = True) -> Path:
    """A data.db with the library's own schema, and one small PNG per post under images/."""
    root.mkdir(parents=True, exist_ok=True)
    db_path = root / "data.db"
    connection = sqlite3.connect(db_path)
    try:
        create_schema(connection)
        if not check_constraints:
            connection.execute("PRAGMA ignore_check_constraints = ON")
        for post in POSTS if posts is None else posts:
            row = {column: "" for column in REQUIRED_COLUMNS if column.startswith("tag_string_")}
            row.update(md5=f"md5-{post['id']}", file_ext="png", image_path=f"images/{post['id']}.png",
                       source="test")
            row.update(post)
            columns = ", ".join(row)
            connection.execute(f"INSERT INTO posts ({columns}) VALUES ({', '.join('?' * len(row))})",
                               tuple(row.values()))
            if images:
                write_png(root / row["image_path"])
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
    assert (post.id, post.md5, post.file_ext, post.rating) == (3, "md5-3", "png", "g")
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
    with pytest.raises(DatasetError, match="dataset not found"):
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
        with pytest.raises(DatasetError, match=r"post 2 has an invalid rating: unknown Danbooru rating 'x'"):
            dataset.get(2)


def test_unknown_post_id_is_a_key_error(dataset: Dataset) -> None:
    with pytest.raises(KeyError, match="post 99 is not in"):
        dataset.get(99)


def test_load_image(dataset: Dataset) -> None:
    image = Dataset.load_image(dataset.get(1))
    assert image.size == (16, 16)
    assert image.convert("RGB").getpixel((0, 0)) == (200, 30, 40)


def test_an_rgba_image_loads(tmp_path: Path) -> None:
    db = write_dataset(tmp_path, posts=[{"id": 1, "rating": "g"}], images=False)
    write_png(tmp_path / "images" / "1.png", size=(20, 12), mode="RGBA")
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
    with Dataset(db) as dataset, pytest.raises(ImageUnavailable, match="is unreadable") as error:
        Dataset.load_image(dataset.get(1))
    assert str(path) in str(error.value)


def test_a_file_that_is_not_an_image_is_unavailable(tmp_path: Path) -> None:
    db = write_dataset(tmp_path, posts=[{"id": 1, "rating": "g"}], images=False)
    path = tmp_path / "images" / "1.png"
    path.parent.mkdir()
    path.write_text("<html>not found</html>")
    with Dataset(db) as dataset, pytest.raises(ImageUnavailable, match="is unreadable") as error:
        Dataset.load_image(dataset.get(1))
    assert str(path) in str(error.value)


def test_broken_images_do_not_stop_iteration_over_the_other_posts(tmp_path: Path) -> None:
    posts = [{"id": n, "rating": "g"} for n in range(1, 6)]
    db = write_dataset(tmp_path, posts=posts)
    (tmp_path / "images" / "2.png").unlink()
    truncated = tmp_path / "images" / "3.png"
    data = write_png(truncated, size=(64, 64), noise=True).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
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
    assert all("unreadable" in message for _, message in unavailable[1:])
