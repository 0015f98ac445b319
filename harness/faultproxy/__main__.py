"""``python -m harness.faultproxy``: the Toxiproxy-compatible fault proxy server.

Logs go to stdout (a container's log is its stdout); SIGTERM and SIGINT close every proxy and the API and exit 0,
so ``docker stop`` is quick and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from harness.faultproxy import evloop
from harness.faultproxy.api import TOXIPROXY_API_VERSION
from harness.faultproxy.errors import ApiError
from harness.faultproxy.server import FaultProxyServer, raise_fd_limit


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness.faultproxy",
        description=f"TCP fault proxy speaking the Toxiproxy {TOXIPROXY_API_VERSION} HTTP API.")
    parser.add_argument("--host", default="localhost", help="address of the HTTP API (default: localhost)")
    parser.add_argument("--port", type=int, default=8474, help="port of the HTTP API (default: 8474; 0 = any)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for toxicity draws, jitter and slicer cuts; each is a function of "
                             "(seed, proxy, toxic, connection ordinal). Default: random, logged at start")
    parser.add_argument("--config", type=Path, default=None,
                        help="JSON file of proxies to create at start (same format as POST /populate)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


async def serve(args: argparse.Namespace) -> int:
    server = FaultProxyServer(args.seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start(args.host, args.port)
    except OSError as exc:
        logging.getLogger("faultproxy").error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 3
    if args.config is not None:
        try:
            await server.populate_file(args.config)
        except (OSError, ApiError, KeyError) as exc:
            logging.getLogger("faultproxy").error("cannot populate from %s: %s", args.config, exc)
            await server.stop()
            return 4
    await stop.wait()
    logging.getLogger("faultproxy").info("signal received, shutting down")
    await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    raise_fd_limit()
    logging.getLogger("faultproxy").info("event loop: %s", evloop.loop_kind())
    return evloop.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
