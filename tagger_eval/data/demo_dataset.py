"""The bundled demo dataset: synthetic Danbooru-style posts of drawn shapes, generated deterministically.

Danbooru images cannot be shipped, so the demo is drawn: coloured shapes (one per quadrant) on a plain or gradient
background, with a coloured frame whose colour gives the rating. Its tags follow Danbooru's categories: what is
drawn is general, a few colour/shape pairs are "characters", and, as on Danbooru, the copyright, the artist and meta
tags cannot be seen in the pixels, so no tagger gets a perfect score under `--tag-scope=all`.

The dataset ships inside the package (`DEFAULT_DIR`, package data of the wheel), so an installed tagger-eval evaluates
it from any directory; `tagger-eval make-demo` writes a copy elsewhere, never into the package. After a change to the
generator (bump `GENERATOR_VERSION`), a checkout refreshes the bundled copy with
`python -c "from tagger_eval.data import demo_dataset as d; d.generate(d.DEFAULT_DIR)"`.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
from dataclasses import dataclass
from math import cos, pi, sin
from pathlib import Path

from PIL import Image, ImageDraw

from tagger_eval.data.dataset import create_schema
from tagger_eval.tags import CHARACTER, GENERAL, RATING, RATING_LETTERS

SIZE = 128
BORDER = 4
SEED = 20221201
POSTS = 96
GENERATOR_VERSION = "1"
# Package data: the wheel ships it, so an installed tagger-eval evaluates the demo from any directory.
DEFAULT_DIR = Path(__file__).resolve().parent / "demo"
DEFAULT_DATASET = DEFAULT_DIR / "data.db"
SOURCE = "synthetic: tagger_eval.data.demo_dataset"  # the `source` metadata of every generated demo

SHAPE_TAGS = {"circle": "circle", "square": "square", "triangle": "triangle", "star": "star_(symbol)"}
SHAPE_COLOURS = {
    "red": (214, 39, 40),
    "blue": (31, 119, 180),
    "green": (44, 160, 44),
    "yellow": (240, 200, 30),
    "purple": (148, 103, 189),
}
BACKGROUNDS = {
    "white": (250, 250, 250),
    "black": (20, 20, 20),
    "grey": (128, 128, 128),
    "pink": (250, 190, 210),
    "aqua": (150, 230, 230),
}
# The frame carries the rating; its colours are also shape colours, which fools taggers that only count colours.
RATING_FRAMES = {"g": None, "s": "yellow", "q": "purple", "e": "red"}
CHARACTERS = {
    ("yellow", "circle"): "sunny_(tagger-eval)",
    ("red", "star"): "ruby_star_(tagger-eval)",
    ("green", "triangle"): "emerald_(tagger-eval)",
}
COUNT_TAGS = {1: "1shape", 2: "2shapes", 3: "3shapes", 4: "4shapes"}
COPYRIGHT_TAG = "tagger-eval_demo"
ARTISTS = ("kanon_(artist)", "mizuiro_(artist)", "tsubaki_(artist)")
META_TAGS = ("commentary", "highres", "translated")
# Centres of the four quadrants, in final-image pixels.
CELLS = ((32, 32), (96, 32), (32, 96), (96, 96))
MIN_RADIUS, MAX_RADIUS = 9, 20


def vocabulary() -> dict[str, int]:
    """Every tag a demo tagger can output, with its category (what a model's tag list would hold)."""
    tags = {tag: GENERAL for tag in SHAPE_TAGS.values()}
    tags.update({f"{colour}_{shape}": GENERAL for colour in SHAPE_COLOURS for shape in SHAPE_TAGS})
    tags.update({tag: GENERAL for tag in (*COUNT_TAGS.values(), "multiple_shapes")})
    tags.update({f"{name}_background": GENERAL for name in BACKGROUNDS})
    tags.update({"simple_background": GENERAL, "gradient_background": GENERAL, "border": GENERAL})
    tags.update({f"{colour}_border": GENERAL for colour in RATING_FRAMES.values() if colour})
    tags.update({tag: CHARACTER for tag in CHARACTERS.values()})
    tags.update({tag: RATING for tag in RATING_LETTERS.values()})
    return tags


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    cell: int
    radius: int
    dx: int
    dy: int


@dataclass(frozen=True)
class Scene:
    rating: str
    background: str
    gradient: bool
    shapes: tuple[Shape, ...]
    artist: str
    meta: tuple[str, ...]

    def tag_strings(self) -> dict[str, str]:
        """The post's Danbooru tag strings, one per `posts` tag column."""
        general = {SHAPE_TAGS[s.kind] for s in self.shapes} | {f"{s.colour}_{s.kind}" for s in self.shapes}
        general |= {COUNT_TAGS[len(self.shapes)], f"{self.background}_background"}
        general.add("gradient_background" if self.gradient else "simple_background")
        if len(self.shapes) > 1:
            general.add("multiple_shapes")
        frame = RATING_FRAMES[self.rating]
        if frame:
            general |= {"border", f"{frame}_border"}
        characters = {CHARACTERS[(s.colour, s.kind)] for s in self.shapes if (s.colour, s.kind) in CHARACTERS}
        columns = {
            "tag_string_general": general,
            "tag_string_character": characters,
            "tag_string_copyright": {COPYRIGHT_TAG},
            "tag_string_artist": {self.artist},
            "tag_string_meta": set(self.meta),
        }
        return {column: " ".join(sorted(tags)) for column, tags in columns.items()}


def random_scene(rng: random.Random, rating: str) -> Scene:
    cells = sorted(rng.sample(range(len(CELLS)), rng.randint(1, len(CELLS))))
    shapes = tuple(
        Shape(
            kind=rng.choice(sorted(SHAPE_TAGS)),
            colour=rng.choice(sorted(SHAPE_COLOURS)),
            cell=cell,
            radius=rng.randint(MIN_RADIUS, MAX_RADIUS),
            dx=rng.randint(-4, 4),
            dy=rng.randint(-4, 4),
        )
        for cell in cells
    )
    return Scene(
        rating=rating,
        background=rng.choice(sorted(BACKGROUNDS)),
        gradient=rng.random() < 0.3,
        shapes=shapes,
        artist=rng.choice(ARTISTS),
        meta=tuple(tag for tag in META_TAGS if rng.random() < 0.3),
    )


def render(scene: Scene) -> Image.Image:
    """Drawn at twice the size and box-filtered down, so edges are anti-aliased like real artwork."""
    scale = 2
    side = SIZE * scale
    image = Image.new("RGB", (side, side), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    if scene.gradient:
        top = BACKGROUNDS[scene.background]
        bottom = tuple(channel // 2 + 64 for channel in top)
        for y in range(side):
            mix = y / (side - 1)
            colour = tuple(round(a + (b - a) * mix) for a, b in zip(top, bottom, strict=True))
            draw.line([(0, y), (side, y)], fill=colour)
    for shape in scene.shapes:
        cx, cy = CELLS[shape.cell]
        _draw_shape(draw, shape.kind, ((cx + shape.dx) * scale, (cy + shape.dy) * scale), shape.radius * scale,
                    SHAPE_COLOURS[shape.colour])
    frame = RATING_FRAMES[scene.rating]
    if frame:
        width = BORDER * scale
        draw.rectangle([0, 0, side - 1, side - 1], outline=SHAPE_COLOURS[frame], width=width)
    return image.resize((SIZE, SIZE), Image.Resampling.BOX)


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, centre: tuple[int, int], radius: int,
                colour: tuple[int, int, int]) -> None:
    x, y = centre
    if kind == "circle":
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
    elif kind == "square":
        half = round(radius * 0.8)
        draw.rectangle([x - half, y - half, x + half, y + half], fill=colour)
    elif kind == "triangle":
        draw.polygon(_star_points(x, y, radius, radius, 3), fill=colour)
    elif kind == "star":
        draw.polygon(_star_points(x, y, radius, radius * 0.4, 5), fill=colour)
    else:
        raise ValueError(f"unknown shape {kind!r}")


def _star_points(x: int, y: int, outer: float, inner: float, points: int) -> list[tuple[float, float]]:
    """A regular polygon (inner == outer) or star, pointing up."""
    if inner == outer:
        angles = [(-pi / 2) + 2 * pi * k / points for k in range(points)]
        return [(round(x + outer * cos(a), 2), round(y + outer * sin(a), 2)) for a in angles]
    vertices = []
    for k in range(points * 2):
        radius = outer if k % 2 == 0 else inner
        angle = -pi / 2 + pi * k / points
        vertices.append((round(x + radius * cos(angle), 2), round(y + radius * sin(angle), 2)))
    return vertices


def generate(out_dir: Path, posts: int = POSTS, seed: int = SEED) -> Path:
    """Write `data.db` and `images/` under `out_dir`; the same arguments always give the same bytes."""
    if posts % len(RATING_LETTERS):
        raise ValueError(f"posts must be a multiple of {len(RATING_LETTERS)} (one stratum per rating)")
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    images_dir = out_dir / "images"
    images_dir.mkdir(exist_ok=True)
    for old in images_dir.glob("*.png"):
        old.unlink()
    db_path = out_dir / "data.db"
    db_path.unlink(missing_ok=True)
    ratings = [letter for letter in RATING_LETTERS for _ in range(posts // len(RATING_LETTERS))]
    rng.shuffle(ratings)
    connection = sqlite3.connect(db_path)
    try:
        create_schema(connection)
        for post_id, rating in enumerate(ratings, start=1):
            scene = random_scene(rng, rating)
            relative = Path("images") / f"{post_id:04d}.png"
            render(scene).save(out_dir / relative, format="PNG", optimize=False, compress_level=9)
            data = (out_dir / relative).read_bytes()
            connection.execute(
                "INSERT INTO posts (id, md5, file_ext, rating, tag_string_general, tag_string_character,"
                " tag_string_copyright, tag_string_artist, tag_string_meta, image_path, image_width, image_height,"
                " source, source_url, created_at, fetched_at)"
                " VALUES (:id, :md5, 'png', :rating, :tag_string_general, :tag_string_character,"
                " :tag_string_copyright, :tag_string_artist, :tag_string_meta, :image_path, :size, :size,"
                " 'synthetic', NULL, NULL, NULL)",
                {"id": post_id, "md5": hashlib.md5(data).hexdigest(), "rating": rating,
                 "image_path": relative.as_posix(), "size": SIZE, **scene.tag_strings()},
            )
        connection.executemany(
            "INSERT INTO metadata (key, value) VALUES (?, ?)",
            [("source", SOURCE), ("generator_version", GENERATOR_VERSION),
             ("seed", str(seed)), ("posts", str(posts))],
        )
        connection.commit()
        connection.execute("VACUUM")
    finally:
        connection.close()
    return db_path


def is_demo(db_path: Path) -> bool:
    """Whether `db_path` is a demo dataset written by `generate` (what `make-demo` may overwrite)."""
    try:
        connection = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        row = connection.execute("SELECT value FROM metadata WHERE key = 'source'").fetchone()
    except sqlite3.Error:  # not a database, or no metadata table
        return False
    finally:
        connection.close()
    return row is not None and row[0] == SOURCE
