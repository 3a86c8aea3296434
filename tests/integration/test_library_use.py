"""A host Flask app uses the orchestrator as a library, exactly as docs/getting-started.md shows.

The host serves the robot's callbacks and calls ``submit_job`` from its own view; the
Procfile's worker and the robot simulator run as real processes beside it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
from flask import Flask, request
from werkzeug.serving import make_server

from orchestrator.config import load_settings
from orchestrator.local.processes import LocalSystem, wait_until
from tests import REDIS_PORT
from webapp.library import InvalidOrders, get_job, init_orchestrator, submit_job

pytestmark = pytest.mark.integration

REDIS_DB = 13


def make_shop() -> Flask:
    """The host app of docs/getting-started.md's example: its own views, the orchestrator inside."""
    shop = Flask("shop")

    @shop.post("/checkout")
    def checkout() -> Any:
        body = request.get_json()
        try:
            job = submit_job(body["orders"], idempotency_key=request.headers.get("X-Cart-Id"))
        except InvalidOrders as exc:
            return {"problems": exc.details}, 422
        return {"jobId": job["id"], "status": job["status"]}, 202

    @shop.get("/checkout/<job_id>")
    def checkout_status(job_id: str) -> Any:
        return get_job(job_id) or ({"problem": "no such job"}, 404)

    return shop


def _flush() -> None:
    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT, db=REDIS_DB)
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Iterator[str]:
    log_dir = tmp_path_factory.mktemp("library")
    _flush()
    # The shop listens where PUBLIC_URL points, so the robot's callbacks reach it.
    system = LocalSystem(
        log_dir,
        f"redis://127.0.0.1:{REDIS_PORT}/{REDIS_DB}",
        f"sqlite:///{log_dir / 'shop.db'}",
        item_delay=0.05,
        settings={"ROBOT_SETTLE_SECONDS": "0.3", "APP_ENV": "production"},
    )
    app = make_shop()
    init_orchestrator(app, load_settings(system.env))
    server = make_server("127.0.0.1", system.web_port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        system.start(("robot", "worker"), say=lambda line: None)
        yield system.base
    finally:
        system.stop()
        server.shutdown()
        server.server_close()
        thread.join()
        _flush()


def _order(n: int, **pedido: Any) -> dict[str, Any]:
    return {"orderId": f"CART-{n}", "pedidoInput": {"sku": f"SKU-{n}", **pedido}}


def test_a_host_view_submits_and_the_robot_reports_back_to_the_host(shop):
    orders = [_order(1), _order(2, _simulate="fail"), _order(3)]
    answer = requests.post(f"{shop}/checkout", json={"orders": orders}, timeout=10)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["jobId"]

    def final() -> dict[str, Any] | None:
        job = requests.get(f"{shop}/checkout/{job_id}", timeout=10).json()
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    job = wait_until(final, 60, "the job to finish")
    assert job["status"] == "completed"
    outcome = {i["orderId"]: (i["status"], i["trackingNumber"], i["error"]) for i in job["items"]}
    assert outcome["CART-2"] == ("error", None, "portal rejected the address")
    for order_id in ("CART-1", "CART-3"):
        status, tracking, error = outcome[order_id]
        assert status == "success" and tracking.startswith("CO") and error is None


def test_invalid_orders_raise_with_details(shop):
    orders = [_order(1), {"orderId": "", "pedidoInput": []}]
    answer = requests.post(f"{shop}/checkout", json={"orders": orders}, timeout=10)
    assert answer.status_code == 422
    problems = answer.json()["problems"]["orders"]["1"]
    assert set(problems) == {"orderId", "pedidoInput"}


def test_the_same_idempotency_key_returns_the_first_job(shop):
    body = {"orders": [_order(7)]}
    first = requests.post(f"{shop}/checkout", json=body, headers={"X-Cart-Id": "c-7"}, timeout=10)
    again = requests.post(f"{shop}/checkout", json=body, headers={"X-Cart-Id": "c-7"}, timeout=10)
    assert first.json()["jobId"] == again.json()["jobId"]


def test_the_callback_endpoint_answers_the_contracts_errors_inside_the_host(shop):
    answer = requests.post(
        f"{shop}/api/robot/jobs/some-job/events",
        data=json.dumps({"type": "robot.batch.completed", "data": {}}),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
    # The host's own errors stay the host's: Flask's HTML 404, not the orchestrator's JSON.
    missing = requests.get(f"{shop}/no-such-page", timeout=10)
    assert missing.status_code == 404 and missing.headers["Content-Type"].startswith("text/html")
