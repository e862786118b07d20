"""Checking the on/off options the bundles' configs take from the command line."""

from __future__ import annotations

from monai.utils import str2bool

__all__ = ["flag"]


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
