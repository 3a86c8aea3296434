"""The dashboard's resubmit: the button, the ticked items, the portal check, the links."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from orchestrator.db import session_scope
from orchestrator.models import Item, Job

from .test_dashboard import csrf_of, sign_in
from .test_jobs import submit
from .test_jobs_resubmit import finished_job, ids

MIXED = ("success", "error", "unknown", "error")


@pytest.fixture(autouse=True)
def _no_dashboard_password_in_the_environment(monkeypatch):
    monkeypatch.delenv("DASHBOARD_USER", raising=False)
    monkeypatch.delenv("DASHBOARD_PASSWORD", raising=False)


@pytest.fixture
def signed_in(client):
    assert sign_in(client).status_code == 303
    return client


def page(client, job_id: str) -> str:
    return client.get(f"/dashboard/jobs/{job_id}").get_data(as_text=True)


def form_fields(html: str, form_id: str) -> dict[str, str]:
    """The hidden fields of one form on the page."""
    block = re.search(rf'<form[^>]*id="{form_id}".*?</form>', html, re.S)
    assert block, f"no form {form_id} on the page"
    return dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', block.group(0)))


def checkbox(html: str, item_id: str) -> str | None:
    match = re.search(
        rf'<input type="checkbox" form="resubmit-selected"[^>]*value="{item_id}"[^>]*>', html
    )
    return match.group(0) if match else None


def jobs_from(database_url: str, job_id: str) -> list[Job]:
    with session_scope(database_url) as session:
        return list(session.scalars(select(Job).where(Job.resubmit_of == job_id)))


def orders_of(database_url: str, job_id: str) -> list[str]:
    with session_scope(database_url) as session:
        query = select(Item.order_id).where(Item.job_id == job_id).order_by(Item.position)
        return list(session.scalars(query))


@pytest.fixture
def old(signed_in, auth, app) -> dict:
    """A completed job: ORD-0 success, ORD-1 error, ORD-2 unknown, ORD-3 error."""
    return finished_job(signed_in, auth, app, MIXED)


def test_a_finished_job_with_errors_offers_the_button_and_the_choice(signed_in, old):
    html = page(signed_in, old["id"])
    assert "Resubmit 2 error items</button>" in html
    assert form_fields(html, "resubmit-errors")["choice"] == "errors"
    for item_id in ids(old, "error"):
        box = checkbox(html, item_id)
        assert box is not None and "checked" in box and "disabled" not in box
    unknown = checkbox(html, ids(old, "unknown")[0])
    # Unknown items: selectable only after the portal check (the script enables them).
    assert unknown is not None and "disabled" in unknown and "data-unknown" in unknown
    assert checkbox(html, ids(old, "success")[0]) is None  # never selectable
    assert "I checked the courier's portal: these orders were not entered" in html
    assert 'name="confirm_unknown" value="yes" data-unlocks-unknown' in html


def test_no_resubmit_while_open_or_without_error_and_unknown_items(signed_in, auth, app):
    pending = submit(signed_in, auth).get_json()
    assert "resubmit" not in page(signed_in, pending["id"]).lower()
    all_good = finished_job(signed_in, auth, app, ("success", "success"))
    html = page(signed_in, all_good["id"])
    assert 'id="resubmit-errors"' not in html and 'id="resubmit-selected"' not in html
    only_unknown = finished_job(signed_in, auth, app, ("success", "unknown"))
    html = page(signed_in, only_unknown["id"])
    assert 'id="resubmit-errors"' not in html  # no error items: no button
    assert 'id="resubmit-selected"' in html and "I checked the courier's portal" in html


def test_the_button_resubmits_the_error_items_and_the_pages_link_each_other(
    signed_in, old, sqlite_url, started
):
    fields = form_fields(page(signed_in, old["id"]), "resubmit-errors")
    answer = signed_in.post(f"/dashboard/jobs/{old['id']}/resubmit", data=fields)
    assert answer.status_code == 303
    [new] = jobs_from(sqlite_url, old["id"])
    assert answer.headers["Location"] == f"/dashboard/jobs/{new.id}"
    assert orders_of(sqlite_url, new.id) == ["ORD-1", "ORD-3"]
    assert started.job_ids[-1] == new.id
    html = page(signed_in, new.id)
    assert f"Resubmitted 2 orders of job {old['id'][:8]} as this new job." in html
    assert f'href="/dashboard/jobs/{old["id"]}" data-resubmit-of="{old["id"]}"' in html
    back = page(signed_in, old["id"])
    assert f'href="/dashboard/jobs/{new.id}" data-resubmitted-as="{new.id}"' in back


def test_a_double_click_makes_one_job(signed_in, old, sqlite_url, started):
    fields = form_fields(page(signed_in, old["id"]), "resubmit-errors")
    first = signed_in.post(f"/dashboard/jobs/{old['id']}/resubmit", data=fields)
    again = signed_in.post(f"/dashboard/jobs/{old['id']}/resubmit", data=fields)
    assert first.headers["Location"] == again.headers["Location"]
    assert len(jobs_from(sqlite_url, old["id"])) == 1
    assert "This form was submitted before" in signed_in.get(again.headers["Location"]).get_data(
        as_text=True
    )


def test_ticked_unknown_items_need_the_portal_check(signed_in, old, sqlite_url):
    fields = form_fields(page(signed_in, old["id"]), "resubmit-selected")
    unknown = ids(old, "unknown")[0]
    data = {**fields, "item": [ids(old, "error")[0], unknown]}
    refused = signed_in.post(f"/dashboard/jobs/{old['id']}/resubmit", data=data)
    assert refused.headers["Location"] == f"/dashboard/jobs/{old['id']}"
    html = signed_in.get(refused.headers["Location"]).get_data(as_text=True)
    assert "Nothing was resubmitted: order ORD-2 is unknown" in html
    assert jobs_from(sqlite_url, old["id"]) == []

    confirmed = signed_in.post(
        f"/dashboard/jobs/{old['id']}/resubmit", data={**data, "confirm_unknown": "yes"}
    )
    [new] = jobs_from(sqlite_url, old["id"])
    assert confirmed.headers["Location"] == f"/dashboard/jobs/{new.id}"
    assert orders_of(sqlite_url, new.id) == ["ORD-1", "ORD-2"]


def test_a_success_item_is_never_resubmitted_even_from_a_forged_form(signed_in, old, sqlite_url):
    fields = form_fields(page(signed_in, old["id"]), "resubmit-selected")
    data = {**fields, "item": [ids(old, "success")[0]], "confirm_unknown": "yes"}
    answer = signed_in.post(f"/dashboard/jobs/{old['id']}/resubmit", data=data)
    html = signed_in.get(answer.headers["Location"]).get_data(as_text=True)
    assert "order ORD-0 is success" in html
    assert jobs_from(sqlite_url, old["id"]) == []


def test_nothing_ticked_says_so(signed_in, old, sqlite_url):
    fields = form_fields(page(signed_in, old["id"]), "resubmit-selected")
    answer = signed_in.post(f"/dashboard/jobs/{old['id']}/resubmit", data=fields)
    assert "Tick at least one item to resubmit." in signed_in.get(
        answer.headers["Location"]
    ).get_data(as_text=True)
    assert jobs_from(sqlite_url, old["id"]) == []


def test_an_open_job_or_an_unknown_job_is_refused(signed_in, auth, sqlite_url):
    pending = submit(signed_in, auth).get_json()
    token = csrf_of(page(signed_in, pending["id"]))
    answer = signed_in.post(
        f"/dashboard/jobs/{pending['id']}/resubmit", data={"csrf_token": token, "choice": "errors"}
    )
    html = signed_in.get(answer.headers["Location"]).get_data(as_text=True)
    assert "The job is still pending: only a finished job can be resubmitted." in html
    missing = signed_in.post("/dashboard/jobs/no-such-job/resubmit", data={"csrf_token": token})
    assert missing.status_code == 404 and "<html" in missing.get_data(as_text=True)
    assert jobs_from(sqlite_url, pending["id"]) == []


def test_resubmit_needs_the_csrf_token(signed_in, old, sqlite_url):
    fields = form_fields(page(signed_in, old["id"]), "resubmit-errors")
    del fields["csrf_token"]
    assert signed_in.post(f"/dashboard/jobs/{old['id']}/resubmit", data=fields).status_code == 400
    assert jobs_from(sqlite_url, old["id"]) == []
