"""What every configuration model shares: the base model (unknown keys refused, defaults
checked like written values) and the kinds of value that are more than a Python type:
counts within limits, fractions, non-negative numbers.

TOML has real booleans and integers, so none is taken for another: ``true`` is no count
and ``"3"`` no integer, whatever pydantic's lax mode would accept.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainValidator, StrictBool

Bool = StrictBool


class Model(BaseModel):
    """A table of a configuration file: its keys are the fields, and no others."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)


def integer(low: int, high: int | None = None, *, expected: str = "") -> Any:
    """An integer type from `low` (to `high`); `expected` says so in words if given."""
    if not expected:
        expected = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def check(v: Any) -> int:
        if (
            isinstance(v, int)
            and not isinstance(v, bool)
            and low <= v
            and (high is None or v <= high)
        ):
            return v
        raise ValueError(f"expected {expected}, got {v!r}")

    return Annotated[int, PlainValidator(check)]


def number(low: float = 0.0) -> Any:
    """A number (an integer or a float) of at least `low`, as a float."""

    def check(v: Any) -> float:
        if isinstance(v, int | float) and not isinstance(v, bool) and v >= low:
            return float(v)
        raise ValueError(f"expected a number >= {low:g}, got {v!r}")

    return Annotated[float, PlainValidator(check)]


def _fraction(v: Any) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1:
        return float(v)
    raise ValueError(f"expected a fraction between 0 and 1, got {v!r}")


#: strictly between 0 and 1
Fraction = Annotated[float, PlainValidator(_fraction)]
PositiveInt = integer(1, expected="a positive integer")
