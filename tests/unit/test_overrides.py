"""``gate erase --set``: text values into the config field's type (no torch, no models)."""

from __future__ import annotations

import pytest

from gate.errors import BadInput
from gate.unlearn.overrides import parse_override


@pytest.mark.parametrize("text", ["false", "False", "FALSE", "0", "no", "No", " false "])
def test_false_spellings_are_false(text):
    assert parse_override("with_to_k", text, True) is False


@pytest.mark.parametrize("text", ["true", "True", "1", "yes", "YES"])
def test_true_spellings_are_true(text):
    assert parse_override("augment_preserve", text, False) is True


@pytest.mark.parametrize("text", ["", "maybe", "2", "off"])
def test_other_bool_text_names_the_field(text):
    with pytest.raises(BadInput, match="with_to_k"):
        parse_override("with_to_k", text, True)


def test_numbers_and_strings_as_before():
    assert parse_override("iterations", "50", 10) == 50
    assert type(parse_override("iterations", "50", 10)) is int
    assert parse_override("lr", "1e-5", 1e-4) == pytest.approx(1e-5)
    assert parse_override("lr", "2", 1e-4) == 2.0
    assert parse_override("guide", "a cat", "") == "a cat"


@pytest.mark.parametrize(("value", "default"), [("fifty", 10), ("1.5", 10), ("fast", 1e-4)])
def test_bad_numbers_are_bad_input_naming_the_field(value, default):
    with pytest.raises(BadInput, match="iterations"):
        parse_override("iterations", value, default)


def test_erase_set_false_turns_a_yes_no_setting_off():
    """``gate erase --set with_to_k=false`` set True (``bool("false")``); through the method's config now."""
    from gate.unlearn import get_method

    uce = get_method("uce")
    assert uce.config("original").with_to_k is True
    assert uce.config("original", {"with_to_k": "false"}).with_to_k is False
    assert uce.config("small-world", {"with_to_k": "TRUE"}).with_to_k is True
    assert uce.config("original", {"preserve_scale": 2}).preserve_scale == 2.0  # typed values from a recipe
