"""The model exchange between hosts (a folder every host mounts) and publishing a promotion to replicas."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys import registry
from recsys.errors import ConfigError, RegistryError
from recsys.feedback.store import FeedbackStore
from recsys.registry import exchange
from recsys.registry.publishing import publish_champion
from tests.helpers import Project


def test_a_promoted_model_travels_to_another_hosts_store_bit_for_bit(
    project: Project, home: Path, tmp_path: Path
) -> None:
    tag = project.save(0.25, home)
    shared, replica = tmp_path / "exchange", tmp_path / "replica-home"
    archive = exchange.push(tag, shared, home)
    assert archive.exists() and exchange.archived(shared) == [tag]
    assert not list(shared.glob(".*"))  # no partial archive left behind
    assert exchange.push(tag, shared, home) == archive  # a second push keeps the archive
    assert exchange.pull(tag, shared, replica) is True
    assert exchange.pull(tag, shared, replica) is False  # already there: nothing imported
    here, there = registry.load_artifact(tag, home=home), registry.load_artifact(tag, home=replica)
    assert here.tag == there.tag and here.user_ids == there.user_ids and here.item_ids == there.item_ids
    assert registry.get_model(tag, home).metadata == registry.get_model(tag, replica).metadata
    assert exchange.forget([tag], replica) == [tag] and registry.all_versions(replica) == []
    assert exchange.remove([tag, tag], shared) == [tag] and exchange.archived(shared) == []
    with pytest.raises(RegistryError, match="nor in the model exchange"):
        exchange.pull(tag, shared, replica)


def test_the_exchange_must_be_a_mounted_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(exchange.EXCHANGE_ENV, raising=False)
    assert exchange.exchange_from_env() is None
    monkeypatch.setenv(exchange.EXCHANGE_ENV, f"file://{tmp_path}")
    assert exchange.exchange_from_env() == tmp_path
    monkeypatch.setenv(exchange.EXCHANGE_ENV, "s3://bucket/models")
    with pytest.raises(ConfigError, match="must be a folder every host mounts"):
        exchange.exchange_from_env()
    with pytest.raises(RegistryError, match="not a full model tag"):
        exchange.archive(tmp_path, "../../etc")


def test_publishing_exports_then_announces_and_leaves_an_unused_sqlite_store_alone(
    project: Project, home: Path, tmp_path: Path
) -> None:
    tag = project.save(0.25, home)
    registry.promote(tag, home)
    missing = tmp_path / "nowhere" / "feedback.db"
    done = publish_champion(tag, f"sqlite:///{missing}", exchange=tmp_path / "ex", home=home)
    assert done["announced"] is None and not missing.exists()  # a training run must not create the store
    assert done["exchange"] and exchange.archived(tmp_path / "ex") == [tag]
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    FeedbackStore(url).close()
    assert publish_champion(tag, url, home=home)["announced"] == 1
    with FeedbackStore(url) as store:
        assert store.announcements()[f"{registry.model_name()}/reload"].value == tag
