"""The ``coserve`` command line (thin: parses arguments, calls the library, prints results).

Exit codes, the same for every command:

====  ==========================================================================================
0     done, every result complete
1     done, but a result is incomplete: an expert failed (``demo``: components left without a
      verdict; the summary says how many and why)
2     usage or input error (bad flag, file, number, model name, unreachable server); one line on
      stderr, never a traceback
3     incomplete because Triton was lost for good part-way (an external server stopped
      answering, or restarts could not bring an embedded one back; the watchdog restarts an
      embedded server that dies or freezes and the work goes on); the summary says how many
      results are missing
130   interrupted by SIGINT (Ctrl-C); 143 terminated by SIGTERM. Either way every server the
      command started has been stopped and its files removed first.
141   stdout was closed early (``coserve repo status | head``); nothing more is printed
====  ==========================================================================================
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from orchestrator.errors import CoserveError

#: Modules that each add their subcommands with ``register(subparsers)``. They must import cheaply
#: (no torch, no tritonclient at module level) so that ``coserve --help`` stays fast.
COMMAND_MODULES = (
    "orchestrator.cli_triton",  # triton start, repo list|status|load|unload
    "exporter.cli",  # coe generate, export, expert add
    "orchestrator.cli_simulate",  # simulate
    "orchestrator.cli_demo",  # demo
    "profiler.cli",  # profile
    "orchestrator.cli_serve",  # serve
    "orchestrator.cli_bench",  # bench
    "orchestrator.cli_verdicts",  # verdicts (the verdict log)
    "orchestrator.cli_plan",  # plan
)

EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
EXIT_SERVER_LOST = 3
EXIT_SIGINT = 130
EXIT_BROKEN_PIPE = 141
EXIT_SIGTERM = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, systemd, ``docker stop``), unwound like Ctrl-C so that every
    ``with``/``finally`` that stops a server runs."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # A second SIGTERM while the first one's clean-up runs is ignored: the clean-up is bounded
    # (a few seconds) and interrupting it would leave the server running.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coserve", description="Collaboration-of-Experts serving on Triton")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def _discard_stdout() -> None:
    """Point stdout at /dev/null, dropping what is buffered for a reader that has gone."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout closed or not a real file (e.g. replaced in a test)
        pass
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code = _run(args)
    # Output to a pipe is block-buffered, so a reader gone early (``| head``) is often seen only
    # here, not while printing: flush now, else Python reports "Exception ignored ... BrokenPipeError"
    # at exit and exits 120.
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return code or EXIT_BROKEN_PIPE
    return code


def _run(args: argparse.Namespace) -> int:
    """Run the chosen command; map its outcome to the documented exit codes."""
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if on_main_thread else None
    try:
        return int(args.func(args) or 0)
    except CoserveError as exc:
        print(f"coserve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print("coserve: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        print("coserve: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except BrokenPipeError:
        # The reader went away (``| head``): say nothing more, and keep Python's own flush at exit
        # from raising again on the closed pipe.
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        # A path the system refuses before any reader could name it (a name too long, a folder
        # that may not be searched: ``Path.is_dir`` raises these): one line naming the path.
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"coserve: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)



def run_script(main_fn: Callable[[], int]) -> int:
    """For benchmark scripts that start servers: SIGTERM is turned into SIGINT, so that
    ``asyncio.run`` cancels its main task and every ``finally`` that stops a tritonserver runs
    on the loop (an exception raised from a signal handler in the middle of grpc's aio
    machinery instead can crash the interpreter at exit); exit 143 (SIGTERM) or 130 (SIGINT)."""
    terminated = False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        nonlocal terminated
        terminated = True
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one would cut the clean-up short
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return main_fn()
    except KeyboardInterrupt:
        print("terminated (SIGTERM)" if terminated else "interrupted", file=sys.stderr)
        return EXIT_SIGTERM if terminated else EXIT_SIGINT
    finally:
        signal.signal(signal.SIGTERM, previous)

if __name__ == "__main__":
    sys.exit(main())
