"""The error explorer as HTML: each tagger's worst and best posts, its most missed and wrong tags, where two disagree.

Thumbnails are small JPEGs embedded as data: URIs (the page stays one self-contained file), made with Pillow from
the dataset's images after checking each file against its post's md5; a post whose image is missing, altered,
unreadable or too large gets a placeholder that says why. Every text from data (tags, labels, reasons, URLs) is
escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import warnings
from collections.abc import Sequence

from PIL import Image

from tagger_eval.config import DEFAULT_MAX_IMAGE_PIXELS
from tagger_eval.reports.explorer import (
    Explorer,
    PairComparison,
    PostCase,
    PostImage,
    TagCount,
    TaggerErrors,
    TagMark,
    category_name,
)

THUMBNAIL_SIDE = 128  # pixels, the longer side
JPEG_QUALITY = 80
KIND_TITLES = {"hit": "hit: predicted and true", "truth": "in the dataset's truth, not missed (the run's tag scope "
               "may not count it)", "missed": "missed: true, not predicted", "wrong": "wrong: predicted, not true"}
CSS = """
nav.contents a { margin-right: 1em; }
section.tagger { border-top: 2px solid #ccc; margin-top: 2em; }
table.tags caption { text-align: left; font-weight: bold; }
ol.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 0.8em;
  list-style: none; padding: 0; }
li.post, div.pair-row > div { border: 1px solid #ddd; border-radius: 4px; padding: 0.5em; background: #fcfcfc; }
.thumb { display: block; max-width: 128px; max-height: 128px; margin-bottom: 0.3em; }
.thumb.none { width: 128px; height: 64px; background: #f0f0f0; color: #666; font-size: 0.75em; padding: 0.3em;
  box-sizing: border-box; overflow: hidden; }
.caption { font-weight: bold; margin-bottom: 0.3em; } .score { font-variant-numeric: tabular-nums; }
ul.tags { list-style: none; padding: 0; margin: 0; line-height: 1.6; }
ul.tags li { display: inline-block; font-size: 0.78em; padding: 0 0.35em; margin: 0 0.15em 0.15em 0;
  border-radius: 3px; overflow-wrap: anywhere; }
li.hit { background: #d7efd7; } li.hit::before { content: "\\2713\\00a0"; }
li.truth { background: #ececec; }
li.missed { background: #fff1c4; border: 1px dashed #b8860b; } li.missed::before { content: "\\2013\\00a0"; }
li.wrong { background: #f6cfcf; } li.wrong::before { content: "\\2717\\00a0"; }
.p { color: #555; margin-left: 0.25em; font-variant-numeric: tabular-nums; }
div.legend ul.tags { display: inline; }
div.pair-row { display: grid; grid-template-columns: 150px 1fr 1fr; gap: 0.6em; margin-bottom: 0.8em; }
table.tags { border-collapse: collapse; font-size: 0.85em; margin: 0.3em 2em 1em 0; display: inline-table;
  vertical-align: top; }
table.tags th, table.tags td { padding: 0.15em 0.5em; border-bottom: 1px solid #eee; text-align: right; }
table.tags th:nth-child(-n+2), table.tags td:nth-child(-n+2) { text-align: left; overflow-wrap: anywhere; }
"""


class ThumbnailError(Exception):
    """Why a post has no thumbnail (shown on its placeholder)."""


def thumbnail(image: PostImage, side: int = THUMBNAIL_SIDE) -> bytes:
    """A JPEG of at most `side` pixels a side, transparency on white; the file must match the post's md5."""
    try:
        data = image.path.read_bytes()
    except FileNotFoundError:
        raise ThumbnailError(f"image file missing: {image.path}") from None
    except OSError as error:
        raise ThumbnailError(f"image unreadable: {error}") from None
    if hashlib.md5(data).hexdigest() != image.md5.strip().lower():
        raise ThumbnailError("the image file does not match the post's md5")
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as picture:
            warnings.simplefilter("ignore")
            if picture.width * picture.height > DEFAULT_MAX_IMAGE_PIXELS:
                raise ThumbnailError(f"image too large ({picture.width}x{picture.height})")
            picture.draft("RGB", (side, side))  # JPEG: decode at a reduced scale
            rgba = picture.convert("RGBA")
            rgba.thumbnail((side, side), Image.Resampling.LANCZOS)
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            out = io.BytesIO()
            flat.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
            return out.getvalue()
    except ThumbnailError:
        raise
    except Exception as error:  # Pillow raises many kinds on a broken or hostile file
        raise ThumbnailError(f"image unreadable: {type(error).__name__}: {error}") from None


class Thumbnails:
    """Each post's `<img>` (or placeholder), made once however many galleries show the post."""

    def __init__(self, images: dict[int, PostImage] | None) -> None:
        self.images = images
        self.cache: dict[int, str] = {}

    def html(self, post: int) -> str:
        if post not in self.cache:
            self.cache[post] = self._make(post)
        return self.cache[post]

    def _make(self, post: int) -> str:
        if self.images is None:
            return ""
        if post not in self.images:
            return '<div class="thumb none">no image: not in the dataset</div>'
        try:
            data = thumbnail(self.images[post])
        except ThumbnailError as error:
            return f'<div class="thumb none">no image: {html.escape(str(error))}</div>'
        with Image.open(io.BytesIO(data)) as picture:
            width, height = picture.size
        encoded = base64.b64encode(data).decode("ascii")
        return (f'<img class="thumb" src="data:image/jpeg;base64,{encoded}" width="{width}" height="{height}" '
                f'alt="post {post}">')


def _link(url_base: str | None, post: int, inner: str) -> str:
    if url_base is None:
        return inner
    return f'<a href="{html.escape(f"{url_base}/posts/{post}")}">{inner}</a>'


def _mark(mark: TagMark) -> str:
    probability = f'<span class="p">{mark.probability:.2f}</span>' if mark.probability is not None else ""
    title = KIND_TITLES[mark.kind] + (f"; {category_name(mark.category)}" if mark.category is not None else "")
    return f'<li class="{mark.kind}" title="{html.escape(title)}">{html.escape(mark.tag)}{probability}</li>'


def _tags(case: PostCase) -> str:
    return f'<ul class="tags">{"".join(_mark(mark) for mark in case.tags)}</ul>'


def _card(case: PostCase, thumbs: Thumbnails, url_base: str | None) -> list[str]:
    thumb = thumbs.html(case.post)
    counts = (f"{len(case.of_kind('missed'))} missed, {len(case.of_kind('wrong'))} wrong"
              + (f", {len(case.of_kind('hit'))} hit" if case.of_kind("hit") else ""))
    return [f'<li class="post" data-post="{case.post}" data-score="{case.score:.6f}">',
            *([_link(url_base, case.post, thumb)] if thumb else []),
            f'<div class="caption">{_link(url_base, case.post, f"post {case.post}")}: '
            f'<span class="score">{case.score:.3f}</span> <span class="note">({counts})</span></div>',
            _tags(case), "</li>"]


def _gallery(kind: str, title: str, cases: Sequence[PostCase], thumbs: Thumbnails, url_base: str | None) -> list[str]:
    if not cases:
        return []
    cards = [line for case in cases for line in _card(case, thumbs, url_base)]
    return [f"<h4>{html.escape(title)}</h4>", f'<ol class="gallery {kind}">', *cards, "</ol>"]


def _count_table(title: str, counts: Sequence[TagCount], missed: bool) -> list[str]:
    if not counts:
        return [f'<p class="note">{html.escape(title)}: none.</p>']
    rate = missed and any(count.with_tag is not None for count in counts)
    header = ["category", "tag", "posts", "share of scored posts", *(["of posts with the tag"] if rate else [])]
    lines = [f'<table class="tags {"missed" if missed else "wrong"}">', f"<caption>{html.escape(title)}</caption>",
             "<thead><tr>" + "".join(f'<th scope="col">{html.escape(cell)}</th>' for cell in header) + "</tr></thead>",
             "<tbody>"]
    for count in counts:
        cells = [category_name(count.category), count.tag, str(count.posts), f"{count.share:.1%}"]
        if rate:
            cells.append("-" if count.miss_rate is None else f"{count.miss_rate:.0%} of {count.with_tag}")
        lines.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    return [*lines, "</tbody>", "</table>"]


def tagger_explorer(errors: TaggerErrors, thumbs: Thumbnails, url_base: str | None) -> list[str]:
    """One tagger's galleries and tag tables (inside its section of the page)."""
    if errors.perfect:
        return [f'<p class="note">No error: nothing missed and nothing wrong on any of its {errors.scored} scored '
                "posts.</p>"]
    return [
        *_gallery("worst", f"The {len(errors.worst)} worst posts (lowest score first)", errors.worst, thumbs,
                  url_base),
        *_gallery("best", f"The {len(errors.best)} best posts", errors.best, thumbs, url_base),
        "<h4>Tags most often missed and wrong, per category</h4>",
        '<div class="tag-tables">',
        *_count_table("most often missed", errors.missed, missed=True),
        *_count_table("most often wrong", errors.wrong, missed=False),
        "</div>",
    ]


def _pair(pair: PairComparison, thumbs: Thumbnails, url_base: str | None) -> list[str]:
    first, second = (html.escape(label) for label in pair.taggers)
    lines = ['<section class="pair">', f"<h3>{first} and {second}</h3>"]
    if not pair.posts:
        return [*lines, f'<p class="note">Equal scores on all {pair.common} posts both scored.</p>', "</section>"]
    lines.append(f'<p class="note">The {len(pair.posts)} posts, of the {pair.common} both scored, with the largest '
                 "score difference.</p>")
    for one, two in pair.posts:
        thumb = thumbs.html(one.post)
        lines += [f'<div class="pair-row" data-post="{one.post}">',
                  f"<div>{_link(url_base, one.post, thumb) if thumb else ''}"
                  f'<div class="caption">{_link(url_base, one.post, f"post {one.post}")}</div>'
                  f'<div class="score">difference {one.score - two.score:+.3f}</div></div>']
        for case, label in ((one, first), (two, second)):
            lines += [f'<div class="side"><div class="caption">{label}: <span class="score">{case.score:.3f}'
                      "</span></div>", _tags(case), "</div>"]
        lines.append("</div>")
    return [*lines, "</section>"]


def pairs_section(explorer: Explorer, thumbs: Thumbnails, url_base: str | None) -> list[str]:
    lines = ['<h2 id="side-by-side">Side by side: where two taggers disagree most</h2>',
             f'<p class="note">{html.escape(explorer.pair_note)}.</p>']
    return lines + [line for pair in explorer.pairs for line in _pair(pair, thumbs, url_base)]


def legend(dataset_note: str, probabilities: bool, url_base: str | None) -> list[str]:
    """What the colours mean, where truth and images came from, whether there are probabilities and links."""
    marks = "".join(_mark(TagMark(kind, kind, None)) for kind in ("hit", "missed", "wrong"))
    return ['<div class="note legend">', f'Tags: <ul class="tags">{marks}</ul>',
            f"<p>Grey: {html.escape(KIND_TITLES['truth'])}. {html.escape(dataset_note[0].upper() + dataset_note[1:])}."
            " " + ("Each tag's probability follows it." if probabilities else
                   "This results file keeps no per-post probabilities, so tags are shown without them.")
            + " " + ("Posts link to their Danbooru page." if url_base else
                     "The dataset does not come from Danbooru, so posts have no links.") + "</p>", "</div>"]
