"""Typed field access for YAML config trees (CoE files, cost profiles, serve configs, presets).

Every error is a ``ConfigError`` that names the file, the field (a dotted path such as
``experts[3].size_mb``) and the problem. ``Reader`` is pure: it reads parsed values, never files.

``read_yaml_file`` is the one place a YAML config file is read (``--coe``, ``--profile``,
``--config``, ``--preset`` and ``load_coe``); it and ``parse_yaml_text`` turn every way a file can
fail to be a YAML document (unreadable, a directory, not UTF-8, not YAML) into a one-line
``ConfigError`` naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
_STRING_MARK_RE = re.compile(r'\s+in "<unicode string>",')  # PyYAML's name for text it was handed


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


def read_yaml_file(path: str | Path, source: str | None = None) -> Any:
    """The parsed YAML document in the file at ``path`` (UTF-8 text).

    Raises a ``ConfigError`` whose source is ``source`` (default: ``str(path)``) when the file
    cannot be read (missing, a directory, no permission), is not UTF-8 text or is not YAML.
    """
    name = str(path) if source is None else source
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        raise ConfigError(name, "", problem) from None
    return parse_yaml_text(text, name)


def parse_yaml_text(text: str, source: str) -> Any:
    """The parsed YAML document in ``text``; a ``ConfigError`` naming ``source`` if it is not YAML.

    The problem is one line (PyYAML's own messages span several), with the line and column.
    """
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or exc.context or "invalid document"
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        ctx = exc.context_mark
        if exc.problem and exc.context and ctx is not None:
            problem += f" ({exc.context} at line {ctx.line + 1}, column {ctx.column + 1})"
        raise ConfigError(source, "", f"not valid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        one_line = " ".join(_STRING_MARK_RE.sub(",", str(exc)).split())
        raise ConfigError(source, "", f"not valid YAML ({one_line})") from None
    except RecursionError:
        raise ConfigError(source, "", "not valid YAML (nested too deeply)") from None
    except ValueError as exc:  # a tagged or implicit scalar PyYAML cannot build, e.g. 2001-02-30
        raise ConfigError(source, "", f"not valid YAML ({exc})") from None
