"""An in-process Redis for the demo when no real one exists: fakeredis over TCP, with Lua.

It speaks enough of Redis for the Celery broker, pub/sub and the rendezvous's scripts, but
about 20 times slower than a real server: for a demo on a bare machine, never for production.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def available() -> bool:
    """Tell whether fakeredis's TCP server and its Lua support (lupa) are installed."""
    try:
        import lupa  # noqa: F401
        from fakeredis import TcpFakeServer  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m orchestrator.local.embedded_redis")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if not available():
        print("embedded Redis needs fakeredis[lua] (the dev extra)", file=sys.stderr)
        return 2
    from fakeredis import TcpFakeServer

    server = TcpFakeServer((args.host, args.port), server_type="redis")
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.start()
    print(f"embedded Redis (fakeredis) listening on {args.host}:{args.port}", flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()  # sets the handlers' stop flag, so open connections end too
    server.server_close()
    thread.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
