"""Scenario 14: web, two workers and beat on four hosts; one worker host cut off (CONTRACT §10).

Two robots (CONTRACT §11), each with its own capacity, checked across both worker hosts.

Hosts are network namespaces on a bridge in a private /24 that the test makes and removes
(tools.HostNetwork). The shared services are reached at the bridge's address: a private
redis-server bound to it (rendezvous and broker), PostgreSQL through a proxy listening on it
(the shared server listens on 127.0.0.1 only), and the robot simulator.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from orchestrator.local.processes import procfile, run_release
from tests.conftest import PG_ADMIN_URL, fresh_postgres_database
from tests.integration.harness import ROBOT_TOKEN, System

from .conftest import Rig, record
from .tools import Db, HostNetwork, RestartableRedis, Stopwatch, TcpProxy, attempts

pytestmark = pytest.mark.faults

# The capacity limit (CONTRACT §7) of each robot across both worker hosts: the jobs active at
# once at each robot, sampled from the database all along, never exceed it.
MAX_ACTIVE_JOBS = "3"
ROBOTS = ("north", "south")

HOSTS = ("web", "worker-a", "worker-b", "beat")
ACTIVE_SQL = (
    "SELECT robot, count(*) FROM jobs WHERE status = 'processing' AND dispatched_at IS NOT NULL "
    "GROUP BY robot"
)


@contextmanager
def hosts_rig(log_dir: Path) -> Iterator[tuple[Rig, HostNetwork]]:
    """Start the system over four namespaces; tear every part down, also on failure."""
    net = HostNetwork(HOSTS)
    with ExitStack() as stack:
        stack.callback(net.down)
        net.up()
        direct = stack.enter_context(fresh_postgres_database(PG_ADMIN_URL, migrate=False))
        proxy = TcpProxy(5432, listen_host=net.gateway)
        stack.callback(proxy.close)
        database_url = direct.replace("@127.0.0.1:5432/", f"@{net.gateway}:{proxy.port}/")
        server = RestartableRedis(log_dir, host=net.gateway)
        stack.callback(server.stop)
        server.start()
        capacity = {"ROBOT_MAX_ACTIVE_JOBS": MAX_ACTIVE_JOBS}
        system = System(
            log_dir,
            database_url,
            0,
            redis_url=server.url,
            robots=ROBOTS,
            HOUSEKEEPING_INTERVAL_SECONDS="1",
            FAULT_HOOK_DIR=str(log_dir),
            REKICK_AFTER_SECONDS="5",
            ROBOT_SECONDS_PER_ITEM="2",
            ROBOT_DEADLINE_MARGIN_SECONDS="10",
            ROBOT_DISPATCH_TIMEOUT_SECONDS="3",
            **capacity,
        )
        system.base = system.env["PUBLIC_URL"] = f"http://{net.addresses['web']}:{system.web_port}"
        for name, port in system.robot_ports.items():
            system.robot_urls[name] = f"http://{net.gateway}:{port}"
        system.env.update(system.robots_env(ROBOT_TOKEN))
        probe = Db(direct)
        stack.callback(probe.close)
        stack.callback(system.stop)
        run_release(system.env)
        for name, port in system.robot_ports.items():
            system.start_process(
                f"robot-{name}",
                f"python -m orchestrator.local.robot_simulator --host {net.gateway} "
                f"--port {port} --item-delay 0.02 --token {ROBOT_TOKEN} --workers 64",
            )
        commands = procfile()
        system.start_process("web", net.run_in("web", commands["web"]))
        for host in ("worker-a", "worker-b"):
            worker = f"{commands['worker']} --include tests.faults.hooks"
            system.start_process("worker", net.run_in(host, worker), label=host)
        beat = f"{commands['beat']} --schedule={log_dir / 'celerybeat-schedule'}"
        system.start_process("beat", net.run_in("beat", beat))
        yield Rig(system, probe, log_dir, database_url, server, proxy), net


class ActiveSampler:
    """The most jobs active at once at each robot, sampled from the database until stopped."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.most: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                for robot, active in self.db.rows(ACTIVE_SQL):
                    self.most[robot] = max(self.most[robot], int(active))
            except Exception:  # the database is being dropped at the end: stop sampling
                return

    def stop(self) -> Counter[str]:
        self._stop.set()
        self._thread.join(5)
        return self.most


@pytest.mark.timeout(420)
def test_two_worker_hosts_dispatch_each_job_once_and_a_cut_host_loses_none(log_dir) -> None:
    with hosts_rig(log_dir) as (r, net):
        sampler = ActiveSampler(r.db)
        try:
            _scenario(r, net, sampler)
        finally:
            sampler.stop()


def _robots_config(r: Rig, **options: object) -> None:
    for name in ROBOTS:
        r.system.robot_config(name, **options)


def _submit_both(r: Rig, count: int, items: int) -> list[str]:
    """``count`` jobs for each robot."""
    return [job for name in ROBOTS for job in r.submit_many(count, items=items, robot=name)]


def _scenario(r: Rig, net: HostNetwork, sampler: ActiveSampler) -> None:
    log_dir = r.log_dir
    # Load: both worker hosts take jobs; each job reaches its robot once.
    _robots_config(r, item_delay=0)
    loaded = _submit_both(r, 30, items=1)
    r.wait(lambda: r.db.all_final(60), 120, "the load to finish")
    shares = {
        host: r.system.processes[host].log().count(" dispatched (")
        for host in ("worker-a", "worker-b")
    }
    assert all(shares.values()), shares

    # Cut: dispatches in flight (the robot answers after 1 s) and jobs waiting.
    _robots_config(r, mode="slow_answer", answer_delay=1.0, item_delay=1.0)
    cut_jobs = _submit_both(r, 15, items=2)
    r.wait(
        lambda: sum(r.system.robot_stats(n)["totalDispatches"] for n in ROBOTS) >= 60 + 8,
        60,
        "dispatches in flight",
    )
    net.cut("worker-a")
    cut = Stopwatch()
    r.wait(lambda: r.db.all_final(90), 120, "every job final with worker-a cut off")
    recovered_in = cut.seconds()
    statuses = Counter(dict(r.db.rows("SELECT id, status FROM jobs")).values())

    # Back on the network: its stale messages must not dispatch anything again.
    net.restore("worker-a")
    after = _submit_both(r, 5, items=1)
    r.wait(lambda: r.db.all_final(100), 90, "the jobs after the restore")
    most_active = sampler.stop()

    reached = {name: r.robot_dispatches(name) for name in ROBOTS}
    for name in ROBOTS:
        assert set(reached[name].values()) == {1}, name
    jobs_of = dict(r.db.rows("SELECT id, robot FROM jobs"))
    for name in ROBOTS:  # only its own robot received a job
        assert {jobs_of[job] for job in reached[name]} == {name}
    tried = attempts(log_dir)
    assert set(tried.values()) == {1}, tried.most_common(3)
    assert set(loaded + cut_jobs + after) <= set(tried)
    assert r.db.open_jobs() == 0
    assert set(most_active) == set(ROBOTS), most_active
    assert all(0 < most <= int(MAX_ACTIVE_JOBS) for most in most_active.values()), most_active
    assert r.system.processes["worker-a"].alive()
    record(
        "several hosts, worker host cut off",
        jobs=100,
        worker_shares_under_load=shares,
        statuses_after_cut=dict(statuses),
        all_final_after_cut_s=recovered_in,
        most_active_at_once_per_robot=dict(most_active),
        capacity_limit=MAX_ACTIVE_JOBS,
        dispatches_per_job=1,
    )
