"""`tagger-eval`: the `list` and `make-demo` commands, in process and as the installed console script."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tagger_eval.cli import main
from tagger_eval.data import demo_dataset as demo
from tagger_eval.data.dataset import Dataset
from tagger_eval.taggers import entries

BUILT_IN = ("control", "demo-pixel", "demo-lowres", "demo-histogram")


def rows_by_tagger(output: str) -> dict[str, tuple[list[str], str | None]]:
    """Each tagger's row split into cells, and the reason line under it when it cannot run."""
    lines = output.splitlines()
    assert lines[0].split()[:3] == ["tagger", "runs", "here"]
    rows: dict[str, tuple[list[str], str | None]] = {}
    for line in lines[1:]:
        if line.startswith(" "):
            name = list(rows)[-1]
            assert line.strip().startswith("-> ")
            rows[name] = (rows[name][0], line.strip()[3:])
        else:
            rows[line.split()[0]] = (line.split(), None)
    return rows


def check_listing(output: str) -> None:
    rows = rows_by_tagger(output)
    assert len(rows) == len(entries())
    for entry in entries():
        usage = entry.usage
        assert usage in rows, usage
        cells, shown_reason = rows[usage]
        reason = entry.unavailable_reason()
        assert cells[1] == ("yes" if reason is None else "no"), cells
        assert shown_reason == reason
        vocabulary = entry.vocabulary(None) if entry.vocabulary and reason is None and not entry.needs_argument else 0
        assert cells[2] == ("-" if vocabulary == 0 else "open" if vocabulary is None else f"{len(vocabulary):,}")
        assert " ".join(entry.description.split()) in " ".join(cells)
    for name in BUILT_IN:
        assert rows[name][0][1] == "yes", rows[name]
    assert rows["control"][0][2] == "open"
    assert int(rows["demo-pixel"][0][2]) > 10


def test_list_shows_every_registered_tagger(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    check_listing(captured.out)


def test_installed_console_script_lists_taggers() -> None:
    script = shutil.which("tagger-eval")
    if script is None:
        pytest.skip("the tagger-eval console script is not on PATH (package not installed with its scripts?)")
    completed = subprocess.run([script, "list"], capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    check_listing(completed.stdout)


def test_make_demo_writes_the_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["make-demo", "--out", str(out)]) == 0
    assert f"wrote {out / 'data.db'}" in capsys.readouterr().out
    images = sorted(path.name for path in (out / "images").glob("*.png"))
    assert images == [f"{n:04d}.png" for n in range(1, demo.POSTS + 1)]
    with Dataset(out / "data.db") as dataset:
        assert len(dataset) == demo.POSTS
        assert Dataset.load_image(dataset.get(1)).size == (demo.SIZE, demo.SIZE)
    assert (out / "images" / "0001.png").read_bytes() == (demo.DEFAULT_DIR / "images" / "0001.png").read_bytes()


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "tagger-eval" in capsys.readouterr().err
