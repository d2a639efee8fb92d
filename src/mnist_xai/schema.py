"""One checked parameter: its default and what values are allowed.

Both params.yaml's sections (params.py) and each attribution method's own parameters
(attribution/registry.py) are described with `Param`. This module imports nothing heavy, so a bad
value is reported in a fraction of a second, before torch is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mnist_xai.errors import ParamError

SEED_MAX = 2**31 - 1
"""The largest seed: torch, numpy and offsets such as seed + 1 + step all stay within 64 bits."""


@dataclass(frozen=True)
class Param:
    """One parameter: its default and what values are allowed."""

    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # inclusive lower bound
    positive: bool = False  # strictly greater than zero
    maximum: float | None = None  # inclusive upper bound

    def check(self, key: str, value: Any) -> Any:
        """The value, converted to the default's type; ParamError names the key, the value and what is allowed."""
        kind = type(self.default)
        if self.choices:
            if value not in self.choices:
                raise ParamError(f"{key}={value!r} is not allowed: choose one of {', '.join(self.choices)}")
            return value
        if kind is str:
            if not isinstance(value, str) or not value:
                raise ParamError(f"{key}={value!r} is not allowed: expected a non-empty name")
            return value
        if kind is bool:
            if not isinstance(value, bool):
                raise ParamError(f"{key}={value!r} is not allowed: expected true or false")
            return value
        number_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is int and not (number_ok and math.isfinite(value) and float(value).is_integer()):
            raise ParamError(f"{key}={value!r} is not allowed: expected a whole number")
        if kind is float and not (number_ok and math.isfinite(value)):
            raise ParamError(f"{key}={value!r} is not allowed: expected a finite number")
        converted = kind(value)
        if self.positive and converted <= 0:
            raise ParamError(f"{key}={value!r} is not allowed: it must be greater than 0")
        if self.minimum is not None and converted < self.minimum:
            raise ParamError(f"{key}={value!r} is not allowed: it must be at least {_number(self.minimum)}")
        if self.maximum is not None and converted > self.maximum:
            raise ParamError(f"{key}={value!r} is not allowed: it must be at most {_number(self.maximum)}")
        return converted


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def seed_param(doc: str) -> Param:
    return Param(0, doc, minimum=0, maximum=SEED_MAX)
