"""Faults of the running service: SIGKILL of the whole ``bentoml serve`` group while clients post feedback.

The feedback store's promise is "acknowledged = on disk": every batch answered 200 before the kill must
be in the SQLite store exactly once after a restart, and a batch whose answer never arrived may be there
at most once. (A feedback store outage and a corrupt model at reload are in ``test_service_ops.py``.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from recsys.feedback.store import FeedbackStore
from tests.helpers import CLIENT_TOKEN, Server, start_server, stop_server, wait_for

pytestmark = pytest.mark.slow
N_CLIENTS, BATCH = 4, 5
ACKED_BEFORE_KILL = 40  # batches acknowledged before the kill, so it lands mid-stream


@dataclass
class Ledger:
    """What the clients sent and which batches the service acknowledged."""

    sent: dict[str, list[str]] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, batch: str, ids: list[str], status: int | None) -> None:
        with self.lock:
            self.sent[batch] = ids
            if status == 200:
                self.acked.add(batch)


def _events(client_no: int, batch_no: int) -> tuple[str, list[dict[str, str]]]:
    batch = f"c{client_no}-b{batch_no}"
    events = [
        {
            "user_id": f"u{(client_no + i) % 40:02d}",
            "item_id": "a01",
            "event": "play",
            "event_id": f"{batch}-{i}",
        }
        for i in range(BATCH)
    ]
    return batch, events


def _post_until_down(url: str, client_no: int, ledger: Ledger, stop: threading.Event) -> None:
    """Post batches until the service stops answering (a transport error) or ``stop`` is set."""
    with httpx.Client(base_url=url, timeout=10.0, headers={"X-Client-Token": CLIENT_TOKEN}) as client:
        for batch_no in range(10_000):
            if stop.is_set():
                return
            batch, events = _events(client_no, batch_no)
            status: int | None = None
            try:
                status = client.post("/feedback", json={"events": events}).status_code
            except httpx.TransportError:
                return
            finally:
                ledger.record(batch, [event["event_id"] for event in events], status)


def _kill_service_mid_stream(server: Server, ledger: Ledger) -> list[psutil.Process]:
    """SIGKILL the arbiter's process group and every worker once enough batches were acknowledged.

    Circus starts each worker with ``os.setsid()``, so the workers are not in the arbiter's process
    group: ``killpg`` alone would leave them orphaned and still serving. A hard crash of the service
    (OOM killer, container kill) takes all of them, so each worker is killed by its pid too.
    """
    assert wait_for(lambda: len(ledger.acked) >= ACKED_BEFORE_KILL, 120.0), server.output()
    root = psutil.Process(server.process.pid)
    processes = [root, *root.children(recursive=True)]
    os.killpg(server.process.pid, signal.SIGKILL)
    for process in processes[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=30)
    return processes


def _stored_ids(db: Path) -> Counter[str]:
    with FeedbackStore(f"sqlite:///{db}", create=False) as store:
        frame = store.export_frame()
    return Counter(frame["event_id"].tolist())


def test_acknowledged_feedback_survives_sigkill_of_the_service_group(
    champion_home: tuple[Path, str], tmp_path: Path
) -> None:
    home, _ = champion_home
    server = start_server(home, tmp_path, {})
    ledger, stop = Ledger(), threading.Event()
    clients = [
        threading.Thread(target=_post_until_down, args=(server.url, n, ledger, stop))
        for n in range(N_CLIENTS)
    ]
    for client in clients:
        client.start()
    try:
        processes = _kill_service_mid_stream(server, ledger)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=60)
        server.client.close()
    # every process of the service is gone, so nothing can still be writing to the store
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive

    restarted = start_server(home, tmp_path, {})  # same workdir: same feedback.db and runtime dir
    try:
        stored = _stored_ids(tmp_path / "feedback.db")
        acked_ids = {i for batch in ledger.acked for i in ledger.sent[batch]}
        sent_ids = {i for ids in ledger.sent.values() for i in ids}
        assert acked_ids and acked_ids <= set(stored)
        assert max(stored.values()) == 1
        assert set(stored) <= sent_ids
        unacked = sent_ids - acked_ids
        assert len(ledger.sent) > len(ledger.acked) or not unacked  # batches in flight were tracked

        # a client retrying an acknowledged batch after the restart creates no duplicates
        batch = sorted(ledger.acked)[0]
        events = _events(int(batch[1 : batch.index("-")]), int(batch.rsplit("-b", 1)[1]))[1]
        retry = restarted.client.post("/feedback", json={"events": events})
        assert retry.status_code == 200 and retry.json() == {"inserted": 0, "duplicates": BATCH}
        assert _stored_ids(tmp_path / "feedback.db") == stored
    finally:
        stop_server(restarted)
