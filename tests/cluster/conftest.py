"""The topology tests share one cluster whose state each changes (feedback, erasures, promotions): they run in
the order they are written (pytest-randomly still shuffles every other module, and this module among them)."""

from __future__ import annotations

import pytest

TOPOLOGY = "test_topology.py"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mine = [item for item in items if item.path.name == TOPOLOGY]
    ordered = iter(sorted(mine, key=lambda item: item.reportinfo()[1] or 0))
    positions = {id(item) for item in mine}
    items[:] = [next(ordered) if id(item) in positions else item for item in items]
