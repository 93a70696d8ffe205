"""Checks for values the product reads back from files and study attributes.

Anything read back may have been written by someone else, so each field is checked for its
type and range before it is used. Importable without torch; every package may use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

MAX_SEED = 2**31 - 1  # seed + a few stays a valid NumPy/torch seed
MAX_EPOCHS = 1000  # twice the longest documented experiment
MAX_TEXT = 256


class SchemaError(ValueError):
    """One field breaks the schema; str() is '<field> must be <rule>, got <value>'."""

    def __init__(self, field: str, rule: str, value: Any) -> None:
        self.field, self.rule = field, rule
        shown = repr(value)
        super().__init__(f"{field} must be {rule}, got {shown[:60] + '...' if len(shown) > 60 else shown}")


def whole_number(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SchemaError(field, f"a whole number from {low} to {high}", value)
    return value


def number(value: Any, field: str, low: float, high: float, open_interval: bool = False) -> float:
    """A finite int or float in [low, high], or in (low, high) when `open_interval`."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and (low < value < high if open_interval else low <= value <= high))
    if not ok:
        bounds = f"between {low:g} and {high:g}" + (" (exclusive)" if open_interval else "")
        raise SchemaError(field, f"a number {bounds}", value)
    return float(value)


def text(value: Any, field: str, max_length: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > max_length or any(ord(c) < 32 for c in value):
        raise SchemaError(field, f"text of at most {max_length} printable characters", value)
    return value


def one_of(value: Any, field: str, choices: Iterable[Any]) -> Any:
    choices = tuple(choices)
    if isinstance(value, bool) or value not in choices:
        raise SchemaError(field, f"one of {', '.join(map(str, choices))}", value)
    return value


def mapping(value: Any, field: str, allowed: Iterable[str] | None = None,
            max_keys: int = 64) -> Mapping[str, Any]:
    """A str-keyed mapping with at most `max_keys` keys, all in `allowed` when given."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value) or len(value) > max_keys:
        raise SchemaError(field, f"a mapping of at most {max_keys} named fields", value)
    if allowed is not None:
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise SchemaError(field, f"a mapping of {', '.join(sorted(allowed))} only",
                              f"unknown {', '.join(unknown)}")
    return value
