"""The project's own exception types.

Every error a user can cause carries a message that names the problem (the file, the field, the
expert, the server's own words). The CLI prints ``str(error)`` for these and exits non-zero; it
never shows a traceback for a ``CoserveError``.
"""

from __future__ import annotations


class CoserveError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(CoserveError):
    """A configuration or definition file is invalid.

    The message names the file, the field (as a dotted path) and the problem.
    """

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}")


class TritonError(CoserveError):
    """Base class of errors that come from (or concern) the Triton server.

    ``server_message`` keeps the server's own text where there is one.
    """

    def __init__(self, message: str, server_message: str | None = None) -> None:
        self.server_message = server_message
        super().__init__(message if server_message is None else f"{message}: {server_message}")


class ServerStartError(TritonError):
    """The embedded tritonserver could not be found or did not become ready (message has the log tail)."""


class ServerUnavailableError(TritonError):
    """The server cannot be reached (not started, crashed, or wrong URL)."""


class ModelNotFoundError(TritonError):
    """The named model is not in the repository (or, for inference, not loaded)."""


class ModelNotReadyError(TritonError):
    """The model exists but is not loaded/ready, so it cannot serve inference."""


class ModelLoadError(TritonError):
    """Triton refused or failed to load a model (corrupt file, unsupported device kind, bad config)."""


class ModelUnloadTimeoutError(TritonError):
    """An unload did not finish (model process still alive) within the timeout."""


class InferenceError(TritonError):
    """An inference request failed (bad input shape/type, model process unhealthy, ...)."""


class ExportError(CoserveError):
    """Exporting a model to ONNX failed or the export did not match torch (parity error)."""
