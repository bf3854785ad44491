"""Which stored models a service may load: its own data set's, never a revoked one; on several hosts,
imported from the model exchange first."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recsys import registry
from recsys.registry import exchange as model_exchange


@dataclass(frozen=True)
class ModelSource:
    """Where a worker loads models from, and which it must refuse.

    Attributes
    ----------
    home : Path
        The model store's home.
    dataset : str, optional
        The service's data set: a model of another one is refused (default: ``$RECSYS_DATASET``).
    revoked : callable
        The tags never to serve (they hold an erased listener's feedback), as the worker knows them now.
    exchange : Path, optional
        The model exchange (:mod:`recsys.registry.exchange`): a tag missing from ``home`` is imported from
        it first. None on a single host.
    """

    home: Path
    dataset: str | None = None
    revoked: Callable[[], frozenset[str]] = field(default=frozenset)
    exchange: Path | None = None

    def load(self, tag: str) -> registry.ServingArtifact:
        """The stored model ``tag`` (a tag, a version or ``champion``), once it may be served.

        Raises
        ------
        registry.RegistryError
            The tag is unknown, names another data set's model, or a revoked one.
        """
        expected = registry.model_name(self.dataset)
        if self.exchange is not None and tag != registry.CHAMPION:
            full = tag if ":" in tag else f"{expected}:{tag}"
            self._refuse_revoked(full)  # never imported either
            model_exchange.pull(full, self.exchange, self.home)
        artifact = registry.load_artifact(tag, home=self.home, dataset=self.dataset)
        if artifact.tag.split(":")[0] != expected:
            raise registry.RegistryError(
                f"{artifact.tag} is not a model of this service's data set ({expected}): refused"
            )
        self._refuse_revoked(artifact.tag)
        return artifact

    def _refuse_revoked(self, tag: str) -> None:
        if tag in self.revoked():
            raise registry.RegistryError(f"{tag} holds an erased listener's feedback: revoked")
