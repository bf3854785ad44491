"""The model exchange: how a model promoted on the training host reaches service replicas on other hosts.

Each host keeps its own BentoML store (``BENTOML_HOME``: the registry of record on the training host, a
cache on a replica). A promotion exports the champion with BentoML (``bentoml.models.export_model``, one
``.tar`` archive per version) into the exchange, a folder every host mounts (an NFS or EFS volume, a
Kubernetes ``ReadWriteMany`` volume); the replicas learn which tag to serve from the feedback database
(:mod:`recsys.feedback.announcements`) and import it (``bentoml.models.import_model``) into their own
store before loading it. Nothing else passes through the shared folder.

An erasure deletes the archives of the versions it revokes (:func:`remove`), and a replica deletes its own
copies of revoked versions when it learns of the revocation (:func:`forget`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound

from recsys.errors import ConfigError, RegistryError
from recsys.registry.store import (
    _is_ours,
    _locked,
    _opt_out_of_usage_tracking,
    _resolve,
    _store,
    bentoml_home,
)

EXCHANGE_ENV = "RECSYS_MODEL_EXCHANGE"
"""The exchange folder shared by the hosts; unset: one host, no exchange."""
SUFFIX = ".tar"
FORMAT = "tar"
"""Uncompressed: the model's arrays barely compress (gzip took 21.6 s to export a 70 MB model to 41 MB,
a plain tar 0.3 s to 73 MB; importing it takes 0.1 s)."""


def exchange_from_env() -> Path | None:
    """The folder in ``$RECSYS_MODEL_EXCHANGE``, or None when unset.

    Raises
    ------
    ConfigError
        The value is a URL (``s3://``...): only a mounted folder is supported and tested.
    """
    raw = os.environ.get(EXCHANGE_ENV, "").strip()
    if not raw:
        return None
    if "://" in raw and not raw.startswith("file://"):
        raise ConfigError(
            f"{EXCHANGE_ENV}={raw!r}: the model exchange must be a folder every host mounts (NFS, EFS, a "
            "ReadWriteMany volume); object-store URLs are not supported"
        )
    return Path(raw.removeprefix("file://")).resolve()


def archive(exchange: Path, tag: str) -> Path:
    """Where the archive of the full ``tag`` (``name:version``) lives in ``exchange``."""
    name, _, version = tag.partition(":")
    if not version or "/" in tag or tag.startswith("."):
        raise RegistryError(f"{tag!r} is not a full model tag (name:version)")
    return exchange / f"{name}-{version}{SUFFIX}"


def push(tag: str, exchange: Path, home: str | Path | None = None, dataset: str | None = None) -> Path:
    """Export the stored model ``tag`` into ``exchange`` (written under a temporary name, then renamed, so a
    replica never imports half an archive); an archive already there is kept. Returns its path."""
    from recsys.registry.store import model_name

    _opt_out_of_usage_tracking()
    root = bentoml_home(home)
    exchange.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        store = _store(root)
        model = _resolve(store, tag, model_name(dataset))
        target = archive(exchange, str(model.tag))
        if target.exists():
            return target
        partial = target.with_name(f".{target.stem}.{os.getpid()}.part{SUFFIX}")
        try:
            bentoml.models.export_model(model.tag, str(partial), FORMAT, _model_store=store)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target


def pull(tag: str, exchange: Path, home: str | Path | None = None) -> bool:
    """Import the full ``tag`` from ``exchange`` into the local store unless it is there already; returns
    whether it was imported.

    Raises
    ------
    RegistryError
        The exchange holds no archive of ``tag`` (never published, or deleted by an erasure).
    """
    _opt_out_of_usage_tracking()
    source = archive(exchange, tag)
    root = bentoml_home(home)
    with _locked(root):
        store = _store(root)
        try:
            store.get(tag)
            return False
        except NotFound:
            pass
        if not source.exists():
            raise RegistryError(
                f"{tag} is neither in the local store {root} nor in the model exchange {exchange}"
            )
        bentoml.models.import_model(str(source), FORMAT, _model_store=store)
    return True


def remove(tags: Iterable[str], exchange: Path) -> list[str]:
    """Delete the archives of ``tags`` from ``exchange``; returns the tags whose archive was there."""
    removed = []
    for tag in dict.fromkeys(tags):
        path = archive(exchange, tag)
        if path.exists():
            path.unlink()
            removed.append(tag)
    return removed


def archived(exchange: Path) -> list[str]:
    """The full tags of every archive in ``exchange``."""
    if not exchange.is_dir():
        return []
    tags = []
    for path in sorted(exchange.glob(f"*{SUFFIX}")):
        if path.name.startswith("."):
            continue
        name, _, version = path.name.removesuffix(SUFFIX).rpartition("-")
        if name and _is_ours(name):
            tags.append(f"{name}:{version}")
    return tags


def forget(tags: Iterable[str], home: str | Path | None = None) -> list[str]:
    """Delete ``tags`` from this host's store whatever their stage (a replica's store is a cache of the
    exchange: its labels are not the registry's); returns the tags deleted."""
    root = bentoml_home(home)
    wanted = set(tags)
    with _locked(root):
        store = _store(root)
        doomed = [
            model.tag for model in store.list() if _is_ours(model.tag.name) and str(model.tag) in wanted
        ]
        for found in doomed:
            store.delete(found)
    return [str(found) for found in doomed]
