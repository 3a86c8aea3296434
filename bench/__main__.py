"""Run the benchmarks: ``python -m bench [--quick] [--redis MODE] [--broker BROKER] [NAME ...]``.

``--traces`` has ``web``, ``worker`` and ``beat`` export OpenTelemetry traces to a stand-in
OTLP/HTTP collector (``bench/otlp_sink.py``); every JSON line says ``traces`` on or off.

``--broker rabbitmq`` runs every stack on a private RabbitMQ node (native delayed delivery,
``consumer_timeout`` 60 s); Redis stays the rendezvous. Every JSON line names its broker.

Names: wake, free, throughput, callbacks, long, notifications, handoff, ten, stream, robots (or the
names). No name runs them all, one after the other (the machine has two cores: they must not
overlap). Every figure is a JSON line on stdout; progress goes to stderr. Exit status 1 if a
benchmark broke (not if it missed its target: that is a figure, reported in its ``summary`` line).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

from . import common
from .common import add_output, emit, note

BENCHES = {
    "wake": "wake_latency",
    "free": "free_waiting",
    "throughput": "throughput",
    "callbacks": "callbacks",
    "long": "long_deadline",
    "notifications": "notifications",
    "handoff": "handoff",
    "ten": "ten_batches",
    "robots": "robots",
    "stream": "stream",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument(
        "--redis",
        choices=("private", "shared"),
        default="private",
        help="a private redis-server (default) or databases 5-8 of 127.0.0.1:6379",
    )
    parser.add_argument(
        "--broker",
        choices=common.BROKERS,
        default="redis",
        help="the Celery broker: Redis (default) or a private RabbitMQ node per benchmark",
    )
    parser.add_argument(
        "--traces",
        action="store_true",
        help="web, worker and beat export traces to a stand-in OTLP/HTTP collector",
    )
    parser.add_argument("--out", help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    modules = []
    for name in args.names or list(BENCHES):
        module = BENCHES.get(name, name)
        if module not in BENCHES.values():
            parser.error(f"unknown benchmark {name!r}")
        modules.append(module)
    if args.out:
        add_output(args.out)
    common.set_broker(args.broker)
    common.set_traces(args.traces)
    broken = 0
    started = time.monotonic()
    for module_name in modules:
        module = importlib.import_module(f"bench.{module_name}")
        t0 = time.monotonic()
        note(f"{module_name}: start")
        try:
            module.run(quick=args.quick, redis_mode=args.redis)
        except Exception as exc:
            broken += 1
            traceback.print_exc(file=sys.stderr)
            emit(module_name, "error", error=f"{type(exc).__name__}: {exc}"[:2000])
        note(f"{module_name}: done in {time.monotonic() - t0:.0f} s")
    note(f"all done in {time.monotonic() - started:.0f} s")
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
