"""``make demo``: start the whole system on embedded defaults and push one batch through."""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from .localstack import (
    Process,
    bin_path,
    free_port,
    private_redis,
    procfile,
    redis_answers,
    run_release,
    wait_until,
)

ORDERS = 25
FAILING = {4, 11, 18}  # the simulator is told to reject these orders
DEMO_TOKEN = "demo-token"  # noqa: S105 - a local, throwaway development token


def choose_redis(log_dir: Path) -> tuple[str, Process | None]:
    """Return REDIS_URL if set, else the local Redis, else a private redis-server."""
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"], None
    local = "redis://127.0.0.1:6379/14"
    if redis_answers(local):
        return local, None
    started = private_redis(log_dir)
    if started is not None:
        return started
    raise SystemExit("demo: no Redis at 127.0.0.1:6379 and no redis-server binary to start one")


def sample_orders() -> list[dict[str, Any]]:
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


def progress_bar(counts: dict[str, int]) -> str:
    done = counts["success"] + counts["error"] + counts["unknown"]
    filled = int(30 * done / counts["total"])
    return (
        f"\r  [{'#' * filled}{'.' * (30 - filled)}] {done:>2}/{counts['total']} items"
        f"  success {counts['success']:>2}  error {counts['error']}"
    )


def print_table(job: dict[str, Any]) -> None:
    print(f"\n\n  {'order':<12} {'status':<8} tracking number / error")
    print(f"  {'-' * 12} {'-' * 8} {'-' * 32}")
    for item in job["items"]:
        detail = item["trackingNumber"] or item["error"] or ""
        print(f"  {item['orderId']:<12} {item['status']:<8} {detail}")


def main() -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="orchestrator-demo-"))
    processes: list[Process] = []
    started = time.monotonic()
    try:
        redis_url, redis_process = choose_redis(log_dir)
        if redis_process is not None:
            processes.append(redis_process)
        web_port, robot_port = free_port(), free_port()
        env = {
            "PATH": bin_path(),
            "APP_ENV": "development",
            "DATABASE_URL": f"sqlite:///{log_dir / 'demo.db'}",
            "REDIS_URL": redis_url,
            "ROBOT_URL": f"http://127.0.0.1:{robot_port}",
            "PUBLIC_URL": f"http://127.0.0.1:{web_port}",
            "PORT": str(web_port),
            "API_TOKENS": DEMO_TOKEN,
            "ROBOT_CALLBACK_SECRET": secrets.token_urlsafe(32),
            "ROBOT_SECONDS_PER_ITEM": "2",
            "ROBOT_DEADLINE_MARGIN_SECONDS": "30",
            "ROBOT_SETTLE_SECONDS": "0.5",
            "HOUSEKEEPING_INTERVAL_SECONDS": "2",
        }
        print(f"demo: SQLite at {log_dir / 'demo.db'}, Redis at {redis_url}, logs in {log_dir}")
        commands = procfile()
        run_release(env)
        robot = f"python -m orchestrator.robot_simulator --port {robot_port} --item-delay 0.15"
        for name, command in [("robot", robot)] + [
            (n, commands[n]) for n in ("web", "worker", "beat")
        ]:
            processes.append(Process(name, command, env, log_dir))
        base = f"http://127.0.0.1:{web_port}"
        headers = {"Authorization": f"Bearer {DEMO_TOKEN}"}
        http = requests.Session()
        wait_until(lambda: _ok(http, f"{base}/healthz"), 60, "the web process")
        wait_until(lambda: " ready." in processes[-2].log(), 60, "the worker")
        print(
            f"demo: web on {base}, robot simulator on port {robot_port}; submitting {ORDERS} orders"
        )
        answer = http.post(f"{base}/api/jobs", json={"orders": sample_orders()}, headers=headers)
        answer.raise_for_status()
        job_id = answer.json()["id"]
        print(f"demo: job {job_id} accepted ({answer.status_code})")
        job = answer.json()
        shown = ""
        deadline = time.monotonic() + 120
        while job["status"] not in ("completed", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise SystemExit("\ndemo: the job did not finish within 120 s; see the logs")
            time.sleep(0.3)
            job = http.get(f"{base}/api/jobs/{job_id}", headers=headers).json()
            line = progress_bar(job["counts"])
            if line != shown:
                print(line, end="", flush=True)
                shown = line
        print_table(job)
        counts = job["counts"]
        ok = (
            job["status"] == "completed"
            and counts["success"] == ORDERS - len(FAILING)
            and counts["error"] == len(FAILING)
        )
        elapsed = time.monotonic() - started
        verdict = "as expected" if ok else "NOT as expected"
        print(f"\ndemo: job {job['status']} {verdict}: {counts} in {elapsed:.1f} s")
        return 0 if ok else 1
    finally:
        for process in reversed(processes):
            process.stop()


def _ok(http: requests.Session, url: str) -> bool:
    try:
        return http.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


if __name__ == "__main__":
    sys.exit(main())
