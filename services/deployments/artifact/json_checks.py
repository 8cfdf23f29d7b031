"""Strict loading of the JSON files inside an artifact and checks of their shape.

Every refusal is an `ArtifactError` naming the file and the field (`label`), so a bad
artifact is answered with a message that says what is wrong where.
"""

from __future__ import annotations

import json
import math
from typing import Any

from services.deployments.artifact.errors import ArtifactError

__all__ = [
    "depends_map",
    "json_object",
    "load_json",
    "merge_json",
    "optional_string",
    "optional_string_list",
    "string_list",
    "string_map",
]


def load_json(raw: bytes, label: str) -> Any:
    """Parse UTF-8 JSON, refusing NaN, infinities and escapes that could not be stored."""
    try:
        value = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
        # Escaped lone surrogates decode fine but could never be stored or sent back.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactError(f"{label} is not valid UTF-8") from None
    except UnicodeEncodeError:
        raise ArtifactError(f"{label} contains an invalid unicode escape") from None
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{label} is not valid JSON ({exc})") from None
    return value


def json_object(value: Any, label: str) -> dict[str, Any]:
    """`value` if it is a JSON object."""
    if not isinstance(value, dict):
        raise ArtifactError(f"{label} must be a JSON object")
    return value


def string_list(value: Any, label: str) -> list[str]:
    """`value` if it is a list of strings."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ArtifactError(f"{label} must be a list of strings")
    return list(value)


def optional_string_list(value: Any, label: str) -> list[str]:
    """A list of strings, or an empty list for an absent value."""
    return [] if value is None else string_list(value, label)


def optional_string(value: Any, label: str) -> str | None:
    """A string, or None for an absent value."""
    if value is not None and not isinstance(value, str):
        raise ArtifactError(f"{label} must be a string")
    return value


def string_map(value: Any, label: str) -> dict[str, str]:
    """An object of strings (provides), or an empty one for an absent value."""
    mapping = _optional_object(value, label)
    for key, item in mapping.items():
        if not isinstance(item, str):
            raise ArtifactError(f"{label}.{key} must be a string")
    return dict(mapping)


def depends_map(value: Any, label: str) -> dict[str, Any]:
    """An object of strings or lists of strings (depends), or an empty one when absent."""
    mapping = _optional_object(value, label)
    for key, item in mapping.items():
        if not isinstance(item, str):
            string_list(item, f"{label}.{key}")
    return dict(mapping)


def merge_json(original: dict[str, Any], override: dict[str, Any], label: str) -> dict[str, Any]:
    """Merge an augment section into the original one, as mender-artifact does."""
    merged = dict(original)
    for key, value in override.items():
        if key not in merged:
            merged[key] = value
            continue
        current = merged[key]
        if isinstance(value, dict):
            if not isinstance(current, dict):
                raise ArtifactError(f"{label}.{key}: cannot combine an object with a non-object")
            merged[key] = merge_json(current, value, f"{label}.{key}")
        elif isinstance(value, list) != isinstance(current, list) or isinstance(current, dict):
            raise ArtifactError(f"{label}.{key}: conflicting types in the augmented header")
        else:
            merged[key] = value
    return merged


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _optional_object(value: Any, label: str) -> dict[str, Any]:
    return {} if value is None else json_object(value, label)
