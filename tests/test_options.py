"""Options from the command line: every on/off spelling fire can deliver; a typo in a flag or a named choice stops
naming the option."""

from __future__ import annotations

import pytest

from smart_nets.options import choice, flag


@pytest.mark.parametrize("value", [True, 1, "1", "true", "True", "YES", "y"])
def test_on(value):
    assert flag("resume", value) is True


@pytest.mark.parametrize("value", [False, 0, "0", "false", "False", "no", "n"])
def test_off(value):
    assert flag("resume", value) is False


@pytest.mark.parametrize("value", ["ture", 2, None, "", "on"])
def test_anything_else_stops_naming_the_option(value):
    with pytest.raises(ValueError, match=rf"save_attention = {value!r}: not an on/off value"):
        flag("save_attention", value)


def test_a_choice_is_returned_and_anything_else_stops_naming_the_option_and_the_choices():
    assert choice("input_region", "tumour", ("whole", "tumour")) == "tumour"
    with pytest.raises(ValueError, match=r"input_region = 'tumor': not one of 'whole', 'tumour'"):
        choice("input_region", "tumor", ("whole", "tumour"))
