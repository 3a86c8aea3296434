"""Benchmark 4: the callback endpoint, signed item.completed requests per second and p99.

The real endpoint: ``python -m webapp`` (the Procfile's web process: gunicorn, 2 processes x 4
threads, gthread, access log on) on PostgreSQL, worker and beat running, jobs dispatched to
the robot stand-in and waiting. Every request is a fresh, correctly signed
``robot.item.completed`` (success with a tracking number) for a distinct item, so every one
takes the full path: signature, job lookup, validation, de-duplication, update, event row,
commit. Baseline: ``python -m bench.bare_web``, the same ``webapp.__main__.main()`` and gunicorn
options serving a bare Flask route that reads the body and answers the same JSON.

Load: 4 client processes x 2 threads = 8 keep-alive connections (the server's 8 threads),
requests signed before the clock starts. Ten rounds of 1,500 alternate bare and real
(B-R-B-R…) so drift on the shared machine hits both; a bare round sends its round's requests
twice (the bare route applies nothing), so both sides run for about the same seconds. Each
side's rate is pooled over its rounds (all requests / all seconds); the per-round ratios show
the spread. Every round opens new connections, and which gunicorn process accepts which of the
8 keep-alive connections decides how much of the second core a round can use (the bare rate
alone moves 1,400-2,700 req/s from round to round): ten placements instead of five halve that
part of the variance of the pooled ratio for the same number of requests.
"""

from __future__ import annotations

import http.client
import math
import multiprocessing
import threading
import time
from contextlib import nullcontext
from typing import Any

from sqlalchemy import text

from orchestrator.local.processes import Process, answers, free_port, wait_until

from .common import (
    MachineLoad,
    Stack,
    emit,
    note,
    profiled,
    ratio,
    summary,
)

NAME = "callbacks"
PROCESSES, THREADS = 4, 2

Request = tuple[str, bytes, dict[str, str]]


def _client(port: int, requests: list[Request], start_at: float, out: Any, threads: int) -> None:
    """One client process: THREADS keep-alive connections share the requests, all timed."""
    latencies: list[float] = []
    errors: list[int] = []
    first, last = [math.inf], [0.0]
    lock = threading.Lock()

    def worker(chunk: list[Request]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        bad = 0
        while time.monotonic() < start_at:
            time.sleep(0.001)
        t_first = time.monotonic()
        for path, body, headers in chunk:
            t0 = time.monotonic()
            try:
                conn.request("POST", path, body=body, headers=headers)
                answer = conn.getresponse()
                answer.read()
                status = answer.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status = 0
            mine.append((time.monotonic() - t0) * 1000)
            bad += status != 200
        t_last = time.monotonic()
        conn.close()
        with lock:
            latencies.extend(mine)
            errors.append(bad)
            first[0] = min(first[0], t_first)
            last[0] = max(last[0], t_last)

    started = [
        threading.Thread(target=worker, args=(requests[n::threads],)) for n in range(threads)
    ]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    out.put({"latencies": latencies, "errors": sum(errors), "first": first[0], "last": last[0]})


def _load(
    port: int, requests: list[Request], processes: int = PROCESSES, threads: int = THREADS
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start_at = time.monotonic() + 1.5
    procs = [
        ctx.Process(target=_client, args=(port, requests[n::processes], start_at, out, threads))
        for n in range(processes)
    ]
    load = MachineLoad()
    for proc in procs:
        proc.start()
    parts = [out.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    latencies = [v for p in parts for v in p["latencies"]]
    elapsed = max(p["last"] for p in parts) - min(p["first"] for p in parts)
    return {
        "concurrency": processes * threads,
        "requests": len(latencies),
        "errors": sum(p["errors"] for p in parts),
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": summary(latencies),
        "machine_busy_pct": load.close(),
        "cpu_ms_per_request": load.cpu_ms_per(len(latencies)),
    }


def _signed_requests(stack: Stack, items: list[tuple[str, str]]) -> list[Request]:
    prepared = []
    for n, (item_id, job_id) in enumerate(items):
        body, headers = stack.signed(
            job_id,
            "robot.item.completed",
            {"itemId": item_id, "status": "success", "trackingNumber": f"CO{n:010d}"},
        )
        prepared.append((f"/api/robot/jobs/{job_id}/events", body.encode(), headers))
    return prepared


def run(quick: bool, redis_mode: str) -> bool:
    per_round = 500 if quick else 1500
    rounds = 2 if quick else 10
    warm = 200
    light = 250 if quick else 1500
    needed = per_round * rounds + warm + light
    jobs = math.ceil(needed / 500)
    with Stack(NAME, redis_mode, robot="accept") as stack:
        bare_port = free_port()
        bare = Process(
            "bare-web",
            "python -m bench.bare_web",
            {**stack.env, "PORT": str(bare_port)},
            stack.log_dir,
        )
        try:
            wait_until(lambda: answers(f"http://127.0.0.1:{bare_port}/healthz"), 60, "bare web")
            note(f"{NAME}: {jobs} jobs of 500 items")
            ids = stack.submit_many(jobs, items=500, threads=2)
            wait_until(lambda: stack.robot_stats()["dispatches"] >= jobs, 120, "dispatches")
            with stack.engine.connect() as conn:
                items = [
                    (row[0], row[1])
                    for row in conn.execute(
                        text("SELECT id, job_id FROM items WHERE job_id = ANY(:ids) ORDER BY id"),
                        {"ids": ids},
                    )
                ]
            web_port = stack.web_port
            warm_requests = _signed_requests(stack, items[:warm])
            _load(bare_port, warm_requests)
            _load(web_port, warm_requests)
            results: dict[str, list[dict[str, Any]]] = {"bare": [], "real": []}
            for n in range(rounds):
                chunk = items[warm + n * per_round : warm + (n + 1) * per_round]
                prepared = _signed_requests(stack, chunk)
                note(f"{NAME}: round {n + 1}: bare")
                results["bare"].append(_load(bare_port, prepared * 2))
                emit(NAME, f"bare_round_{n + 1}", **results["bare"][-1])
                note(f"{NAME}: round {n + 1}: real")
                web_pid = stack.processes["web"].popen.pid
                # Profiles (BENCH_PROFILE=1) of the first two rounds only: enough samples.
                watch = profiled(web_pid, f"callbacks-real-{n + 1}-web") if n < 2 else nullcontext()
                with watch:
                    results["real"].append(_load(web_port, prepared))
                emit(NAME, f"real_round_{n + 1}", **results["real"][-1])
            # The same at light load: 2 connections (1 process x 2 threads).
            light_items = items[warm + rounds * per_round :]
            prepared = _signed_requests(stack, light_items)
            results["bare_light"] = [_load(bare_port, prepared, 1, 2)]
            emit(NAME, "bare_light", **results["bare_light"][-1])
            results["real_light"] = [_load(web_port, prepared, 1, 2)]
            emit(NAME, "real_light", **results["real_light"][-1])
            applied = stack.scalar(
                "SELECT count(*) FROM items WHERE status = 'success' AND job_id = ANY(:ids)",
                ids=ids,
            )
        finally:
            bare.stop()

        def pooled(case: str) -> float:
            return sum(r["requests"] for r in results[case]) / sum(
                r["seconds"] for r in results[case]
            )

        bare_rps, real_rps = pooled("bare"), pooled("real")
        round_ratios = [
            ratio(r["requests_per_s"], b["requests_per_s"])
            for b, r in zip(results["bare"], results["real"], strict=True)
        ]
        real_p99 = max(r["latency_ms"]["p99"] for r in results["real"])
        errors = sum(r["errors"] for r in results["real"])
        met = real_rps >= 0.4 * bare_rps and real_p99 <= 50 and errors == 0
        emit(
            NAME,
            "summary",
            target="real >= 40 % of bare requests/s, real p99 <= 50 ms",
            concurrency=PROCESSES * THREADS,
            bare_requests_per_s=round(bare_rps, 1),
            real_requests_per_s=round(real_rps, 1),
            ratio_to_bare=ratio(real_rps, bare_rps),
            rounds=rounds,
            ratio_per_round=round_ratios,
            bare_p99_ms=max(r["latency_ms"]["p99"] for r in results["bare"]),
            real_p99_ms=real_p99,
            real_errors=errors,
            items_applied=int(applied or 0),
            items_sent=warm + rounds * per_round + len(light_items),
            light_load={
                "concurrency": 2,
                "bare_requests_per_s": results["bare_light"][0]["requests_per_s"],
                "real_requests_per_s": results["real_light"][0]["requests_per_s"],
                "real_p99_ms": results["real_light"][0]["latency_ms"]["p99"],
                "bare_p99_ms": results["bare_light"][0]["latency_ms"]["p99"],
            },
            met=met,
        )
        return met
