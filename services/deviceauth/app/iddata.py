"""Canonical identity data: the text Go's `json.Marshal` gives for the decoded object.

The sha256 of the canonical text is a device's identity key, so an auth request and a
preauthorization of the same identity must produce byte-identical text however the device
spelled it: keys sorted, no whitespace, numbers as float64 in Go's shortest form, `<`, `>`,
`&`, U+2028 and U+2029 escaped, other non-ASCII characters kept as UTF-8.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final, NoReturn

__all__ = ["IdentityDataError", "canonical_identity", "canonical_identity_text", "identity_key"]


class IdentityDataError(ValueError):
    """The identity data is not a JSON object Go's decoder would accept."""


_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_ESCAPES: Final = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _escape_char(char: str) -> str:
    escaped = _ESCAPES.get(char)
    if escaped is not None:
        return escaped
    if ord(char) < 0x20:
        return f"\\u{ord(char):04x}"
    return char


def _go_text(text: str) -> str:
    # A lone surrogate (from a `\ud800` escape) decodes to U+FFFD in Go.
    return _SURROGATE.sub("\ufffd", text)


def _go_string(text: str) -> str:
    return '"' + "".join(_escape_char(c) for c in text) + '"'


def _go_float(value: float) -> str:
    """Format like Go's encoding/json does a float64 (strconv 'f' or 'e', shortest)."""
    if not math.isfinite(value):
        raise IdentityDataError("identity data contains a number out of range")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    shortest = Decimal(repr(value)).normalize()
    magnitude = abs(value)
    if 1e-6 <= magnitude < 1e21:
        return format(shortest, "f")
    sign, digits, exponent = shortest.as_tuple()
    assert isinstance(exponent, int)
    mantissa = "".join(str(d) for d in digits)
    power = exponent + len(mantissa) - 1
    text = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
    # Go writes at least two exponent digits, then turns e-07 into e-7.
    exp = f"-{-power}" if -10 < power < 0 else f"{'-' if power < 0 else '+'}{abs(power):02d}"
    return ("-" if sign else "") + text + "e" + exp


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_go_string(_go_text(value)))
    elif isinstance(value, int | float):
        # Go decodes every JSON number into a float64.
        try:
            number = float(value)
        except OverflowError:
            raise IdentityDataError("identity data contains a number out of range") from None
        out.append(_go_float(number))
    elif isinstance(value, Mapping):
        # Later duplicates win, as when Go decodes into a map.
        members: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise IdentityDataError("identity data keys must be strings")
            members[_go_text(key)] = item
        out.append("{")
        for i, key in enumerate(sorted(members)):
            if i:
                out.append(",")
            out.append(_go_string(key))
            out.append(":")
            _encode(members[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise IdentityDataError(f"identity data cannot hold a {type(value).__name__}")


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"invalid JSON literal {name}")


def canonical_identity(data: Mapping[str, Any]) -> str:
    """Canonical text of an identity object (numbers are treated as float64)."""
    out: list[str] = []
    try:
        _encode(data, out)
    except RecursionError:
        raise IdentityDataError("identity data is nested too deeply") from None
    return "".join(out)


def canonical_identity_text(text: str) -> str:
    """Canonical text of identity data given as JSON text; it must be an object."""
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise IdentityDataError(f"failed to parse identity data: {exc}") from None
    if not isinstance(value, dict):
        raise IdentityDataError("identity data must be a JSON object")
    return canonical_identity(value)


def identity_key(canonical: str) -> str:
    """The identity key of canonical identity data: its sha256, hex-encoded."""
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
