"""Batched inference for the per-post tests: one model call per batch of upcoming posts, with the next batch's
images decoded in threads while the model works (Pillow releases the GIL while decoding).

The tests still score one post each; the first test of a batch runs the model for the whole batch, the following
ones take their output from it. Each post's runtime is the batch's time divided by its size. Whatever goes wrong
with one post (reading its row, its image) and the warnings decoding its image raised come out in that post's own
test, never in the test that happened to read it ahead.

With a prediction store (`OutputStore`), a post whose output it holds is neither decoded nor inferred: its image
is only checked against its md5 and the pixel limit (as a fresh run would), and it is served with the runtime
measured when it was inferred. Every inferred output is saved as soon as its batch returns.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

from PIL import Image

from tagger_eval.config import DEFAULT_MAX_IMAGE_PIXELS
from tagger_eval.data.dataset import Dataset, ImageTooLarge, Post
from tagger_eval.taggers import Sample, Tagger

T = TypeVar("T")


class Output(NamedTuple):
    """The tagger's output for one image and its share of the batch's runtime (or the stored ones)."""

    probabilities: dict[str, float]
    runtime_s: float
    from_store: bool = False


class OutputStore(Protocol):
    """Where outputs are kept between runs (`prediction_store.TaggerOutputs`)."""

    def lookup(self, post: Post) -> tuple[dict[str, float], float] | None: ...

    def save(self, post: Post, output: dict[str, float], runtime_s: float) -> None: ...


class InferenceRunner(Protocol):
    """Runs the timed model call and returns what it returns (pytest-benchmark's pedantic run, or a plain call)."""

    def __call__(self, infer: Callable[[], T]) -> T: ...


@dataclass
class _Slot:
    """One upcoming post: read, decoded in a thread, then given its output; or the error that stopped it there."""

    post: Post | None = None
    image: Image.Image | None = None
    output: Output | None = None
    error: Exception | None = None
    warnings: tuple[warnings.WarningMessage, ...] = ()


class BatchPredictor:
    def __init__(self, tagger: Tagger, batch_size: int, order: Sequence[int],
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, workers: int | None = None,
                 store: OutputStore | None = None) -> None:
        self.tagger = tagger
        self.store = store
        self.batch_size = batch_size
        self.order = list(order)
        self.max_pixels = max_pixels
        self._position = {post_id: index for index, post_id in enumerate(self.order)}
        self._pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1),
                                        thread_name_prefix="tagger-eval-decode")
        self._pending: dict[int, Future[_Slot]] = {}  # read, decoding or decoded
        self._ready: dict[int, _Slot] = {}  # through the model (or failed before it), waiting for the post's test
        self._stored: set[int] = set()  # pending posts whose output comes from the store: checked, not decoded

    def output(self, post_id: int, read: Callable[[int], Post], run_inference: InferenceRunner) -> tuple[Post, Output]:
        """The post and its output, running the model on a batch that starts with it when it has none yet.

        `read(post_id)` gives a post ready to predict or raises; what it raises for this post, and any
        `ImageUnavailable`, is raised here, after the warnings its decoding raised are shown here.
        """
        if post_id not in self._ready:
            self._start([post_id], read)
            if post_id in self._stored:  # served alone: no model call in this post's test
                self._stored.discard(post_id)
                self._ready[post_id] = self._pending.pop(post_id).result()
            else:
                self._run_batch(post_id, read, run_inference)
        slot = self._ready.pop(post_id)
        reissue(slot.warnings)
        if slot.error is not None:
            raise slot.error
        assert slot.post is not None and slot.output is not None
        return slot.post, slot.output

    def _upcoming(self, post_id: int, count: int) -> list[int]:
        start = self._position.get(post_id)
        upcoming = [post_id] if start is None else self.order[start : start + count]
        return [other for other in upcoming if other == post_id or other not in self._ready]

    def _start(self, post_ids: Iterable[int], read: Callable[[int], Post]) -> None:
        for post_id in post_ids:
            if post_id in self._pending or post_id in self._ready:
                continue
            try:
                post = read(post_id)
            except Exception as error:  # this post's problem: its own test raises it
                failed: Future[_Slot] = Future()
                failed.set_result(_Slot(error=error))
                self._pending[post_id] = failed
            else:
                stored = self.store.lookup(post) if self.store is not None else None
                if stored is not None:
                    self._stored.add(post_id)
                self._pending[post_id] = self._pool.submit(self._decode, post, stored)

    def _decode(self, post: Post, stored: tuple[dict[str, float], float] | None = None) -> _Slot:
        """In a decoding thread: the image or why not, with the warnings decoding raised kept for the post's test.
        A stored output is checked against the file instead (its md5, the size in its header), never decoded."""
        with thread_warnings() as caught:
            try:
                if stored is None:
                    slot = _Slot(post, image=Dataset.load_image(post, self.max_pixels))
                else:
                    Dataset.check_image(post, self.max_pixels)
                    slot = _Slot(post, output=Output(*stored, from_store=True))
            except Exception as error:
                slot = _Slot(post, error=error)
        # A size refusal already says what Pillow's decompression bomb warning would.
        refused = isinstance(slot.error, ImageTooLarge)
        slot.warnings = tuple(message for message in caught
                              if not (refused and issubclass(message.category, Image.DecompressionBombWarning)))
        return slot

    def _run_batch(self, post_id: int, read: Callable[[int], Post], run_inference: InferenceRunner) -> None:
        batch_ids = self._upcoming(post_id, self.batch_size)
        self._start(batch_ids, read)
        slots = {batch_id: self._pending.pop(batch_id).result() for batch_id in batch_ids}
        self._stored.difference_update(batch_ids)
        # The next batch decodes while this one runs.
        following = self._position.get(batch_ids[-1])
        if following is not None:
            self._start(self.order[following + 1 : following + 1 + self.batch_size], read)
        samples = [Sample(slot.post, slot.image) for slot in slots.values()
                   if slot.post is not None and slot.image is not None]

        def infer() -> tuple[list[dict[str, float]], float]:
            start = time.perf_counter()
            outputs = self.tagger.predict(samples)
            return outputs, time.perf_counter() - start

        if samples:
            outputs, elapsed = run_inference(infer)
            if len(outputs) != len(samples):
                raise RuntimeError(f"tagger {self.tagger.name} returned {len(outputs)} predictions for "
                                   f"{len(samples)} images")
            for sample, output in zip(samples, outputs, strict=True):
                slot = slots[sample.post.id]
                slot.output, slot.image = Output(output, elapsed / len(samples)), None
                if self.store is not None:  # committed now: a run killed later keeps it
                    self.store.save(sample.post, output, slot.output.runtime_s)
        self._ready.update(slots)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


_capture = threading.local()
_router_lock = threading.Lock()


class _WarningRouter:
    """Stands in for `warnings._showwarnmsg`, through which every warning the filters let pass is shown: a thread
    inside `thread_warnings` keeps its own, the others' are shown as before."""

    def __init__(self, show: Callable[[warnings.WarningMessage], None]) -> None:
        self.show = show

    def __call__(self, message: warnings.WarningMessage) -> None:
        captured: list[warnings.WarningMessage] | None = getattr(_capture, "warnings", None)
        if captured is None:
            self.show(message)
        else:
            captured.append(message)


@contextmanager
def thread_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """The warnings this thread raises in the block, kept instead of shown. `warnings.catch_warnings` swaps
    process-wide state, so in a decoding thread it would take (or lose) the warnings pytest records for the test
    running meanwhile; this leaves every other thread's warnings where they were going."""
    with _router_lock:
        if not isinstance(warnings._showwarnmsg, _WarningRouter):  # type: ignore[attr-defined]
            warnings._showwarnmsg = _WarningRouter(warnings._showwarnmsg)  # type: ignore[attr-defined]
    outer = getattr(_capture, "warnings", None)
    captured: list[warnings.WarningMessage] = []
    _capture.warnings = captured
    try:
        yield captured
    finally:
        _capture.warnings = outer


def reissue(caught: Iterable[warnings.WarningMessage]) -> None:
    """Show warnings kept by `thread_warnings` here (in the test of the post they concern), under today's filters."""
    for message in caught:
        warnings.warn_explicit(message.message, message.category, message.filename, message.lineno,
                               source=message.source)
