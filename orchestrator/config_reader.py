"""Typed field access for YAML config trees (CoE files, cost profiles, serve configs, presets).

Every error is a ``ConfigError`` that names the file, the field (a dotted path such as
``experts[3].size_mb``) and the problem. Pure: it reads parsed values, never files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from orchestrator.errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")


class Reader:
    """Reads fields of one source (a file name or a description such as ``--preset``)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, problem: str) -> ConfigError:
        return ConfigError(self.source, field, problem)

    def mapping(self, value: Any, field: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(field, f"must be a mapping, got {type(value).__name__}")
        return value

    def seq(self, value: Any, field: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(field, f"must be a list, got {type(value).__name__}")
        return value

    def required(self, m: Mapping[str, Any], key: str, path: str) -> Any:
        where = f"{path}.{key}" if path else key
        if key not in m or m[key] is None:
            raise self.fail(where, "is required")
        return m[key]

    def unknown(self, m: Mapping[str, Any], allowed: set[str], path: str) -> None:
        extra = sorted(str(k) for k in set(m) - allowed)
        if extra:
            where = f"{path}.{extra[0]}" if path else extra[0]
            raise self.fail(where, f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def integer(self, value: Any, field: str, minimum: int | None = None) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(field, f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(field, f"must be >= {minimum}, got {value}")
        return value

    def number(
        self, value: Any, field: str, minimum: float = 0.0, positive: bool = False, maximum: float | None = None
    ) -> float:
        """A finite number >= ``minimum`` (> with ``positive``) and <= ``maximum`` when given."""
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise self.fail(field, f"must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(field, f"must be a number, got {value!r}")
        v = float(value)
        if v != v or v in (float("inf"), float("-inf")):
            raise self.fail(field, f"must be finite, got {value!r}")
        low_ok = v > minimum if positive else v >= minimum
        if maximum is not None and (not low_ok or v > maximum):
            bracket = "(" if positive else "["
            raise self.fail(field, f"must be in {bracket}{minimum}, {maximum}], got {value!r}")
        if not low_ok:
            raise self.fail(field, f"must be {'>' if positive else '>='} {minimum}, got {value!r}")
        return v

    def string(self, value: Any, field: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(field, f"must be a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(field, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def boolean(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(field, f"must be true or false, got {value!r}")
        return value

    def name(self, value: Any, field: str) -> str:
        """A name usable as a Triton model / component type: letters, digits and '_'."""
        if not isinstance(value, str) or not _NAME_RE.match(value):
            raise self.fail(field, f"must be a name of letters, digits and '_', got {value!r}")
        return value
