"""Batched inference for the per-post tests: one model call per batch of upcoming posts, with the next batch's
images decoded in threads while the model works (Pillow releases the GIL while decoding).

The tests still score one post each; the first test of a batch runs the model for the whole batch, the following
ones take their output from it. Each post's runtime is the batch's time divided by its size.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar

from PIL import Image

from tagger_eval.data.dataset import Dataset, ImageUnavailable, Post
from tagger_eval.taggers import Sample, Tagger

T = TypeVar("T")
Output = tuple[dict[str, float], float]  # (the tagger's output for one image, its share of the batch's runtime)


class InferenceRunner(Protocol):
    """Runs the timed model call and returns what it returns (pytest-benchmark's pedantic run, or a plain call)."""

    def __call__(self, infer: Callable[[], T]) -> T: ...


class BatchPredictor:
    def __init__(self, tagger: Tagger, batch_size: int, order: Sequence[int], workers: int | None = None) -> None:
        self.tagger = tagger
        self.batch_size = batch_size
        self.order = list(order)
        self._position = {post_id: index for index, post_id in enumerate(self.order)}
        self._pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1),
                                        thread_name_prefix="tagger-eval-decode")
        self._images: dict[int, tuple[Post, Future[Image.Image]]] = {}
        self._outputs: dict[int, Output] = {}

    def output(
        self,
        dataset: Dataset,
        post: Post,
        prepare: Callable[[Post], Post],
        run_inference: InferenceRunner,
    ) -> Output:
        """This post's output, running the model on a batch that starts with it when it has none yet.

        Raises `ImageUnavailable` for this post's image; other posts of the batch with unreadable images are left
        out (their own test reports it).
        """
        if post.id not in self._outputs:
            self._run_batch(dataset, post, prepare, run_inference)
        return self._outputs.pop(post.id)

    def _upcoming(self, post_id: int, count: int) -> list[int]:
        start = self._position.get(post_id)
        return [post_id] if start is None else self.order[start : start + count]

    def _decode(self, dataset: Dataset, post_ids: Sequence[int], prepare: Callable[[Post], Post]) -> None:
        for post_id in post_ids:
            if post_id not in self._images:
                post = prepare(dataset.get(post_id))
                self._images[post_id] = (post, self._pool.submit(Dataset.load_image, post))

    def _run_batch(self, dataset: Dataset, post: Post, prepare: Callable[[Post], Post],
                   run_inference: InferenceRunner) -> None:
        batch_ids = self._upcoming(post.id, self.batch_size)
        if post.id not in self._images:  # the caller has already read and prepared this post
            self._images[post.id] = (post, self._pool.submit(Dataset.load_image, post))
        self._decode(dataset, batch_ids, prepare)
        samples = []
        for post_id in batch_ids:
            batch_post, image = self._images.pop(post_id)
            try:
                samples.append(Sample(batch_post, image.result()))
            except ImageUnavailable:
                if post_id == post.id:
                    raise
        # The next batch decodes while this one runs.
        following = self._position.get(batch_ids[-1])
        if following is not None:
            self._decode(dataset, self.order[following + 1 : following + 1 + self.batch_size], prepare)

        def infer() -> tuple[list[dict[str, float]], float]:
            start = time.perf_counter()
            outputs = self.tagger.predict(samples)
            return outputs, time.perf_counter() - start

        outputs, elapsed = run_inference(infer)
        if len(outputs) != len(samples):
            raise RuntimeError(f"tagger {self.tagger.name} returned {len(outputs)} predictions for {len(samples)} "
                               "images")
        share = elapsed / len(samples)
        for sample, output in zip(samples, outputs, strict=True):
            self._outputs[sample.post.id] = (output, share)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
