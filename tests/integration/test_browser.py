"""The dashboard in a real headless Chromium against the real processes: submit, cancel, resubmit.

Debian's chromium, driven by Playwright's Python package (never a downloaded browser). The
screenshot of the finished job page is saved as ``artifacts/dashboard-job-completed.png``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest
import redis
import requests

from orchestrator.local.processes import ROOT, LocalSystem, wait_until
from tests import REDIS_PORT

pytestmark = pytest.mark.integration

REDIS_DB = 9
PASSWORD = "browser-test-password"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "artifacts"
# One column per field; the simulator rejects the order whose _simulate is "fail".
GOOD_CSV = (
    "orderId,destinatario,ciudad,peso_kg,_simulate\n"
    "WEB-1,Ana Gómez,Bogotá,1.5,\n"
    "WEB-2,Luis Pérez,Medellín,0.8,\n"
    "WEB-3,Marta Ruiz,Cali,2.3,fail\n"
    "WEB-4,Jorge Díaz,Barranquilla,4.0,\n"
)


def _flush() -> None:
    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT, db=REDIS_DB)
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[LocalSystem]:
    log_dir = tmp_path_factory.mktemp("browser")
    _flush()
    running = LocalSystem(
        log_dir,
        f"redis://127.0.0.1:{REDIS_PORT}/{REDIS_DB}",
        f"sqlite:///{log_dir / 'orchestrator.db'}",
        item_delay=0.4,  # slow enough to watch the page update while items finish
        settings={
            "DASHBOARD_PASSWORD": PASSWORD,
            "ROBOT_SETTLE_SECONDS": "0.3",
            "HOUSEKEEPING_INTERVAL_SECONDS": "1",
        },
    )
    try:
        running.start(("robot", "web", "worker", "beat"), say=lambda line: None)
        yield running
    finally:
        running.stop()
        _flush()


@pytest.fixture
def browser():
    # `make test` installs Debian's chromium first; a missing browser is a failure, not a skip.
    assert CHROMIUM is not None, "chromium is not installed: run `make browser` (apt-get)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _job(system: LocalSystem, job_id: str) -> dict:
    answer = requests.get(
        f"{system.base}/api/jobs/{job_id}",
        headers={"Authorization": f"Bearer {system.token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_submit_through_the_form_and_watch_the_job_complete(system, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(30_000)

    # Never open by default: the dashboard sends a stranger to the login page.
    page.goto(f"{system.base}/")
    assert page.url.startswith(f"{system.base}/dashboard/login")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    assert "Wrong token" in page.inner_text("main")
    page.fill("input[name=user]", "operator")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{system.base}/dashboard/")

    # A file with a bad row: nothing is submitted, the page names the line.
    page.click("text=Submit a batch")
    bad = tmp_path / "bad.csv"
    bad.write_text(GOOD_CSV + ",Nadie,Cali,1,\n")
    page.set_input_files("input[name=file]", str(bad))
    page.click("button:has-text('Submit batch')")
    assert page.inner_text("#problems").splitlines()[-1] == "line 6: orderId is empty"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-submit-errors.png"), full_page=True)

    # The fixed file goes through; the job page follows it live, without a reload.
    good = tmp_path / "orders.csv"
    good.write_text(GOOD_CSV)
    page.set_input_files("input[name=file]", str(good))
    page.click("button:has-text('Submit batch')")
    page.wait_for_url(re.compile(r".*/dashboard/jobs/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    assert "Job submitted: 4 orders." in page.inner_text("main")
    page.wait_for_selector("h1 [data-status=completed]", timeout=60_000)

    rows = {
        row.get_attribute("data-order"): row.inner_text().split("\t")
        for row in page.query_selector_all("table.items tbody tr")
    }
    assert sorted(rows) == ["WEB-1", "WEB-2", "WEB-3", "WEB-4"]
    for order, cells in rows.items():
        if order == "WEB-3":
            assert cells[2:4] == ["error", "portal rejected the address"]
        else:
            assert cells[2].strip() == "success"
            assert re.fullmatch(r"CO\d{10}", cells[3].strip())
    timeline = page.inner_text("ol.timeline")
    for step in ("created", "processing", "dispatched", "waiting for the robot"):
        assert step in timeline
    assert timeline.count("item.completed") == 4
    assert "batch.completed" in timeline
    assert page.query_selector("form[action$='/cancel']") is None
    shot = ARTIFACTS / "dashboard-job-completed.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # What the page shows is what the API says.
    api = _job(system, job_id)
    assert api["status"] == "completed"
    assert {i["orderId"]: i["trackingNumber"] or i["error"] for i in api["items"]} == {
        order: cells[3].strip() for order, cells in rows.items()
    }

    # The job list shows it with its badge and counts.
    page.click("nav >> text=Jobs")
    row = page.wait_for_selector(f"tr[data-job='{job_id}']")
    assert row.query_selector("[data-status=completed]") is not None
    page.screenshot(path=str(ARTIFACTS / "dashboard-jobs.png"), full_page=True)


def test_cancel_from_the_job_page(system, browser):
    requests.post(f"{system.robot}/_sim/config", json={"mode": "never_finish"}, timeout=5)
    try:
        answer = requests.post(
            f"{system.base}/api/jobs",
            json={"orders": [{"orderId": "STUCK-1", "pedidoInput": {}}]},
            headers={"Authorization": f"Bearer {system.token}"},
            timeout=10,
        )
        job_id = answer.json()["id"]
        wait_until(lambda: _job(system, job_id)["dispatchedAt"], 30, "the dispatch")
        page = browser.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{system.base}/dashboard/jobs/{job_id}")
        page.fill("input[name=password]", system.token)  # an API token signs in too
        page.click("button[type=submit]")
        page.wait_for_url(f"{system.base}/dashboard/jobs/{job_id}")
        page.wait_for_selector("h1 [data-status=processing]")
        page.on("dialog", lambda dialog: dialog.accept())
        page.click("button:has-text('Cancel job')")
        page.wait_for_selector("h1 [data-status=cancelled]")
        assert "Job cancelled" in page.inner_text("main")
        assert page.inner_text("tr[data-order='STUCK-1']").split("\t")[2].strip() == "unknown"
    finally:
        requests.post(f"{system.robot}/_sim/config", json={"mode": "normal"}, timeout=5)


def _sign_in_at(system: LocalSystem, browser, path: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(f"{system.base}{path}")
    page.fill("input[name=password]", system.token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{system.base}{path}")
    return page


def _submit_api(system: LocalSystem, orders: list[dict]) -> str:
    answer = requests.post(
        f"{system.base}/api/jobs",
        json={"orders": orders},
        headers={"Authorization": f"Bearer {system.token}"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def _final(system: LocalSystem, job_id: str) -> dict:
    final = ("completed", "failed", "cancelled")
    return wait_until(
        lambda: (job := _job(system, job_id))["status"] in final and job, 60, "the job to finish"
    )


def test_resubmit_the_error_items_from_the_job_page(system, browser):
    # The portal rejects every order for a while, then takes them again.
    requests.post(f"{system.robot}/_sim/config", json={"failure_rate": 1.0}, timeout=5)
    try:
        old = _submit_api(system, [{"orderId": f"RE-{n}", "pedidoInput": {"n": n}} for n in (1, 2)])
        assert [i["status"] for i in _final(system, old)["items"]] == ["error", "error"]
    finally:
        requests.post(f"{system.robot}/_sim/config", json={"failure_rate": 0.0}, timeout=5)

    page = _sign_in_at(system, browser, f"/dashboard/jobs/{old}")
    page.click("button:has-text('Resubmit 2 error items')")
    page.wait_for_url(re.compile(r".*/dashboard/jobs/[0-9a-f-]{36}$"))
    new = page.url.rsplit("/", 1)[1]
    assert new != old
    assert f"Resubmitted 2 orders of job {old[:8]} as this new job." in page.inner_text("main")
    assert page.get_attribute("#lineage a", "href") == f"/dashboard/jobs/{old}"
    page.wait_for_selector("h1 [data-status=completed]", timeout=60_000)
    for order in ("RE-1", "RE-2"):
        cells = page.inner_text(f"tr[data-order='{order}']").split("\t")
        assert cells[2].strip() == "success" and re.fullmatch(r"CO\d{10}", cells[3].strip())
    page.screenshot(path=str(ARTIFACTS / "dashboard-resubmitted.png"), full_page=True)
    assert _job(system, new)["resubmitOf"] == old

    # The old job's page links to the new one.
    page.click("#lineage a")
    page.wait_for_url(f"{system.base}/dashboard/jobs/{old}")
    assert page.get_attribute(f"[data-resubmitted-as='{new}']", "href") == f"/dashboard/jobs/{new}"


def test_unknown_items_can_be_ticked_only_after_the_portal_check(system, browser):
    orders = [
        {"orderId": "UNK-1", "pedidoInput": {}},
        {"orderId": "UNK-2", "pedidoInput": {"_simulate": "skip"}},  # never reported
        {"orderId": "UNK-3", "pedidoInput": {"_simulate": "fail"}},
    ]
    old = _submit_api(system, orders)
    items = {i["orderId"]: i for i in _final(system, old)["items"]}
    assert [items[o]["status"] for o in ("UNK-1", "UNK-2", "UNK-3")] == [
        "success",
        "unknown",
        "error",
    ]
    page = _sign_in_at(system, browser, f"/dashboard/jobs/{old}")
    unknown_box = f"input[form=resubmit-selected][value='{items['UNK-2']['id']}']"
    assert page.is_disabled(unknown_box)
    assert page.query_selector(f"input[value='{items['UNK-1']['id']}']") is None  # success
    page.check("text=I checked the courier's portal: these orders were not entered")
    assert page.is_enabled(unknown_box)
    page.check(unknown_box)
    page.uncheck(f"input[form=resubmit-selected][value='{items['UNK-3']['id']}']")
    page.click("button:has-text('Resubmit ticked items')")
    page.wait_for_url(re.compile(r".*/dashboard/jobs/[0-9a-f-]{36}$"))
    new = page.url.rsplit("/", 1)[1]
    assert new != old
    page.wait_for_selector("h1 [data-status=completed]", timeout=60_000)
    shown = [
        row.get_attribute("data-order") for row in page.query_selector_all("table.items tbody tr")
    ]
    assert shown == ["UNK-2"]
    assert [i["orderId"] for i in _job(system, new)["items"]] == ["UNK-2"]


def _dispatch(system: LocalSystem, action: str = "", **body: str) -> dict:
    headers = {"Authorization": f"Bearer {system.token}"}
    if action:
        answer = requests.post(
            f"{system.base}/api/dispatch/{action}", json=body, headers=headers, timeout=10
        )
    else:
        answer = requests.get(f"{system.base}/api/dispatch", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_pause_from_the_page_see_the_banner_everywhere_and_resume(system, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    try:
        page.goto(f"{system.base}/dashboard/dispatch")
        page.fill("input[name=password]", system.token)
        page.click("button[type=submit]")
        page.wait_for_url(f"{system.base}/dashboard/dispatch")
        assert page.query_selector("p.banner") is None
        assert page.inner_text("#dispatching") == "running"

        page.fill("input[name=reason]", "portal maintenance")
        page.fill("input[name=until]", "2999-01-02T03:04:05")
        page.click("#pause")
        banner = page.wait_for_selector("p.banner")
        assert "Dispatching is paused." in banner.inner_text()
        assert "portal maintenance" in banner.inner_text()
        assert "It resumes by itself at 2999-01-02 03:04:05 UTC." in banner.inner_text()
        state = _dispatch(system)
        assert (state["paused"], state["pausedBy"]) == (True, "api")
        assert state["pausedUntil"].startswith("2999-01-02T03:04:05")

        # A job submitted now waits; the page's live part shows it in the queue.
        answer = requests.post(
            f"{system.base}/api/jobs",
            json={"orders": [{"orderId": "PAUSED-1", "pedidoInput": {}}], "priority": 4},
            headers={"Authorization": f"Bearer {system.token}"},
            timeout=10,
        )
        job_id = answer.json()["id"]
        row = page.wait_for_selector(f"tr[data-job='{job_id}']")
        assert row.inner_text().split("\t")[:2] == ["1", "4"]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-dispatch-paused.png"), full_page=True)

        # The banner is on every page.
        for path in ("/dashboard/", "/dashboard/submit", f"/dashboard/jobs/{job_id}"):
            page.goto(f"{system.base}{path}")
            assert "portal maintenance" in page.inner_text("p.banner"), path
        assert _job(system, job_id)["status"] == "pending"

        # Resume from the page: the banner goes, the waiting job goes to the robot.
        page.goto(f"{system.base}/dashboard/dispatch")
        page.click("#resume")
        page.wait_for_url(f"{system.base}/dashboard/dispatch")
        assert "Dispatching resumed" in page.inner_text("main")
        assert page.query_selector("p.banner") is None
        wait_until(lambda: _job(system, job_id)["status"] == "completed", 60, "the job")

        # A pause made elsewhere (here the API) shows up live on an open page, and goes.
        page.goto(f"{system.base}/dashboard/")
        assert page.query_selector("p.banner") is None
        _dispatch(system, "pause", reason="robot restart")
        live = page.wait_for_selector("p.banner", timeout=15_000)
        assert "robot restart" in live.inner_text()
        assert "It stays paused until someone resumes it." in live.inner_text()
        _dispatch(system, "resume")
        page.wait_for_selector("p.banner", state="detached", timeout=15_000)
    finally:
        _dispatch(system, "resume")
