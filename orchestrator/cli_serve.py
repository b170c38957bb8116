"""``coserve serve --config SERVE.yaml``: the factory service (thin: parse, run, print).

SIGTERM or SIGINT stops it gracefully (health NOT_SERVING, no new requests, accepted ones finish,
embedded servers stopped); a second signal stops at once (still stopping the servers).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve boards over gRPC: Triton servers, the CoServe engine and the factory API",
        description="Start the Triton servers of a serve config, the engine and the factory gRPC API "
        "(Inspect, InspectBoard, Status, health, reflection) and serve until SIGTERM/SIGINT.",
    )
    p.add_argument("--config", required=True, help="serve config YAML (docs/serving.md)")
    p.add_argument("--no-fast-release", action="store_true",
                   help="run embedded servers with the stock Python backend (~1 s before an unloaded expert's memory is back)")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from orchestrator import aio
    from orchestrator.serve import run_service
    from orchestrator.serve_file import load_serve_file

    spec = load_serve_file(args.config)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                print("stopping: finishing accepted work (a second signal stops at once) ...", flush=True)
                stop.set()
            elif me is not None:
                me.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await run_service(spec, stop, fast_release=not args.no_fast_release,
                          say=lambda line: print(line, flush=True))

    try:
        aio.run(main())
    except asyncio.CancelledError:
        print("stopped at once (second signal)", file=sys.stderr)
        return 130
    print("stopped", flush=True)
    return 0
