"""``make demo`` and ``make run``: the whole system on embedded defaults, on one machine.

The demo starts release, web, worker, beat and the robot simulator on a SQLite file and the
first Redis it finds (``processes.choose_redis``), pushes one 25-order batch through, prints
it and stops every process it started. ``run`` keeps the same system (plus Flower) up until
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from .processes import (
    FLOWER_USER,
    REDIS_MODES,
    ROOT,
    LocalSystem,
    Process,
    choose_redis,
    port_or_free,
    stop_all,
)

ORDERS = 25
FAILING = {4, 11, 18}  # the simulator is told to reject these orders
FINAL = ("completed", "failed", "cancelled")

Say = Callable[[str], None]
# ``run`` plays two couriers, each its own simulator; ``ROBOTS`` in the environment replaces
# them, and the dashboard's settings, traces' settings and the robots' hours are passed on.
RUN_ROBOTS = ("coordinadora", "servientrega")


def _passed_on(name: str) -> bool:
    return name.startswith(("DASHBOARD_", "OTEL_")) or (
        name.startswith("ROBOT_") and name.endswith(("_HOURS", "_TIMEZONE"))
    )


def _say(line: str) -> None:
    print(line, flush=True)


def sample_orders() -> list[dict[str, Any]]:
    """Return the demo batch: ORDERS orders, those in FAILING marked for the simulator to fail."""
    cities = ["Bogotá", "Medellín", "Cali", "Barranquilla", "Cartagena"]
    batch = []
    for n in range(ORDERS):
        pedido: dict[str, Any] = {
            "destinatario": f"Cliente {n + 1}",
            "ciudad": cities[n % len(cities)],
            "direccion": f"Calle {10 + n} # {n + 3}-{20 + n}",
            "peso_kg": round(0.5 + n * 0.3, 1),
        }
        if n in FAILING:
            pedido["_simulate"] = "fail"
        batch.append({"orderId": f"DEMO-{1001 + n}", "pedidoInput": pedido})
    return batch


def expected_outcome(job: dict[str, Any]) -> bool:
    """Tell whether the demo job ended as planned: completed, exactly the FAILING orders error."""
    failing = {f"DEMO-{1001 + n}" for n in FAILING}
    items = job.get("items", [])
    return (
        job["status"] == "completed"
        and len(items) == ORDERS
        and all(
            (i["status"] == "error" and i["error"])
            if i["orderId"] in failing
            else (i["status"] == "success" and i["trackingNumber"])
            for i in items
        )
    )


def progress_line(counts: dict[str, int], width: int = 30) -> str:
    """Return a one-line progress bar of a job's items."""
    done = counts["success"] + counts["error"] + counts["unknown"]
    total = counts["total"] or 1
    filled = int(width * done / total)
    return (
        f"  [{'#' * filled}{'.' * (width - filled)}] {done:>3}/{counts['total']} items"
        f"  success {counts['success']:>3}  error {counts['error']:>2}"
        f"  unknown {counts['unknown']:>2}"
    )


def items_table(job: dict[str, Any]) -> str:
    """Return the job's items as a text table: order, status, tracking number or error."""
    width = max([12, *(len(i["orderId"]) for i in job["items"])])
    lines = [
        f"  {'order':<{width}} {'status':<8} tracking number / error",
        f"  {'-' * width} {'-' * 8} {'-' * 32}",
    ]
    for item in job["items"]:
        detail = item["trackingNumber"] or item["error"] or ""
        lines.append(f"  {item['orderId']:<{width}} {item['status']:<8} {detail}")
    return "\n".join(lines)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so the children are stopped on the way out."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(redis_mode: str = "auto", say: Say = _say) -> int:
    """Start the system, push the sample batch through, print it, stop; 0 if as expected."""
    started = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix="orchestrator-demo-"))
    processes: list[Process] = []
    system: LocalSystem | None = None
    try:
        with _sigterm_as_interrupt():
            redis = choose_redis(log_dir, redis_mode)
            if redis.process is not None:
                processes.append(redis.process)
            say(f"demo: Redis: {redis.description}")
            say(f"demo: database: SQLite file {log_dir / 'demo.db'}; logs in {log_dir}")
            system = LocalSystem(
                log_dir,
                redis.url,
                f"sqlite:///{log_dir / 'demo.db'}",
                settings={
                    "ROBOT_SECONDS_PER_ITEM": "2",
                    "ROBOT_DEADLINE_MARGIN_SECONDS": "60",
                    "ROBOT_SETTLE_SECONDS": "0.5",
                    "HOUSEKEEPING_INTERVAL_SECONDS": "2",
                },
            )
            system.start(("robot", "web", "worker", "beat"), say)
            say(f"demo: everything up in {time.monotonic() - started:.1f} s")
            say(f"demo: robot simulator on {system.robot}")
            say(f"demo: dashboard {system.base}/dashboard/ (sign in with token {system.token})")
            job = _push_batch(system, 600 if redis.slow else 180, say)
            say("")
            say(items_table(job))
            counts = job["counts"]
            ok = expected_outcome(job)
            verdict = "as expected" if ok else "NOT as expected"
            say(
                f"\ndemo: job {job['status']} {verdict}: {counts['success']} success, "
                f"{counts['error']} error, {counts['unknown']} unknown of {counts['total']} "
                f"orders, in {time.monotonic() - started:.1f} s"
            )
            if not ok:
                say(f"demo: the logs are in {log_dir}")
            return 0 if ok else 1
    except KeyboardInterrupt:
        say("\ndemo: interrupted")
        return 130
    except (RuntimeError, TimeoutError, requests.RequestException) as exc:
        say(f"\ndemo: {exc}\ndemo: the logs are in {log_dir}")
        return 1
    finally:
        if system is not None:
            system.stop()
        stop_all(processes)
        say("demo: stopped every process it started")


def _push_batch(system: LocalSystem, timeout: float, say: Say) -> dict[str, Any]:
    """Submit the sample batch, show progress until it is final, return the final job."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {system.token}"
    say(f"demo: submitting {ORDERS} orders ({len(FAILING)} of which the robot simulator rejects)")
    answer = http.post(f"{system.base}/api/jobs", json={"orders": sample_orders()}, timeout=30)
    if answer.status_code != 202:
        raise RuntimeError(f"the API refused the batch ({answer.status_code}): {answer.text}")
    job = answer.json()
    say(f"demo: job {job['id']} accepted; the robot works through it:")
    live = sys.stdout.isatty()
    shown, last_print = "", 0.0
    end = time.monotonic() + timeout
    while True:
        line = progress_line(job["counts"])
        final = job["status"] in FINAL
        if line != shown and (live or final or time.monotonic() - last_print >= 1):
            if live:
                print(f"\r{line}", end="\n" if final else "", flush=True)
            else:
                say(line)
            shown, last_print = line, time.monotonic()
        if final:
            return job
        if time.monotonic() > end:
            raise RuntimeError(f"the job did not finish within {timeout:.0f} s")
        if system.dead():
            names = ", ".join(p.name for p in system.dead())
            raise RuntimeError(f"a process exited during the demo: {names}")
        time.sleep(0.25)
        answer = http.get(f"{system.base}/api/jobs/{job['id']}", timeout=30)
        answer.raise_for_status()
        job = answer.json()


def run_forever(redis_mode: str = "auto", say: Say = _say) -> int:
    """Start the system with Flower and keep it up until Ctrl-C or SIGTERM; then stop it all."""
    log_dir = Path(tempfile.mkdtemp(prefix="orchestrator-run-"))
    processes: list[Process] = []
    system: LocalSystem | None = None
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        redis = choose_redis(log_dir, redis_mode)
        if redis.process is not None:
            processes.append(redis.process)
        database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{ROOT / 'orchestrator.db'}"
        say(f"run: Redis: {redis.description}")
        say(f"run: database: {_without_password(database_url)}; logs in {log_dir}")
        system = LocalSystem(
            log_dir,
            redis.url,
            database_url,
            web_port=port_or_free(int(os.environ.get("PORT") or 5000)),
            flower_port=port_or_free(5555),
            item_delay=0.5,
            browsers=2,
            robots=_run_robots(),
            settings={
                "HOUSEKEEPING_INTERVAL_SECONDS": "5",
                # The dashboard's sign-in, traces (docs/operations.md, "Traces") and hours.
                **{k: v for k, v in os.environ.items() if _passed_on(k)},
            },
        )
        system.start(("robot", "web", "worker", "beat", "flower"), say)
        flower = f"http://127.0.0.1:{system.flower_port}/"
        say(
            "\nThe orchestrator is running; Ctrl-C stops it.\n"
            f"  dashboard   {system.base}/dashboard/   (sign in with the API token)\n"
            f"  Flower      {flower}   (user {FLOWER_USER}, password: the API token)\n"
            f"  API token   {system.token}   (development only, new on every start)\n"
            f"{_robot_lines(system)}"
            "The CLI, from another terminal:\n"
            f"  export ORCHESTRATOR_URL={system.base} ORCHESTRATOR_TOKEN={system.token}\n"
            f"  .venv/bin/orchestrator submit examples/orders.csv{_robot_option(system)} --wait"
        )
        while not stop.wait(0.5):
            dead = system.dead() + [p for p in processes if not p.alive()]
            if dead:
                for process in dead:
                    code = process.popen.returncode
                    say(f"run: {process.name} exited ({code}); its log: {process.log_path}")
                return 1
        say(f"\nrun: {signal.Signals(received[0]).name} received; stopping")
        return 0
    except (RuntimeError, TimeoutError) as exc:
        say(f"run: {exc}")
        return 1
    finally:
        if system is not None:
            system.stop()
        stop_all(processes)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        say("run: stopped every process it started")


def _run_robots() -> list[str]:
    """The robots ``run`` plays: ``ROBOTS`` if set, else two couriers (CONTRACT §11)."""
    names = os.environ.get("ROBOTS") or ",".join(RUN_ROBOTS)
    return [name.strip() for name in names.split(",") if name.strip()]


def _robot_lines(system: LocalSystem) -> str:
    return (
        "".join(
            f"  robot       {name}: {url} (a simulator)\n"
            for name, url in system.robot_urls.items()
        )
        or f"  robot       {system.robot} (the simulator)\n"
    )


def _robot_option(system: LocalSystem) -> str:
    return f" --robot {next(iter(system.robot_urls))}" if system.robot_urls else ""


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: say nothing about it rather than leak it
        return "(DATABASE_URL)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.local.demo", description=__doc__)
    default = os.environ.get("DEMO_REDIS", "auto")
    parser.add_argument("--redis", choices=REDIS_MODES, default=default)
    parser.add_argument("--run", action="store_true", help="keep the system up until Ctrl-C")
    args = parser.parse_args(argv)
    return run_forever(args.redis) if args.run else run_demo(args.redis)


if __name__ == "__main__":
    sys.exit(main())
