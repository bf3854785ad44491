"""Who may call what (recsys.serving.access): every route has a policy, and each caller is shown both what
they may do and what they may not, over real HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Mount, Route

from recsys.feedback.store import FeedbackStore
from recsys.serving.access import ROUTES, Access
from recsys.serving.app import create_app
from recsys.serving.limits import ANONYMOUS_WRITES_PER_S, ERASURE_BURST
from tests.helpers import ADMIN_TOKEN, CLIENT_TOKEN, Server, start_server, stop_server

ADMIN = {"X-Admin-Token": ADMIN_TOKEN}
CLIENT = {"X-Client-Token": CLIENT_TOKEN}
KNOWN = "u00"  # a listener the model knows: a stranger must not get their history or plant their feedback


def test_every_route_of_the_app_has_a_policy() -> None:
    app = create_app()
    routes = set()
    for route in app.routes:
        if isinstance(route, Mount):
            routes.add(("GET", route.path))
        elif isinstance(route, Route):
            path = route.path.replace("{user_id:path}", "{user_id}")
            routes |= {(method, path) for method in route.methods or () if method != "HEAD"}
    assert routes == set(ROUTES)


@pytest.fixture(scope="module")
def served(champion_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(champion_home[0], tmp_path_factory.mktemp("access"), {})
    yield running
    stop_server(running)


def _page_id() -> str:
    return f"web-{uuid.uuid4()}"


def _listener_calls(user: str) -> list[tuple[str, str, dict[str, Any]]]:
    """One call of every listener route, acting for ``user``."""
    event = {"user_id": user, "item_id": "a01", "event": "like", "event_id": f"e-{uuid.uuid4()}"}
    return [
        ("POST", "/recommend", {"json": {"user_id": user, "k": 3}}),
        ("POST", "/recommend/new-listener", {"json": {"favourites": ["Radiohead"], "user_id": user}}),
        ("POST", "/feedback", {"json": {"events": [event]}}),
        ("POST", "/ratings", {"json": {"user_id": user, "rating": 4}}),
        ("GET", f"/users/{user}/feedback", {}),
        ("DELETE", f"/users/{user}/feedback", {}),
    ]


@pytest.mark.slow
def test_a_listeners_routes_take_a_page_id_anonymously_and_any_id_with_a_token(served: Server) -> None:
    called = {(method, path.replace(KNOWN, "{user_id}")) for method, path, _ in _listener_calls(KNOWN)}
    assert called == {route for route, access in ROUTES.items() if access is Access.LISTENER}
    for method, path, kwargs in _listener_calls(KNOWN):
        refused = served.anonymous.request(method, path, **kwargs)
        assert refused.status_code == 401, (method, path, refused.text)
        assert refused.headers["www-authenticate"] == "Token" and "X-Client-Token".lower() in refused.text
        wrong = served.anonymous.request(method, path, headers={"X-Client-Token": "wrong"}, **kwargs)
        assert wrong.status_code == 403, (method, path)
        for headers in (CLIENT, ADMIN):
            assert served.anonymous.request(method, path, headers=headers, **kwargs).status_code == 200, (
                method,
                path,
            )
    for method, path, kwargs in _listener_calls(_page_id()):
        assert served.anonymous.request(method, path, **kwargs).status_code == 200, (method, path)


@pytest.mark.slow
def test_admin_routes_refuse_clients_and_strangers(served: Server) -> None:
    admin_routes = [route for route, access in ROUTES.items() if access is Access.ADMIN]
    for method, path in admin_routes:
        body = {"json": {"mode": "off"}} if (method, path) == ("POST", "/admin/experiment") else {}
        for headers in ({}, CLIENT):
            assert served.anonymous.request(method, path, headers=headers, **body).status_code == 401, path
        assert served.anonymous.request(method, path, headers=ADMIN, **body).status_code == 200, path


@pytest.mark.slow
def test_public_routes_answer_anyone(served: Server) -> None:
    calls: dict[tuple[str, str], dict[str, Any]] = {
        ("GET", "/"): {},
        ("GET", "/static"): {"url": "/static/app.js"},
        ("GET", "/favicon.ico"): {},
        ("GET", "/openapi.json"): {},
        ("GET", "/docs"): {},
        ("GET", "/model"): {},
        ("GET", "/search"): {"params": {"q": "rad"}},
        ("POST", "/similar"): {"json": {"name": "Radiohead", "k": 3}},
    }
    assert set(calls) == {route for route, access in ROUTES.items() if access is Access.PUBLIC}
    for (method, path), kwargs in calls.items():
        url = kwargs.pop("url", path)
        assert served.anonymous.request(method, url, **kwargs).status_code == 200, path


@pytest.mark.slow
def test_a_stranger_neither_reads_a_known_listeners_taste_nor_plants_their_feedback(served: Server) -> None:
    as_backend = served.client.post("/recommend", json={"user_id": KNOWN, "k": 5}).json()
    assert any("because you like" in item["reason"] for item in as_backend["items"])

    stranger = served.anonymous.post("/recommend", json={"user_id": KNOWN, "k": 5})
    planted = served.anonymous.post(
        "/feedback",
        json={"events": [{"user_id": KNOWN, "item_id": "a01", "event": "dislike", "event_id": "planted-1"}]},
    )

    assert stranger.status_code == 401 and "because you like" not in stranger.text
    assert planted.status_code == 401
    with FeedbackStore(f"sqlite:///{served.log.parent / 'feedback.db'}", create=False) as store:
        assert "planted-1" not in set(store.export_frame()["event_id"])


@pytest.mark.slow
def test_anonymous_writes_and_erasures_are_rate_limited_but_a_client_is_not(
    champion_home: tuple[Path, str], tmp_path: Path
) -> None:
    server = start_server(champion_home[0], tmp_path, {})
    try:
        client = httpx.Client(base_url=server.url, timeout=30.0)  # one connection: one worker's buckets
        erasures = [
            client.delete(f"/users/{_page_id()}/feedback").status_code for _ in range(int(ERASURE_BURST) + 5)
        ]
        assert erasures[: int(ERASURE_BURST)] == [200] * int(ERASURE_BURST) and 429 in erasures
        limited = client.delete(f"/users/{_page_id()}/feedback")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert client.delete(f"/users/{_page_id()}/feedback", headers=CLIENT).status_code == 200

        user = _page_id()
        batch = [
            {"user_id": user, "item_id": "a01", "event": "play", "event_id": str(uuid.uuid4())}
            for _ in range(50)
        ]
        statuses = [client.post("/feedback", json={"events": batch}).status_code for _ in range(6)]
        assert statuses[0] == 200 and 429 in statuses
        too_big = [dict(event, event_id=str(uuid.uuid4())) for event in batch * 3]
        assert len(too_big) > ANONYMOUS_WRITES_PER_S
        assert client.post("/feedback", json={"events": too_big}).status_code == 422
        assert client.post("/feedback", json={"events": too_big}, headers=CLIENT).status_code == 200
        client.close()
    finally:
        stop_server(server)


@pytest.mark.slow
def test_a_listener_whose_id_holds_a_slash_can_be_listed_and_erased(served: Server) -> None:
    from urllib.parse import quote

    user = "team/alpha/7"
    events = [{"user_id": user, "item_id": "a01", "event": "like", "event_id": "slash-1"}]
    assert served.client.post("/feedback", json={"events": events}).json()["inserted"] == 1
    path = f"/users/{quote(user, safe='')}/feedback"

    listed = served.client.get(path)
    erased = served.client.delete(path)

    assert listed.status_code == 200 and listed.json()["user_id"] == user and listed.json()["n_events"] == 1
    assert erased.status_code == 200 and erased.json()["deleted"] == 1
    assert served.client.get(path).json()["n_events"] == 0
