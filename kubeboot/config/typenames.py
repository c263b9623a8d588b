"""Pure core: how validation messages name the type of a value read from YAML ("must be a list, not a string")."""

from __future__ import annotations

from collections.abc import Mapping

# Checked in order: bool before int, since a Python bool is an int.
_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (Mapping, "a mapping"),
)


def typename(value: object) -> str:
    """The YAML kind of `value` with its article ("a string", "null"); other objects by their Python type name."""
    if value is None:
        return "null"
    for kind, name in _NAMES:
        if isinstance(value, kind):
            return name
    return type(value).__name__
