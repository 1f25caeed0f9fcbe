"""A few chaos rounds (bench/chaos.py has the long run): the whole platform
under mixed load, a random process SIGKILLed and restarted every few seconds,
then every acknowledged message accounted for, no blob orphaned, no queue or
spool entry stuck."""

import os
from pathlib import Path

import pytest

from bench.chaos import run
from tests.conftest import database_url

pytestmark = pytest.mark.slow


def test_chaos_rounds_lose_and_duplicate_nothing(transactional_db, settings, tmp_path: Path):
    env = dict(os.environ, DATABASE_URL=database_url(), MAILHOST_DATA_DIR=str(tmp_path),
               MAILHOST_STORAGE_ROOT=str(settings.MAILHOST_STORAGE_ROOT),
               MAILHOST_CACHE_PREFIX=f"mh-chaos-test-{os.getpid()}")
    lines: list[str] = []
    tally = run(rounds=5, interval=2, env=env, data_dir=tmp_path, drain_timeout=60,
                log=lines.append)
    report = tally.report("chaos (test)") + "\n" + "\n".join(lines)
    assert tally.faults == 0, report
    assert tally.rounds == 5
    assert set(tally.kills) == {"mail", "worker1", "worker2", "beat", "web"}, report
    # The load reached every path: mailboxes, the sink, bounces, IMAP and POP3.
    assert {"mailbox", "sink", "bounced"} <= set(tally.placed), report
    assert sum(tally.acknowledged.values()) >= 50, report
