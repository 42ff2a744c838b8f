"""How much the evaluation costs beyond the model's own inference: `python benchmarks/run.py`.

For each compute-equivalent model (benchmarks/compute_models.py), on the same images of the bundled demo dataset:
  (a) raw: the model call alone on the runtime the evaluation uses (the tagger's own onnxruntime session), on images
      decoded and preprocessed beforehand, at batch sizes 1, 4 and 8 (warm-up excluded: one batch of that size is
      run before the clock starts; nothing else is timed);
  (b) eval: the whole `pytest --tagger=wd14-onnx:DIR` run in a subprocess (start-up, model load, decoding,
      preprocessing, scoring, summary, results JSON included), at the default settings (no --tagger-batch-size,
      so batch 1: what a user gets) and at the batch size that made raw fastest;
  (c) http: the seed's way, image by image through a local webui-API-shaped server running the same model (WD
      models only).
The DeepDanbooru-sized ResNet-50 runs on onnxruntime in (a) and (b), as the evaluation runs it: its ONNX conversion
is made and cached (under `$TAGGER_EVAL_CACHE/deepdanbooru-onnx`) before (b), which starts without TensorFlow. It
needs TensorFlow to be built and converted, and is skipped with a line saying so where TensorFlow is not installed.
It prints images/s, `eval/raw = X.XX (default settings)`, `eval/raw = X.XX (batch size B, the fastest raw
setting)` and `http/raw = X.XX` per model, the peak memory of the evaluation, the peak memory of a 10x larger
dataset, and the time to score and summarise 30,000 posts.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from compute_models import KERAS_MODELS, ONNX_MODELS, ensure, unavailable
from PIL import Image

from tagger_eval.data.dataset import Dataset
from tagger_eval.data.demo_dataset import DEFAULT_DATASET
from tagger_eval.records import PostResult
from tagger_eval.reports.leaderboard import format_table, summarise
from tagger_eval.taggers import Sample, TaggerOptions
from tagger_eval.taggers.wd14 import WD14Tagger, prepare_image


def dataset_of(posts: int, directory: Path) -> Path:
    """The first `posts` demo posts; past the demo's 96, its posts again under new ids with images of their own (one
    pixel changed, so each image has its own md5 and the prediction store cannot serve one for another)."""
    (directory / "images").mkdir(parents=True, exist_ok=True)
    db_path = directory / "data.db"
    shutil.copyfile(DEFAULT_DATASET, db_path)
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT * FROM posts ORDER BY id").fetchall()
        db.execute("DELETE FROM posts")
        columns = len(rows[0])
        for index in range(posts):
            row = list(rows[index % len(rows)])
            row[0] = index + 1
            source = DEFAULT_DATASET.parent / row[9]
            if index < len(rows):
                row[9] = str(source)  # image_path: absolute, so the demo's own images need no copies
            else:
                row[1], row[9] = _variant(source, directory / "images" / f"{index + 1:05d}.png", index)
            db.execute(f"INSERT INTO posts VALUES ({', '.join('?' * columns)})", row)
    db.close()
    return db_path


def _variant(source: Path, target: Path, seed: int) -> tuple[str, str]:
    """A copy of a demo image with one pixel changed: (its md5, its path)."""
    with Image.open(source) as image:
        pixels = image.convert("RGB")
    x, y = seed % pixels.width, (seed // pixels.width) % pixels.height
    red, green, blue = pixels.getpixel((x, y))  # type: ignore[misc]
    pixels.putpixel((x, y), ((red + 1) % 256, green, blue))
    pixels.save(target)
    return hashlib.md5(target.read_bytes()).hexdigest(), str(target)


def raw_seconds(model_dir: Path, db_path: Path, batch_size: int) -> float:
    """The model call alone, batched, on inputs prepared beforehand."""
    if model_dir.name in KERAS_MODELS:
        from tagger_eval.taggers.deepdanbooru import DeepDanbooruTagger

        tagger = DeepDanbooruTagger(model_dir, TaggerOptions(), batch_size=batch_size)  # converts on first use
        if tagger.onnx_path is None:
            raise SystemExit(f"{model_dir}: not converted to ONNX, so the evaluation would not run on onnxruntime")
        with Dataset(db_path) as dataset:
            batch = tagger.preprocess([Sample(post, Dataset.load_image(post)) for post in dataset])
    else:
        tagger = WD14Tagger.from_directory(model_dir, TaggerOptions())
        with Dataset(db_path) as dataset:
            batch = np.stack([prepare_image(Dataset.load_image(post), tagger.input_size) for post in dataset])
    tagger.run(batch[:batch_size])  # warm-up (the evaluation's first batch pays it), excluded
    start = time.perf_counter()
    for offset in range(0, len(batch), batch_size):
        tagger.run(batch[offset : offset + batch_size])
    return time.perf_counter() - start


# A small launcher measures pytest's own peak memory: measured from this process, a forked child would still count
# the pages it shares with this one (the benchmark holds a model) until it execs.
LAUNCHER = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print('peak-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


# The plugins an installed tagger-eval runs with (its own and pytest-benchmark, a dependency). Those of the test
# extras (hypothesis, pytest-xdist, pytest-httpserver) cost about 1 s of start-up in this checkout's environment, a
# cost of the environment rather than of the evaluation: `--all-plugins` times the run with them.
RUN_PLUGINS = ("-p", "tagger_eval.run.plugin", "-p", "pytest_benchmark.plugin")


def pytest_run(arguments: list[str], workdir: Path, all_plugins: bool = False) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of one `pytest` subprocess, which runs the model on every image:
    as at default settings it writes the prediction store, a new one each time (an earlier run's would serve the
    images instead of the model)."""
    store = workdir / "stores" / f"{time.time_ns()}.sqlite"
    command = [sys.executable, "-c", LAUNCHER, sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
               *(() if all_plugins else RUN_PLUGINS), "--benchmark-disable", "--no-tagger-results",
               "--score-floor=-1e9", f"--tagger-store={store}", *arguments]
    environment = dict(os.environ)
    if not all_plugins:
        environment["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=False, env=environment)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"pytest failed:\n{completed.stdout[-3000:]}{completed.stderr[-2000:]}")
    if "from the prediction store" in completed.stdout:
        raise SystemExit(f"the run did not infer, it read stored outputs:\n{completed.stdout[-3000:]}")
    peak_kib = int(completed.stdout.rsplit("peak-kib", 1)[1])
    return seconds, peak_kib / 1024


class WebuiHandler(BaseHTTPRequestHandler):
    """The stable-diffusion-webui tagger extension's two endpoints, answering with the original flat caption."""

    tagger: WD14Tagger

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.reply({"models": ["bench"]})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        image = Image.open(io.BytesIO(base64.b64decode(request["image"])))
        row = self.tagger.run(prepare_image(image, self.tagger.input_size)[None])[0]
        caption = {name.removeprefix("rating:"): float(p) for name, p in zip(self.tagger.tag_names, row, strict=True)
                   if name.startswith("rating:") or p >= request["threshold"]}
        self.reply({"caption": caption})


def http_seconds(model_dir: Path, db_path: Path, workdir: Path, all_plugins: bool = False) -> float:
    WebuiHandler.tagger = WD14Tagger.from_directory(model_dir, TaggerOptions())
    server = ThreadingHTTPServer(("127.0.0.1", 0), WebuiHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        seconds, _ = pytest_run([f"--tagger=webui:{url}#bench", f"--dataset={db_path}", "--http-timeout=600"],
                                workdir, all_plugins)
    finally:
        server.shutdown()
    return seconds


def scoring_seconds(posts: int = 30_000) -> float:
    """Aggregating and printing the leaderboard of `posts` results (the model-free end of a run)."""
    rng = random.Random(0)
    results = []
    for post in range(posts):
        truth, correct, wrong = rng.randint(10, 40), rng.randint(0, 10), rng.randint(0, 10)
        counts = {"score": (correct - wrong) / truth, "correct": correct, "incorrect": wrong,
                  "missed": truth - correct, "truth_size": truth, "predicted_size": correct + wrong,
                  "rating_predicted": True, "rating_correct": rng.random() < 0.8,
                  "practical_incorrect": wrong, "practical_predicted": correct + wrong - 1}
        results.append(PostResult("bench", post, "scored", -1.0, 0.35, runtime_s=0.5, counts=counts))
    start = time.perf_counter()
    format_table(summarise(results))
    return time.perf_counter() - start


DEFAULT_BATCH_SIZE = 1  # the evaluation's --tagger-batch-size when none is given
RAW_BATCH_SIZES = (1, 4, 8)


def measure(name: str, model_dir: Path, db_path: Path, workdir: Path, batch_sizes: tuple[int, ...] = RAW_BATCH_SIZES,
            http: bool = True, all_plugins: bool = False) -> list[str]:
    """One model's lines: raw at each batch size, the evaluation at the default settings and at the batch size
    that made raw fastest, each against raw at the same batch size, and the webui's way against the fastest raw."""
    with Dataset(db_path) as dataset:
        images = len(dataset)
    sizes = tuple(sorted({DEFAULT_BATCH_SIZE, *batch_sizes}))
    raw = {size: raw_seconds(model_dir, db_path, size) for size in sizes}
    best = min(sizes, key=raw.__getitem__)
    family = "deepdanbooru" if name in KERAS_MODELS else "wd14-onnx"
    arguments = [f"--tagger={family}:{model_dir}", f"--dataset={db_path}"]
    default, default_peak = pytest_run(arguments, workdir, all_plugins)
    fastest, fastest_peak = ((default, default_peak) if best == DEFAULT_BATCH_SIZE else
                             pytest_run([*arguments, f"--tagger-batch-size={best}"], workdir, all_plugins))
    lines = [f"{name}: raw {', '.join(f'{images / raw[size]:.2f}' for size in sizes)} images/s at batch size "
             f"{', '.join(map(str, sizes))}",
             f"{name}: eval {images / default:.2f} images/s at the default settings (peak {default_peak:.0f} MiB), "
             f"{images / fastest:.2f} at batch size {best} (peak {fastest_peak:.0f} MiB)",
             f"{name}: eval/raw = {default / raw[DEFAULT_BATCH_SIZE]:.2f} (default settings)",
             f"{name}: eval/raw = {fastest / raw[best]:.2f} (batch size {best}, the fastest raw setting)"]
    if http and name in ONNX_MODELS:  # the webui serves WD models; hydrus-dd is not timed here
        seconds = http_seconds(model_dir, db_path, workdir, all_plugins)
        lines += [f"{name}: http {images / seconds:.2f} images/s (image by image)",
                  f"{name}: http/raw = {seconds / raw[best]:.2f} (raw at batch size {best}, the fastest)"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", choices=[*ONNX_MODELS, *KERAS_MODELS],
                        default=[*ONNX_MODELS, *KERAS_MODELS])
    parser.add_argument("--images", type=int, default=32, help="images per measurement (default 32)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=RAW_BATCH_SIZES, metavar="B",
                        help="raw batch sizes to try, batch 1 (the default settings) always among them "
                             "(default 1 4 8)")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--all-plugins", action="store_true",
                        help="time the evaluation with every pytest plugin of this environment loaded")
    args = parser.parse_args()
    models = {}
    for name in args.models:  # built (or found) first, so a missing package stops the run before any measurement
        if reason := unavailable(name):
            print(f"{name}: skipped: {reason}", flush=True)
        else:
            models[name] = ensure(name)
    workdir = Path(tempfile.mkdtemp(prefix="tagger-eval-bench-"))
    db_path = dataset_of(args.images, workdir / "dataset")
    print(f"{args.images} images, {os.cpu_count()} cores", flush=True)
    for name, model_dir in models.items():
        for line in measure(name, model_dir, db_path, workdir, tuple(args.batch_sizes), not args.skip_http,
                            args.all_plugins):
            print(line, flush=True)
    small, large = dataset_of(96, workdir / "small"), dataset_of(960, workdir / "large")
    _, small_peak = pytest_run(["--tagger=demo-pixel", f"--dataset={small}"], workdir)
    _, large_peak = pytest_run(["--tagger=demo-pixel", f"--dataset={large}"], workdir)
    print(f"peak memory, demo-pixel: 96 posts {small_peak:.0f} MiB, 960 posts {large_peak:.0f} MiB "
          f"(ratio {large_peak / small_peak:.2f})")
    print(f"scoring and summary of 30,000 posts: {scoring_seconds():.2f} s")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
