"""Command-line numbers, validated with the same rules as the YAML reader.

Every numeric flag of every ``coserve`` command uses one of these as its argparse ``type``, so a
bad number is refused before anything runs, with argparse's usage line and exit code 2::

    coserve: error: argument --grpc-port: must be in [1, 65535], got 70000

The rules are ``orchestrator.config_reader.Reader``'s (finite; positive where zero makes no sense;
zero allowed where it does, e.g. an arrival interval of 0 ms), so a value means the same whether
it comes from a flag or from a config file.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from orchestrator.config_reader import Reader
from orchestrator.errors import ConfigError

_READER = Reader("")


def _problem(exc: ConfigError) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(exc.problem)


def _integer(text: str, minimum: int | None, maximum: int | None) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if maximum is not None and value > maximum:
        bounds = f"in [{minimum}, {maximum}]" if minimum is not None else f"<= {maximum}"
        raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
    if maximum is not None and minimum is not None and value < minimum:
        raise argparse.ArgumentTypeError(f"must be in [{minimum}, {maximum}], got {value}")
    try:
        return _READER.integer(value, "", minimum=minimum)
    except ConfigError as exc:
        raise _problem(exc) from None


def _number(text: str, minimum: float, positive: bool, maximum: float | None) -> float:
    try:
        return _READER.number(text.strip(), "", minimum=minimum, positive=positive, maximum=maximum)
    except ConfigError as exc:
        raise _problem(exc) from None


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum] (either end open when None)."""

    def parse(text: str) -> int:
        return _integer(text, minimum, maximum)

    parse.__name__ = "integer"  # argparse names the type in "invalid <name> value" messages
    return parse


def number(
    minimum: float = 0.0, positive: bool = False, maximum: float | None = None
) -> Callable[[str], float]:
    """An argparse type: a finite number >= minimum (> with ``positive``), <= maximum when given."""

    def parse(text: str) -> float:
        return _number(text, minimum, positive, maximum)

    parse.__name__ = "number"
    return parse


#: a count that must be at least one (requests, types, components, jobs, instances, ...)
positive_int = integer(minimum=1)
#: a count where zero makes sense (detectors, extra repetitions, a seed)
nonneg_int = integer(minimum=0)
#: a TCP port number
port = integer(minimum=1, maximum=65535)
#: seconds, sizes, exponents where zero makes no sense
positive_number = number(positive=True)
#: intervals, bytes, shares where zero is meaningful
nonneg_number = number()
#: a share in [0, 1]
fraction = number(maximum=1.0)
