"""The open tagger registry: taggers from installed packages (`tagger_eval.taggers` entry points), `registered()`
for tests, published-model declarations, and vocabularies read without loading a model."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from builders import DD_CHARACTER_TAGS, DD_TAGS, write_deepdanbooru_project
from huggingface_hub import constants as hub_constants
from PIL import Image

from tagger_eval.config import parse_run_config
from tagger_eval.run.evaluation import Evaluation
from tagger_eval.taggers import (
    TaggerEntry,
    TaggerOptions,
    TaggerSpec,
    UnknownTaggerError,
    create,
    get_entry,
    parse_specs,
    read_vocabulary,
    registered,
    unregister,
)
from tagger_eval.taggers.control import ControlTagger
from tagger_eval.taggers.deepdanbooru import DeepDanbooruError
from tagger_eval.taggers.demo import PixelTagger
from tagger_eval.taggers.hub import ModelFilesError, PublishedModel
from tagger_eval.taggers.wd14 import WD14Tagger, read_selected_tags
from tagger_eval.tags import CHARACTER, GENERAL, RATING, RATING_TAGS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tagger-eval-example"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def run_python(*args: str, path: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """This interpreter in a fresh process that also sees the distributions installed under `path`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd,
                          check=False)


@pytest.fixture(scope="session")
def example_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/tagger-eval-example installed for real by pip, offline, into a directory of its own.

    Built from a copy: an in-tree build would leave build/ and *.egg-info in the repository.
    """
    source = shutil.copytree(EXAMPLE, tmp_path_factory.mktemp("example-source") / "tagger-eval-example")
    target = tmp_path_factory.mktemp("example-installed")
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--quiet", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    [entry_points] = target.glob("tagger_eval_example-*.dist-info/entry_points.txt")
    assert "[tagger_eval.taggers]" in entry_points.read_text()
    return target


def test_the_installed_example_is_listed(example_install: Path) -> None:
    completed = run_python("-m", "tagger_eval.cli", "list", path=example_install)
    assert completed.returncode == 0, completed.stderr
    [row] = [line.split(maxsplit=3) for line in completed.stdout.splitlines() if line.startswith("dominant-colour ")]
    assert row == ["dominant-colour", "yes", "5",
                   "example plugin: the background colour, from the image's dominant colour"]
    assert "demo-pixel " in completed.stdout  # the built-ins stay


def test_the_installed_example_evaluates_the_demo(example_install: Path, tmp_path: Path) -> None:
    completed = run_python("-m", "pytest", "--tagger=dominant-colour", "-p", "no:cacheprovider",
                           "--no-tagger-results", "--benchmark-disable", path=example_install, cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr
    lines = completed.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "tagger-eval summary" in line)
    [row] = [line.split() for line in lines[header:] if line.startswith("dominant-colour ")]
    # threshold, posts, mean score; wrong tags and practical; then pass, fail, skip, errors
    assert row[1:3] == ["0.50", "96"] and float(row[3]) > 0
    assert row[6:8] == ["0.0%", "0.0%"] and row[-4:] == ["96", "0", "0", "0"]


def load_example() -> ModuleType:
    """The example's module from its source file: importable without installing it into this process."""
    spec = importlib.util.spec_from_file_location("tagger_eval_example", EXAMPLE / "tagger_eval_example.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_tagger_reads_the_pixels() -> None:
    example = load_example()
    half = np.zeros((10, 10, 3), dtype=np.uint8)
    half[:5] = (250, 250, 250)  # the top half the demo's white, the bottom half its black
    half[5:] = (20, 20, 20)
    shares = example.colour_shares(np.asarray(Image.fromarray(half), dtype=np.float32))
    assert shares["white_background"] == shares["black_background"] == 0.5
    assert sum(shares.values()) == 1.0
    red = example.colour_shares(np.full((8, 8, 3), (214, 39, 40), dtype=np.float32))
    assert set(red.values()) == {0.0}  # no background colour at all


def test_the_readme_shows_the_example_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Adding a tagger"):readme.index("## Layout")]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.DOTALL)
    [toml] = [text for language, text in blocks if language == "toml"]
    [code] = [text for language, text in blocks if language == "python" and "class DominantColourTagger" in text]
    assert toml in (EXAMPLE / "pyproject.toml").read_text(encoding="utf-8")
    assert (EXAMPLE / "tagger_eval_example.py").read_text(encoding="utf-8").endswith(code)


# --- broken entry points ------------------------------------------------------------------------------------------


def write_distribution(path: Path, name: str, entry_points: Mapping[str, str], module: str) -> None:
    """What pip installs for a distribution: its module and a .dist-info with METADATA and entry_points.txt."""
    info = path / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = [f"{key} = {value}" for key, value in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(["[tagger_eval.taggers]", *lines]) + "\n")
    (path / f"{name}.py").write_text("from tagger_eval.taggers import TaggerEntry\n" + module)


ENTRY = "TaggerEntry({name!r}, 'test plugin', lambda argument, options: None)"
BROKEN = {
    "import": ({"broken": "no_such_module:ENTRY"}, "",
               "'broken' (no_such_module:ENTRY) of distribution plugin 1.0 failed to load: ModuleNotFoundError: "
               "No module named 'no_such_module'"),
    "type": ({"wrong": "plugin:ENTRY"}, "ENTRY = 'demo-pixel'\n",
             "'wrong' (plugin:ENTRY) of distribution plugin 1.0 gave str 'demo-pixel'; expected a "
             "tagger_eval.taggers.TaggerEntry, an iterable of them, or a function returning either"),
    "raises": ({"raises": "plugin:entries"}, "def entries():\n    raise RuntimeError('no licence')\n",
               "'raises' (plugin:entries) of distribution plugin 1.0 failed to load: RuntimeError: no licence"),
    "built-in name": ({"mine": "plugin:ENTRY"}, f"ENTRY = {ENTRY.format(name='control')}\n",
                      "'mine' (plugin:ENTRY) of distribution plugin 1.0: tagger name 'control' is already taken by "
                      "a registered tagger"),
    "twice": ({"first": "plugin:ENTRY", "second": "plugin:ENTRY"}, f"ENTRY = {ENTRY.format(name='twin')}\n",
              "'second' (plugin:ENTRY) of distribution plugin 1.0: tagger name 'twin' is already taken by "
              "tagger_eval.taggers entry point 'first' (plugin:ENTRY) of distribution plugin 1.0"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_entry_point_is_an_error_naming_it(case: str, tmp_path: Path) -> None:
    entry_points, module, message = BROKEN[case]
    write_distribution(tmp_path, "plugin", entry_points, module)
    completed = run_python("-c", "import tagger_eval.taggers as t; t.entries()", path=tmp_path)
    assert completed.returncode == 1
    last = completed.stderr.strip().splitlines()[-1]
    assert last == f"tagger_eval.taggers.registry.PluginError: tagger_eval.taggers entry point {message}"


def test_a_broken_entry_point_is_a_usage_error_of_the_run(tmp_path: Path) -> None:
    write_distribution(tmp_path, "plugin", {"broken": "no_such_module:ENTRY"}, "")
    completed = run_python("-m", "pytest", "--tagger=control", "-p", "no:cacheprovider", path=tmp_path, cwd=tmp_path)
    assert completed.returncode == pytest.ExitCode.USAGE_ERROR
    assert ("ERROR: tagger_eval.taggers entry point 'broken' (no_such_module:ENTRY) of distribution plugin 1.0 "
            "failed to load" in completed.stderr)


def test_a_broken_entry_point_is_one_error_line_of_the_cli(tmp_path: Path) -> None:
    write_distribution(tmp_path, "plugin", {"broken": "no_such_module:ENTRY"}, "")
    for command in (["list"], ["fetch", "wd-vit-v3"]):
        completed = run_python("-m", "tagger_eval.cli", *command, path=tmp_path)
        assert completed.returncode == 2
        assert completed.stderr.startswith("error: tagger_eval.taggers entry point 'broken' (no_such_module:ENTRY)")
        assert "Traceback" not in completed.stderr


def test_an_entry_point_may_be_a_function_returning_entries(tmp_path: Path) -> None:
    module = f"def entries():\n    return ({ENTRY.format(name='one')}, {ENTRY.format(name='two')})\n"
    write_distribution(tmp_path, "plugin", {"both": "plugin:entries"}, module)
    completed = run_python("-m", "tagger_eval.cli", "list", path=tmp_path)
    assert completed.returncode == 0, completed.stderr
    names = [line.split()[0] for line in completed.stdout.splitlines()[1:] if not line.startswith(" ")]
    assert {"one", "two", "control", "demo-pixel"} <= set(names)


# --- registered() and unregister() -----------------------------------------------------------------------------------


def control_entry(name: str) -> TaggerEntry:
    return TaggerEntry(name, "a test's tagger", lambda _argument, _options: ControlTagger())


def test_registered_adds_for_the_block_only() -> None:
    first, second = control_entry("test-first"), control_entry("test-second")
    with registered(first, second):
        assert get_entry("test-first") is first and get_entry("test-second") is second
        assert parse_specs("test-first,test-second")[0] == [TaggerSpec("test-first"), TaggerSpec("test-second")]
    for name in ("test-first", "test-second"):
        with pytest.raises(UnknownTaggerError, match=f"unknown tagger '{name}'"):
            get_entry(name)


def test_registered_removes_its_entries_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError, match="inside"), registered(control_entry("test-failing")):
        raise RuntimeError("inside")
    with pytest.raises(UnknownTaggerError):
        get_entry("test-failing")


def test_registered_refuses_a_taken_name_and_keeps_nothing() -> None:
    with pytest.raises(ValueError, match="tagger name 'control' is already taken"), \
            registered(control_entry("test-added"), control_entry("control")):
        pytest.fail("the block must not run")
    with pytest.raises(UnknownTaggerError):
        get_entry("test-added")
    assert get_entry("control").description.startswith("returns each post's truth tags")


def test_unregister_returns_the_entry() -> None:
    entry = control_entry("test-removed")
    with registered(entry):
        assert unregister("test-removed") is entry
        with pytest.raises(UnknownTaggerError, match="cannot unregister 'test-removed'"):
            unregister("test-removed")


# --- vocabularies read without loading a model --------------------------------------------------------------------


def test_the_demo_taggers_vocabulary_is_read_without_building_them() -> None:
    assert get_entry("demo-pixel").vocabulary is not None
    assert read_vocabulary(TaggerSpec("demo-pixel")) == PixelTagger().vocabulary()
    assert read_vocabulary(TaggerSpec("control")) is None  # an open vocabulary


def test_a_wd14_directory_vocabulary_is_read_without_loading_the_model(wd14_v3_dir: Path, monkeypatch) -> None:
    built = WD14Tagger.from_directory(wd14_v3_dir, TaggerOptions(execution_provider="cpu"))
    with monkeypatch.context() as patch:
        patch.setattr("tagger_eval.taggers.wd14.create_session", lambda *_: pytest.fail("the model was loaded"))
        assert read_vocabulary(TaggerSpec("wd14-onnx", str(wd14_v3_dir))) == built.vocabulary()


def cache_hub_files(cache: Path, repo_id: str, files: Mapping[str, bytes]) -> None:
    """Files in the Hugging Face cache layout, as `hf_hub_download` leaves them: `main` points at COMMIT."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    for name, content in files.items():
        (repo / "snapshots" / COMMIT / name).write_bytes(content)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


def test_a_published_wd_model_vocabulary_is_read_from_the_cache(wd14_v3_dir: Path, tmp_path: Path,
                                                                monkeypatch) -> None:
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    tags = (wd14_v3_dir / "selected_tags.csv").read_bytes()
    cache_hub_files(tmp_path, "SmilingWolf/wd-vit-tagger-v3", {"model.onnx": b"not a model", "selected_tags.csv": tags})
    expected = dict(read_selected_tags(wd14_v3_dir / "selected_tags.csv"))
    assert read_vocabulary(TaggerSpec("wd-vit-v3")) == expected
    assert read_vocabulary(TaggerSpec("wd-vit-v3", COMMIT)) == expected
    with pytest.raises(ModelFilesError, match="run `tagger-eval fetch wd-vit-v3:feedface` where"):
        read_vocabulary(TaggerSpec("wd-vit-v3", "feedface"))


def test_a_deepdanbooru_vocabulary_is_read_from_the_tag_files(tmp_path: Path, monkeypatch) -> None:
    dummy = tmp_path / "model.h5"
    dummy.write_bytes(b"not a model: reading the vocabulary must not open it")
    project = write_deepdanbooru_project(tmp_path / "project", dummy)
    expected = {tag: RATING if tag.startswith("rating:") else CHARACTER if tag in DD_CHARACTER_TAGS else GENERAL
                for tag in DD_TAGS}
    assert read_vocabulary(TaggerSpec("deepdanbooru", str(project))) == expected

    monkeypatch.setenv("TAGGER_EVAL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DeepDanbooruError, match="run `tagger-eval fetch deepdanbooru-v3`"):
        read_vocabulary(TaggerSpec("deepdanbooru-v3"))
    write_deepdanbooru_project(tmp_path / "cache" / "deepdanbooru-v3-20211112-sgd-e28", dummy)
    assert read_vocabulary(TaggerSpec("deepdanbooru-v3")) == expected


class ClosingTagger(ControlTagger):
    closed = 0

    def vocabulary(self) -> Mapping[str, int]:
        return {"smile": GENERAL}

    def close(self) -> None:
        ClosingTagger.closed += 1


def test_without_a_reader_the_tagger_is_built_asked_and_closed() -> None:
    entry = TaggerEntry("test-closing", "builds to answer", lambda _argument, _options: ClosingTagger())
    with registered(entry):
        assert read_vocabulary(TaggerSpec("test-closing")) == {"smile": GENERAL}
    assert ClosingTagger.closed == 1


def test_shared_scope_reads_the_vocabularies_without_building_the_taggers() -> None:
    def unbuildable(_argument: str | None, _options: TaggerOptions) -> ControlTagger:
        pytest.fail("a tagger was built for its vocabulary")

    rated = {"rating:general": RATING, "rating:explicit": RATING}
    entries = [TaggerEntry("test-a", "", unbuildable,
                           vocabulary=lambda _: {"smile": GENERAL, "Long Hair": GENERAL, **rated}),
               TaggerEntry("test-b", "", unbuildable,
                           vocabulary=lambda _: {"long_hair": GENERAL, "hat": GENERAL, **rated}),
               TaggerEntry("test-unrated", "", unbuildable, vocabulary=lambda _: {"long_hair": GENERAL})]
    with registered(*entries):
        for taggers, expected in (("test-a,test-b", {"long_hair"} | RATING_TAGS),
                                  # Ratings count only when every selected tagger outputs one.
                                  ("test-a,test-unrated", {"long_hair"})):
            evaluation = Evaluation(parse_run_config([f"--tagger={taggers}", "--tag-scope=shared"]))
            try:
                assert evaluation.truth_options().shared_vocabulary == expected
            finally:
                evaluation.close()


# --- a hub-published family: data plus a build function -------------------------------------------------------------


def test_a_published_model_declares_its_entry(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    model = PublishedModel("test-hub", "someone/test-tagger", "model.bin", "tags.txt", input_size=224, threshold=0.4,
                           description="a test family")
    built: list[PublishedModel] = []

    def build(at: PublishedModel, _options: TaggerOptions) -> ControlTagger:
        built.append(at)
        return ControlTagger()

    def read_tags(files: Mapping[str, Path]) -> dict[str, int]:
        return dict.fromkeys(files["tags.txt"].read_text().split(), GENERAL)

    missing: list[str | None] = ["onnxruntime is not installed"]
    entry = model.entry(build, missing_package=lambda: missing[0], read_tags=read_tags)
    assert (entry.usage, entry.description) == ("test-hub[:REVISION]",
                                                "a test family: someone/test-tagger (224px; threshold 0.4)")
    assert entry.unavailable_reason() == "onnxruntime is not installed"
    missing[0] = None
    assert entry.unavailable_reason() == ("model.bin, tags.txt of someone/test-tagger not in the Hugging Face cache; "
                                          "run `tagger-eval fetch test-hub` where the hub is reachable")
    cache_hub_files(tmp_path, "someone/test-tagger", {"model.bin": b"weights", "tags.txt": b"smile hat"})
    assert entry.unavailable_reason() is None
    assert entry.vocabulary is not None and entry.vocabulary(None) == {"smile": GENERAL, "hat": GENERAL}
    with registered(entry):  # as a run builds it: `--tagger=NAME:REVISION` through the registry
        [spec], _ = parse_specs(f"test-hub:{COMMIT}")
        assert isinstance(create(spec), ControlTagger)
    assert [(at.name, at.revision) for at in built] == [("test-hub", COMMIT)]
