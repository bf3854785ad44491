"""The real service (``bentoml serve``, two workers) over loopback HTTP on a tiny champion."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from recsys.serving.schemas import MAX_K, RecommendResponse, SearchResponse, SimilarResponse
from tests.helpers import ADMIN_TOKEN, Server
from tests.serving.conftest import ITEM_IDS

pytestmark = pytest.mark.slow


def _recommend(server: Server, **body: object) -> httpx.Response:
    return server.client.post("/recommend", json=body)


def _event(user: str, item: str, event: str) -> dict[str, str]:
    return {"user_id": user, "item_id": item, "event": event, "event_id": str(uuid.uuid4())}


def test_known_user_gets_k_unlistened_items_with_reasons(
    server: Server, champion_home: tuple[Path, str]
) -> None:
    answer = _recommend(server, user_id="u00", k=5)
    assert answer.status_code == 200, answer.text
    body = RecommendResponse.model_validate(answer.json())
    assert body.model_version == champion_home[1]
    assert body.cold_start is False and len(body.items) == 5
    assert all("shares tags: " in item.reason for item in body.items)
    # Each names the listener's own artist it is nearest to.
    assert all(item.reason.startswith("because you like ") for item in body.items)
    scores = [item.score for item in body.items]
    assert scores == sorted(scores, reverse=True)
    with_listened = _recommend(server, user_id="u00", k=len(ITEM_IDS), exclude_listened=False).json()
    without = _recommend(server, user_id="u00", k=len(ITEM_IDS)).json()
    assert len(with_listened["items"]) == len(ITEM_IDS) > len(without["items"])


def test_unknown_user_gets_a_flagged_cold_start_list(server: Server) -> None:
    body = _recommend(server, user_id="never-seen", k=3).json()
    assert body["cold_start"] is True and len(body["items"]) == 3
    assert body["items"][0]["item_id"] == "a00"  # the most listened artist of the tiny data


def test_genre_and_tag_filters(server: Server) -> None:
    pop = _recommend(server, user_id="u00", k=MAX_K, genre="pop").json()["items"]
    assert pop and all(item["name"].startswith("Pop Star") for item in pop)
    dance = _recommend(server, user_id="nobody", k=4, tag="Dance").json()["items"]
    assert dance and all(item["name"].startswith("Pop Star") for item in dance)
    unknown = _recommend(server, user_id="u00", genre="polka")
    assert unknown.status_code == 422 and unknown.json()["fields"][0]["field"] == "genre"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u00", "k": 0}, "k"),
        ({"user_id": "u00", "k": MAX_K + 1}, "k"),
        ({"user_id": "", "k": 3}, "user_id"),
        ({"k": 3}, "user_id"),
        ({"user_id": "u00", "surprise": 1}, "surprise"),
        ({"user_id": "u00", "exclude_listened": "perhaps"}, "exclude_listened"),
        ({"user_id": "x" * 500}, "user_id"),
    ],
)
def test_invalid_recommend_requests_name_the_field(
    server: Server, body: dict[str, object], field: str
) -> None:
    answer = _recommend(server, **body)
    assert answer.status_code == 422, answer.text
    assert field in {entry["field"] for entry in answer.json()["fields"]}
    assert field in answer.json()["error"]


def test_garbage_bodies_are_4xx_never_5xx(server: Server) -> None:
    for path in ("/recommend", "/recommend/new-listener", "/similar", "/feedback", "/admin/reload"):
        for content in (b"{not json", b"[]", b"null", b"\xff\xfe", b'{"k": 1e999}'):
            answer = server.client.post(path, content=content, headers={"content-type": "application/json"})
            assert 400 <= answer.status_code < 500, (path, content, answer.status_code, answer.text)
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert server.client.post("/recommend", content=b"user_id=u00", headers=form).status_code == 415
    assert server.client.get("/search", params={"q": "", "limit": 5}).status_code == 422
    assert (
        server.client.get("/search", params={"q": "ro", "limit": 500}).json()["fields"][0]["field"] == "limit"
    )


def test_new_listener_folds_in_favourites_and_excludes_them(server: Server) -> None:
    favourites = ["Radiohead", "a01", "rock band c", "no such artist"]
    answer = server.client.post("/recommend/new-listener", json={"favourites": favourites, "k": 5})
    assert answer.status_code == 200, answer.text
    body = RecommendResponse.model_validate(answer.json())
    ids = {item.item_id for item in body.items}
    assert not ids & {"a12", "a01", "a02"}
    assert body.unresolved == ["no such artist"]
    assert sum("shares tags: rock" in item.reason for item in body.items) >= 3
    favourite_names = {"Radiohead", "Rock Band A", "Rock Band C"}
    named = [item.reason.split(";")[0].removeprefix("because you like ") for item in body.items]
    assert set(named) <= favourite_names and len(set(named)) >= 1
    none_known = server.client.post("/recommend/new-listener", json={"favourites": ["zzz"]})
    assert none_known.status_code == 422 and none_known.json()["fields"][0]["field"] == "favourites"
    too_many = server.client.post("/recommend/new-listener", json={"favourites": ["a01"] * 51})
    assert too_many.status_code == 422 and too_many.json()["fields"][0]["field"] == "favourites"


def test_similar_and_search(server: Server) -> None:
    by_name = SimilarResponse.model_validate(
        server.client.post("/similar", json={"name": "radiohead", "k": 3}).json()
    )
    assert (
        by_name.item_id == "a12"
        and len(by_name.items) == 3
        and "a12" not in {i.item_id for i in by_name.items}
    )
    assert server.client.post("/similar", json={"item_id": "nope"}).status_code == 404
    both = server.client.post("/similar", json={"item_id": "a01", "name": "Radiohead"})
    assert both.status_code == 422
    hits = SearchResponse.model_validate(server.client.get("/search", params={"q": "Ra"}).json()).items
    assert [hit.name for hit in hits][:2] == ["Radiohead", "Rammstein"] and hits[0].match == "prefix"
    fuzzy = server.client.get("/search", params={"q": "radiohed"}).json()["items"]
    assert fuzzy[0]["name"] == "Radiohead" and fuzzy[0]["match"] == "fuzzy"


def test_feedback_is_idempotent_and_dislikes_apply_on_the_next_request(server: Server) -> None:
    first = _recommend(server, user_id="u02", k=3).json()["items"][0]["item_id"]
    events = [_event("u02", first, "dislike"), _event("u02", "a05", "like")]
    stored = server.client.post("/feedback", json={"events": events})
    assert stored.status_code == 200 and stored.json() == {"inserted": 2, "duplicates": 0}
    again = server.client.post("/feedback", json={"events": events})
    assert again.json() == {"inserted": 0, "duplicates": 2}
    for _ in range(6):  # two workers: every one of them must honour the dislike
        ids = [item["item_id"] for item in _recommend(server, user_id="u02", k=MAX_K).json()["items"]]
        assert first not in ids
    cold = [_event("visitor-1", "a00", "dislike")]
    assert server.client.post("/feedback", json={"events": cold}).status_code == 200
    for _ in range(4):
        assert "a00" not in {i["item_id"] for i in _recommend(server, user_id="visitor-1").json()["items"]}


def test_invalid_feedback_names_the_event_field(server: Server) -> None:
    bad = {"events": [_event("u00", "a01", "like"), {**_event("u00", "a01", "love")}]}
    answer = server.client.post("/feedback", json=bad)
    assert answer.status_code == 422 and answer.json()["fields"][0]["field"].startswith("events.1.event")
    assert server.client.post("/feedback", json={"events": []}).status_code == 422


def test_health_metrics_docs_and_cross_origin(server: Server) -> None:
    assert server.client.get("/livez").status_code == 200
    assert server.client.get("/readyz").status_code == 200
    metrics = server.client.get("/metrics").text
    assert "recsys_recommendations_total" in metrics
    spec = server.client.get("/openapi.json").json()
    assert {"/recommend", "/recommend/new-listener", "/similar", "/search", "/feedback"} <= set(spec["paths"])
    assert "swagger-ui" in server.client.get("/docs").text
    page = server.client.get("/")
    assert page.status_code == 200 and "artist-search" in page.text
    foreign = server.client.post(
        "/recommend", json={"user_id": "u00"}, headers={"Origin": "http://evil.test"}
    )
    assert foreign.status_code == 403 and "access-control-allow-origin" not in foreign.headers
    same = server.client.post("/recommend", json={"user_id": "u00"}, headers={"Origin": server.url})
    assert same.status_code == 200


def test_reload_needs_the_token(server: Server) -> None:
    assert server.client.post("/admin/reload").status_code == 401
    assert server.client.post("/admin/reload", headers={"X-Admin-Token": "wrong"}).status_code == 403
    answer = server.client.post("/admin/reload", headers={"X-Admin-Token": ADMIN_TOKEN})
    assert answer.status_code == 200 and answer.json()["reloaded"] is True


def test_model_info_says_the_catalogue_holds_artists(server: Server, champion_home: tuple[Path, str]) -> None:
    body = server.client.get("/model").json()
    assert body["model_version"] == champion_home[1]
    assert body["item_kind"] == "artist"  # the champion's params name no data set: the first one, artists
    # Packaged without a strength and no override: served unmitigated, and says where that came from.
    assert (body["bias_strength"], body["bias_strength_source"]) == (0.0, "model")
