"""mailhost/broker.py: the embedded default's task broker never shows a worker
a task message before its bytes are all written."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection

from mailhost import broker


@pytest.fixture()
def queue(tmp_path: Path):
    """A queue of a name of its own: kombu keeps the bindings it has made in
    the process, and would not bind a known name again in a new folder."""
    folder = tmp_path / "queue"
    folder.mkdir()
    with Connection("filesystem://", transport="mailhost.broker:Transport", transport_options={
            "data_folder_in": str(folder), "data_folder_out": str(folder),
            "control_folder": str(tmp_path / "control")}) as conn:
        queue = conn.SimpleQueue(f"tasks-{uuid.uuid4()}")
        yield queue
        queue.close()


def test_tasks_arrive_whole(queue):
    for index in range(3):
        queue.put({"task": "apps.example", "index": index})
    assert sorted(queue.get(block=False).payload["index"] for _ in range(3)) == [0, 1, 2]
    with pytest.raises(Empty):
        queue.get(block=False)


def test_a_task_being_written_is_not_taken(queue, monkeypatch):
    """kombu's own transport creates the file under its final name and then
    writes it: a worker polling in between read no bytes and died on the JSON
    decode. A worker looking while ours writes finds nothing yet."""
    seen_while_writing = []
    replace = os.replace

    def look_then_replace(source: str, target: str) -> None:
        if source.endswith(".partial"):  # our message, written, not yet renamed
            try:
                seen_while_writing.append(queue.get(block=False).payload)
            except Empty:
                seen_while_writing.append(None)
        replace(source, target)

    monkeypatch.setattr(broker.os, "replace", look_then_replace)
    queue.put({"task": "apps.example"})
    assert seen_while_writing == [None]
    assert queue.get(block=False).payload == {"task": "apps.example"}
