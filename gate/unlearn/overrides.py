"""``gate erase --set NAME=VALUE``: a text value turned into the type of the config field's default.

Pure (no torch), so that it can be tested on its own.
"""

from __future__ import annotations

from typing import Any

from gate.errors import BadInput

TRUE = frozenset({"true", "1", "yes"})
FALSE = frozenset({"false", "0", "no"})


def parse_override(name: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default``. A yes/no field takes true/false, 1/0 or yes/no (any
    case); anything else, or a number that does not parse, is :class:`BadInput` naming the field.
    Other types are converted as ``type(default)(value)``."""
    if not isinstance(value, str):  # already typed (a recipe's JSON overrides)
        if isinstance(default, bool) != isinstance(value, bool):
            raise BadInput(f"--set {name}={value!r}: {name} takes a {type(default).__name__} (default {default!r})")
        return value if isinstance(default, bool) else type(default)(value)
    if isinstance(default, bool):  # before int: bool is an int, and bool("false") is True
        text = value.strip().lower()
        if text in TRUE:
            return True
        if text in FALSE:
            return False
        raise BadInput(f"--set {name}={value!r}: {name} is a yes/no setting: use true or false (or yes/no, 1/0)")
    try:
        return type(default)(value)
    except (TypeError, ValueError):
        raise BadInput(
            f"--set {name}={value!r}: {name} takes a {type(default).__name__} (default {default!r})"
        ) from None
