"""Nodes of a cluster, as processes on this machine (issue 16): each node has a
data directory of its own (its MAILHOST_STORAGE_ROOT and S3 read cache in it)
and shares only the database, Redis (when REDIS_URL is set) and the S3 store
(SeaweedFS, tests/s3_server.py) with the others.

On PostgreSQL + Redis that is a real cluster. On SQLite without Redis the nodes
share the database file but each has its own file cache and filesystem broker,
as a cluster without Redis would (the README says a cluster needs Redis); IDLE
across nodes then comes from each node's HIGHESTMODSEQ poller instead of Redis
pub/sub, and the tests hold all the same."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ListenerProcess

NodeStarter = Callable[..., ListenerProcess]


def node_environment(name: str, tmp_path: Path) -> dict[str, str]:
    """What is a node's own: its data directory, with its local blob root and
    its S3 read cache (both under it, so that nothing is shared on disk)."""
    data_dir = tmp_path / f"node-{name}"
    data_dir.mkdir()
    return {"MAILHOST_DATA_DIR": str(data_dir),
            "MAILHOST_STORAGE_ROOT": str(data_dir / "messages"),
            "MAILHOST_S3_CACHE_DIR": str(data_dir / "blob-cache"),
            "MAILHOST_HOSTNAME": f"{name}.cluster.test"}


@pytest.fixture
def start_node(transactional_db, s3_store, tmp_path: Path) -> Iterator[NodeStarter]:
    started: list[ListenerProcess] = []

    def start(name: str, listeners: tuple[str, ...] = ("smtp", "imap", "pop3"),
              **extra_env: str) -> ListenerProcess:
        environment = node_environment(name, tmp_path)
        node = ListenerProcess(list(listeners), Path(environment["MAILHOST_STORAGE_ROOT"]),
                               {**environment, **extra_env})
        started.append(node)
        return node

    yield start
    for node in started:
        if node.process.poll() is None:
            node.kill()
