"""Checking the options the bundles' configs take from the command line: on/off flags and named choices."""

from __future__ import annotations

from collections.abc import Sequence

from monai.utils import str2bool

__all__ = ["choice", "flag"]


def flag(name: str, value) -> bool:
    """An on/off option as given in a config or on the command line (``--resume true``, ``--resume 1``, ``True``).

    ``python -m monai.bundle run`` passes a command-line value through ``fire``, so the same option arrives as a
    ``bool``, an ``int`` or a string; MONAI's ``str2bool`` reads the strings. This adds the other two and the
    option's name to the error, so ``--resume ture`` stops instead of quietly meaning "no".

    Args:
        name: the option's config id, for the error.
        value: its value.

    Raises:
        ValueError: ``"<name> = <value>: not an on/off value ..."``.
    """
    if isinstance(value, bool):
        return value
    try:
        return str2bool(str(value))
    except ValueError:
        raise ValueError(
            f"{name} = {value!r}: not an on/off value (true/false, yes/no, 1/0, case-insensitive)"
        ) from None


def choice(name: str, value, choices: Sequence[str]) -> str:
    """A named option that must be one of ``choices`` (``--input_region tumour_centred``), returned unchanged.

    A config that writes ``"$@a if @opt == 'x' else @b"`` treats a misspelt value as ``b`` without a word; routing the
    value through this first makes it stop instead.

    Args:
        name: the option's config id, for the error.
        value: its value.
        choices: the accepted values.

    Raises:
        ValueError: ``"<name> = <value>: not one of ..."``.
    """
    if value not in choices:
        raise ValueError(f"{name} = {value!r}: not one of {', '.join(map(repr, choices))}")
    return value
