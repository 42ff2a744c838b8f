"""`--tagger` values against the registry: typos get a suggestion, names match in any case, empty items and a
misplaced or missing argument are refused naming the value, and an entry's own argument check is a usage error."""

from __future__ import annotations

from typing import Any

import pytest

from tagger_eval.config import parse_run_config
from tagger_eval.taggers import (
    InvalidTaggerSpec,
    TaggerEntry,
    TaggerSpec,
    UnknownTaggerError,
    parse_specs,
    registered,
)
from tagger_eval.taggers.control import ControlTagger


def entry(name: str, **settings: Any) -> TaggerEntry:
    """A test's tagger under `name`, returning each post's truth."""
    return TaggerEntry(name, "a test's tagger", lambda _argument, _options: ControlTagger(), **settings)


class NoModelHere(InvalidTaggerSpec):
    """A backend's own kind of spec error, as a plugin's check may raise: it arrives as an `InvalidTaggerSpec`."""


def no_model(argument: str | None) -> None:
    """An entry's argument check: this one refuses every directory."""
    raise NoModelHere(f"no model.onnx in {argument}; give a directory holding model.onnx and selected_tags.csv")


# Item 1: typos and letter case.


def test_an_unknown_name_suggests_the_closest_registered_ones() -> None:
    with pytest.raises(UnknownTaggerError) as error:
        parse_specs("control,wd14-vitt")
    assert str(error.value).startswith("--tagger=control,wd14-vitt: unknown tagger 'wd14-vitt' (did you mean "
                                       "'wd14-vit'")
    assert "; known taggers: camie-v2, control, " in str(error.value)
    with pytest.raises(UnknownTaggerError, match=r"unknown tagger 'Demo-Pixle' \(did you mean 'demo-pixel'"):
        parse_specs("Demo-Pixle")


def test_a_name_far_from_every_tagger_gets_no_suggestion() -> None:
    with pytest.raises(UnknownTaggerError, match=r"^--tagger=zzzzzz: unknown tagger 'zzzzzz'; known taggers: "):
        parse_specs("zzzzzz")


def test_names_match_in_any_letter_case_and_the_label_is_the_registered_name() -> None:
    specs, _ = parse_specs(["Demo-Pixel", "CONTROL,demo-pixel"])
    assert specs == [TaggerSpec("demo-pixel"), TaggerSpec("control")]
    assert [spec.label for spec in specs] == ["demo-pixel", "control"]
    assert parse_specs("ALL") == parse_specs("all")
    config = parse_run_config(["--tagger=Demo-Pixel", "--threshold=demo-pixel=0.4"])
    assert config.taggers == (TaggerSpec("demo-pixel"),)
    assert config.thresholds.pick(config.taggers[0], 0.5) == 0.4


def test_a_name_differing_from_a_registered_one_only_in_case_is_taken() -> None:
    with pytest.raises(ValueError, match="tagger name 'Control' is already taken"), registered(entry("Control")):
        pytest.fail("the block must not run")
    with pytest.raises(ValueError, match="tagger name 'ALL' is already taken"), registered(entry("ALL")):
        pytest.fail("the block must not run")


# Item 2: empty items.


@pytest.mark.parametrize(("value", "message"), [
    ("demo-pixel,,control", "--tagger=demo-pixel,,control: an empty item (a doubled or trailing comma); "),
    ("demo-pixel,", "--tagger=demo-pixel,: an empty item"),
    (",control", "--tagger=,control: an empty item"),
    ("demo-pixel, ,control", "--tagger=demo-pixel, ,control: an empty item"),
    ("", "--tagger=: no tagger given; "),
    (" ", "--tagger= : no tagger given; "),
])
def test_an_empty_item_is_refused_naming_the_value(value: str, message: str) -> None:
    with pytest.raises(InvalidTaggerSpec) as error:
        parse_specs(["control", value])
    assert str(error.value).startswith(message)
    assert str(error.value).endswith("such as --tagger=control,demo-pixel (`tagger-eval list` shows them)")


def test_an_empty_tagger_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--tagger=")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.stderr.lines if line.strip()] == [
        "ERROR: --tagger=: no tagger given; give registered names separated by single commas, such as "
        "--tagger=control,demo-pixel (`tagger-eval list` shows them)"]


# Item 5: an argument given to a name that takes none, or missing for one that needs it.


@pytest.mark.parametrize(("value", "message"), [
    ("control:x", "--tagger=control:x: tagger 'control' takes no argument (got 'control:x'); give --tagger=control"),
    ("demo-pixel:", "--tagger=demo-pixel:: tagger 'demo-pixel' takes no argument (got 'demo-pixel:'); "
                    "give --tagger=demo-pixel"),
    ("wd14-onnx", "--tagger=wd14-onnx: tagger 'wd14-onnx' needs its DIR; give --tagger=wd14-onnx:DIR"),
    ("WD14-ONNX:", "--tagger=WD14-ONNX:: tagger 'wd14-onnx' needs its DIR; give --tagger=wd14-onnx:DIR"),
    ("deepdanbooru", "--tagger=deepdanbooru: tagger 'deepdanbooru' needs its DIR; give --tagger=deepdanbooru:DIR"),
    ("wd-vit-v3:", "--tagger=wd-vit-v3:: tagger 'wd-vit-v3' got an empty REVISION after ':'; "
                   "give --tagger=wd-vit-v3[:REVISION]"),
])
def test_a_misplaced_or_missing_argument_names_the_right_form(value: str, message: str) -> None:
    with pytest.raises(InvalidTaggerSpec) as error:
        parse_specs(value)
    assert str(error.value) == message


# Item 4: an entry's own argument check.


def test_an_entrys_check_sees_the_argument_and_its_error_names_the_value() -> None:
    seen: list[str | None] = []
    checked = entry("test-checked", needs_argument=True, argument_name="DIR", check_argument=seen.append)
    refusing = entry("test-refusing", needs_argument=True, argument_name="DIR", check_argument=no_model)
    with registered(checked, refusing):
        assert parse_specs("Test-Checked:/models/a")[0] == [TaggerSpec("test-checked", "/models/a")]
        assert seen == ["/models/a"]
        with pytest.raises(InvalidTaggerSpec) as error:
            parse_specs(["test-checked:/models/a", "test-refusing:/nowhere"])
    assert str(error.value) == ("--tagger=test-refusing:/nowhere: no model.onnx in /nowhere; give a directory "
                                "holding model.onnx and selected_tags.csv")


def test_a_failing_check_is_a_one_line_usage_error(pytester: pytest.Pytester) -> None:
    with registered(entry("test-refusing", needs_argument=True, argument_name="DIR", check_argument=no_model)):
        result = pytester.runpytest("--tagger=control,test-refusing:/nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.stderr.lines if line.strip()] == [
        "ERROR: --tagger=control,test-refusing:/nowhere: no model.onnx in /nowhere; give a directory holding "
        "model.onnx and selected_tags.csv"]
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
