"""Small typed readers for YAML config trees; every error names file, field and problem."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.errors import ConfigError


class Reader:
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

    def number(self, value: Any, field: str, minimum: float = 0.0, positive: bool = False) -> float:
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
        if positive and v <= minimum:
            raise self.fail(field, f"must be > {minimum}, got {value!r}")
        if v < minimum:
            raise self.fail(field, f"must be >= {minimum}, got {value!r}")
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
