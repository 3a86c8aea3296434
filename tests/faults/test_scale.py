"""Scenarios 6 and 10: two workers on the same queues, and a burst of 1,000 jobs."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from .conftest import Rig, record, rig
from .tools import Stopwatch, attempts

pytestmark = pytest.mark.faults


def _worker_logs(r: Rig) -> str:
    return "\n".join(p.log() for n, p in r.system.processes.items() if n.startswith("worker"))


def _assert_each_once(r: Rig, jobs: list[str]) -> dict[str, int]:
    """Every job completed, dispatched once, finalized once; return the workers' shares."""
    assert r.db.job_statuses() == Counter({"completed": len(jobs)})
    assert r.db.rows("SELECT status, count(*) FROM items GROUP BY status") == [
        ("success", len(jobs))
    ]
    stats = r.system.robot_stats()
    assert stats["totalDispatches"] == len(jobs)
    assert Counter(stats["dispatches"][job] for job in jobs) == Counter({1: len(jobs)})
    assert Counter(attempts(r.log_dir)[job] for job in jobs) == Counter({1: len(jobs)})
    logs = {n: p.log() for n, p in r.system.processes.items() if n.startswith("worker")}
    everything = "\n".join(logs.values())
    finalized = Counter(re.findall(r"job ([0-9a-f-]{36}) completed", everything))
    dispatched = Counter(re.findall(r"job ([0-9a-f-]{36}) dispatched \(", everything))
    assert finalized == Counter(dict.fromkeys(jobs, 1))
    assert dispatched == Counter(dict.fromkeys(jobs, 1))
    return {n: log.count(" dispatched (") for n, log in logs.items()}


def scale_rig(log_dir):
    """PostgreSQL, a fast simulator and generous deadlines: these count dispatches, not speed."""
    return rig(
        log_dir,
        database="postgres",
        robot_args="--workers 32",
        ROBOT_DEADLINE_MARGIN_SECONDS="300",
    )


@pytest.mark.timeout(600)
def test_two_workers_on_the_same_queues_never_dispatch_or_finalize_twice(log_dir) -> None:
    with scale_rig(log_dir) as r:
        r.system.start_process("worker", label="worker-host-b")
        r.system.robot_config(item_delay=0)
        clock = Stopwatch()
        jobs = r.submit_many(500, items=1)
        submitted_in = clock.seconds()
        r.wait(lambda: r.db.all_final(500), 300, "500 jobs to finish")
        finished_in = clock.seconds()

        shares = _assert_each_once(r, jobs)
        assert all(share > 0 for share in shares.values()), shares
        record(
            "6 two workers, 500 jobs",
            jobs=500,
            robot_dispatches=500,
            finalized_once=500,
            dispatches_per_worker="/".join(str(v) for v in shares.values()),
            submit_s=submitted_in,
            all_final_s=finished_in,
        )


@pytest.mark.timeout(600)
def test_burst_of_1000_jobs_all_finish_each_dispatched_once(log_dir) -> None:
    with scale_rig(log_dir) as r:
        r.system.robot_config(item_delay=0)
        clock = Stopwatch()
        jobs = r.submit_many(1000, items=1, threads=16)
        submitted_in = clock.seconds()
        r.wait(lambda: r.db.all_final(1000), 480, "1000 jobs to finish")
        finished_in = clock.seconds()

        _assert_each_once(r, jobs)
        record(
            "10 burst of 1000 jobs (one item each, one worker)",
            jobs=1000,
            final=1000,
            lost=0,
            robot_dispatches=1000,
            duplicated_dispatches=0,
            submit_s=submitted_in,
            all_final_s=finished_in,
            jobs_per_s=round(1000 / finished_in, 1),
        )
