"""Nodes of a cluster, as processes on this machine (issue 16): each node has a
data directory of its own and shares only the database, Redis (when
REDIS_URL is set) and the blob store with the others.

Blob store: the S3 store when the suite runs with one (MAILHOST_BLOB_STORE), so
that each node's own MAILHOST_STORAGE_ROOT is unused; otherwise one directory
that every node mounts at MAILHOST_STORAGE_ROOT, as a shared filesystem would
be. On SQLite without Redis the nodes share the database file; each has its own
file cache and filesystem broker, and IDLE across nodes is the HIGHESTMODSEQ
poller's (once a second) instead of Redis pub/sub."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ListenerProcess

NodeStarter = Callable[..., ListenerProcess]


@pytest.fixture
def start_node(transactional_db, settings, tmp_path: Path) -> Iterator[NodeStarter]:
    started: list[ListenerProcess] = []

    def start(name: str, listeners: tuple[str, ...] = ("smtp", "imap", "pop3"),
              **extra_env: str) -> ListenerProcess:
        data_dir = tmp_path / f"node-{name}"
        data_dir.mkdir()
        node = ListenerProcess(list(listeners), Path(settings.MAILHOST_STORAGE_ROOT), {
            "MAILHOST_DATA_DIR": str(data_dir),
            "MAILHOST_HOSTNAME": f"{name}.cluster.test",
            **extra_env,
        })
        started.append(node)
        return node

    yield start
    for node in started:
        if node.process.poll() is None:
            node.kill()
