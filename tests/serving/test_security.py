"""Security of the service: admin token, body size limit, cross-origin requests, secrets, logs, erasure."""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from recsys.feedback.pseudonyms import DEFAULT_PSEUDONYM_SALT, pseudonymise
from recsys.feedback.store import FeedbackStore
from recsys.serving import app as app_module
from recsys.serving.http import MAX_BODY_BYTES, HTTPError, read_limited
from recsys.serving.user_data import OWN_REASON
from tests.helpers import ADMIN_TOKEN, PROJECT_ROOT, Server

ADMIN = {"X-Admin-Token": ADMIN_TOKEN}
RAW_USER = "listener-Zq7vRawId-4411"
SECRET_PATTERNS = {
    "private key": re.compile(r"-{5}BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY-{5}"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,})\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "OpenAI-style key": re.compile(r"\bsk-[A-Za-z0-9]{32,}\b"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
}
MAX_SCANNED_BYTES = 2_000_000


def _endless_body(chunk: int, calls: list[int]) -> Any:
    async def receive() -> dict[str, Any]:
        calls.append(chunk)
        return {"type": "http.request", "body": b"x" * chunk, "more_body": True}

    return receive


def test_chunked_body_over_the_limit_is_refused_before_it_is_read_in_full() -> None:
    calls: list[int] = []
    scope = {"type": "http", "method": "POST", "path": "/feedback", "headers": [], "query_string": b""}
    request = Request(scope, _endless_body(4096, calls))
    with pytest.raises(HTTPError) as refused:
        asyncio.run(read_limited(request, MAX_BODY_BYTES))
    assert refused.value.status == 413
    assert sum(calls) <= MAX_BODY_BYTES + 4096


def test_admin_token_is_compared_in_constant_time() -> None:
    source = inspect.getsource(app_module.require_admin)
    assert "hmac.compare_digest(" in source and "==" not in source


@pytest.mark.slow
def test_admin_endpoints_refuse_missing_and_wrong_tokens(server: Server) -> None:
    wrong = {"X-Admin-Token": "x" * len(ADMIN_TOKEN)}
    for method, path in (("POST", "/admin/reload"), ("DELETE", "/users/nobody/feedback")):
        missing = server.anonymous.request(method, path)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Token"
        refused = server.anonymous.request(method, path, headers=wrong)
        assert refused.status_code == 403 and "wrong" in refused.json()["error"]
    assert server.anonymous.delete("/users/nobody/feedback", headers=ADMIN).json()["deleted"] == 0


@pytest.mark.slow
def test_bodies_over_the_limit_are_413(server: Server) -> None:
    event = {"user_id": "u00", "item_id": "a01", "event": "play", "event_id": "e" * 100}
    body = b'{"events": [' + b",".join([httpx.Request("POST", "/", json=event).content] * 600) + b"]}"
    assert len(body) > MAX_BODY_BYTES
    headers = {"content-type": "application/json"}
    declared = server.client.post("/feedback", content=body, headers=headers)
    assert declared.status_code == 413 and str(MAX_BODY_BYTES) in declared.json()["error"]

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    streamed = server.client.post("/feedback", content=chunks(), headers=headers)
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413
    assert server.client.post("/recommend", json={"user_id": "u00", "k": 2}).status_code == 200


@pytest.mark.slow
def test_cross_origin_requests_get_no_cors_grant(server: Server) -> None:
    evil = {"Origin": "http://evil.test"}
    preflight = server.client.options("/feedback", headers={**evil, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    admin = server.client.delete("/users/u00/feedback", headers={**evil, **ADMIN})
    assert admin.status_code == 403 and "cross-origin" in admin.json()["error"]
    reload = server.client.post("/admin/reload", headers={**evil, **ADMIN})
    assert reload.status_code == 403
    own = server.client.post("/recommend", json={"user_id": "u00"}, headers={"Origin": server.url})
    assert own.status_code == 200 and "access-control-allow-origin" not in own.headers


def test_no_secrets_in_tracked_files() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    files = [PROJECT_ROOT / name.decode() for name in listed if name]
    assert files, "git ls-files listed nothing"
    found = []
    for path in files:
        if not path.is_file() or path.stat().st_size > MAX_SCANNED_BYTES:
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        found += [
            f"{path.relative_to(PROJECT_ROOT)}: {kind}"
            for kind, rx in SECRET_PATTERNS.items()
            if rx.search(text)
        ]
    assert not found


def test_secret_patterns_catch_what_they_are_for() -> None:
    samples = {
        "private key": "-" * 5 + "BEGIN RSA PRIVATE KEY" + "-" * 5,
        "AWS access key": "key = AKIA" + "ABCDEFGHIJKLMNOP",
        "GitHub token": "ghp_" + "a" * 36,
    }
    for kind, sample in samples.items():
        assert SECRET_PATTERNS[kind].search(sample), kind


def _feedback(user: str, n: int, tag: str) -> dict[str, Any]:
    events = [
        {
            "user_id": user,
            "item_id": f"a{i:02d}",
            "event": "dislike" if i == 0 else "like",
            "event_id": f"{tag}-{i}",
        }
        for i in range(n)
    ]
    return {"events": events}


@pytest.mark.slow
def test_deletion_erases_the_users_events_and_audits_a_pseudonym(server: Server) -> None:
    other = "listener-kept-0001"
    assert server.client.post("/feedback", json=_feedback(RAW_USER, 3, "del")).json()["inserted"] == 3
    assert server.client.post("/feedback", json=_feedback(other, 2, "keep")).json()["inserted"] == 2
    assert server.client.post("/recommend", json={"user_id": RAW_USER, "k": 3}).status_code == 200
    reason = "erasure request #42"
    answer = server.client.delete(f"/users/{RAW_USER}/feedback", params={"reason": reason}, headers=ADMIN)
    assert answer.status_code == 200
    again = server.client.delete(f"/users/{RAW_USER}/feedback", headers=ADMIN)
    assert again.json()["deleted"] == 0

    with FeedbackStore(f"sqlite:///{server.log.parent / 'feedback.db'}", create=False) as store:
        users = set(store.export_frame()["user_id"])
        audit = [row for row in store.audit_log() if row.reason == reason]
        pseudonym = store.pseudonym(RAW_USER)
    assert answer.json() == {"deleted": 3, "user_pseudonym": pseudonym}
    # The store's own random salt, not the public default.
    assert pseudonym != pseudonymise(RAW_USER, salt=DEFAULT_PSEUDONYM_SALT)
    assert RAW_USER not in users and other in users
    assert len(audit) == 1 and audit[0].count == 3
    assert audit[0].user_pseudonym == pseudonym
    assert RAW_USER not in repr(audit[0])


@pytest.mark.slow
def test_logs_never_hold_a_raw_user_id(server: Server) -> None:
    user = "listener-LogProbe-9931"
    server.client.post("/feedback", json=_feedback(user, 2, "log"))
    server.client.post("/recommend", json={"user_id": user, "k": 2})
    server.client.post("/recommend/new-listener", json={"favourites": ["Radiohead"], "user_id": user})
    server.client.post("/recommend", json={"user_id": user, "k": 0})
    server.client.delete(f"/users/{user}/feedback", headers=ADMIN)
    server.client.delete(f"/users/{user}/feedback", headers={"X-Admin-Token": "wrong"})
    server.client.post("/admin/reload", headers=ADMIN)
    log = Path(server.log).read_text(encoding="utf-8", errors="replace")
    assert "serving model" in log, "the server log holds none of the service's own messages"
    with FeedbackStore(f"sqlite:///{server.log.parent / 'feedback.db'}", create=False) as store:
        assert store.pseudonym(user) in log, "the erasure was not logged under the user's pseudonym"
    assert user not in log and RAW_USER not in log


@pytest.mark.slow
def test_metrics_hold_route_templates_not_raw_paths(server: Server) -> None:
    user = "listener-MetricProbe-5521"
    assert server.client.delete(f"/users/{user}/feedback", headers=ADMIN).status_code == 200
    made_up = [f"/scan-{n}/wp-login.php" for n in range(5)]
    assert all(server.client.get(path).status_code == 404 for path in made_up)
    assert server.client.post("/recommend", json={"user_id": "u00", "k": 2}).status_code == 200
    metrics = server.client.get("/metrics").text
    endpoints = set(re.findall(r'request_total\{[^}]*endpoint="([^"]*)"', metrics))
    assert user not in metrics, "a raw user id reached /metrics"
    assert not any(path in metrics for path in made_up), "every made-up path opened a series of its own"
    assert {"/users/{user_id}/feedback", "/recommend", "<unmatched>"} <= endpoints, endpoints


@pytest.mark.slow
def test_a_page_listener_reads_and_erases_their_own_data_without_the_admin_token(server: Server) -> None:
    listener = f"web-{uuid.uuid4()}"
    events = _feedback(listener, 2, "own")["events"]
    events.append({"user_id": listener, "item_id": "a03", "event": "dislike", "event_id": f"own-{listener}"})
    assert server.anonymous.post("/feedback", json={"events": events}).json()["inserted"] == 3
    rated = server.anonymous.post("/ratings", json={"user_id": listener, "rating": 4, "model_version": "m:1"})
    assert rated.status_code == 200 and rated.json() == {"stored": True}
    assert server.anonymous.post("/ratings", json={"user_id": listener, "rating": 6}).status_code == 422
    stored = server.anonymous.get(f"/users/{listener}/feedback")
    assert stored.status_code == 200, stored.text
    body = stored.json()
    assert body["user_id"] == listener and body["n_events"] == 3
    assert [r["rating"] for r in body["ratings"]] == [4]
    assert body["events"][0]["item_id"] == "a03" and body["events"][0]["event"] == "dislike"  # newest first
    assert {e["item_id"] for e in body["events"]} <= {"a00", "a01", "a03"} and all(
        e["name"] for e in body["events"]
    )
    # Another origin cannot read it, even knowing the id.
    foreign = server.anonymous.get(f"/users/{listener}/feedback", headers={"Origin": "http://evil.test"})
    assert foreign.status_code == 403
    erased = server.anonymous.delete(f"/users/{listener}/feedback")
    assert erased.status_code == 200 and erased.json()["deleted"] == 3
    after = server.anonymous.get(f"/users/{listener}/feedback").json()
    assert after["n_events"] == 0 and after["ratings"] == []  # the rating went with the events
    with FeedbackStore(f"sqlite:///{server.log.parent / 'feedback.db'}", create=False) as store:
        pseudonym = store.pseudonym(listener)
        assert any(r.user_pseudonym == pseudonym and r.reason == OWN_REASON for r in store.audit_log())
    # Ids that are not the page's anonymous ones (guessable, or not its shape) need a token.
    for other in ("u03", "web-u03", f"web-{str(uuid.uuid4()).upper()}"):
        for method in ("GET", "DELETE"):
            assert server.anonymous.request(method, f"/users/{other}/feedback").status_code == 401, other
    assert server.anonymous.get("/users/u03/feedback", headers=ADMIN).status_code == 200
    assert server.client.get("/users/u03/feedback").status_code == 200  # the platform's backend
