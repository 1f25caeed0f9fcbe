"""A short fuzzing run (bench/fuzz.py has the long one): each target fed a
fixed-seed series of generated and mutated inputs, none of which may raise
anything but the target's documented bad-input error, log a caught
exception, or take a second of CPU."""

from pathlib import Path

import pytest

from apps.store.models import Message
from bench import fuzz
from bench.fuzz import TARGETS, mutated_inputs, prepare_smtp_directory, run_inputs, seed_messages
from tests import fakedns

ROOT = Path(__file__).resolve().parent.parent

# Inputs per target: about a second each on an idle machine.
INPUTS = {"imap": 2000, "pop3": 2000, "dmarc": 2000, "dsn": 600, "spf": 800, "mime": 800,
          "sanitize": 600, "smtp": 60}


@pytest.fixture(scope="module")
def messages() -> list[bytes]:
    return seed_messages(ROOT / "tests" / "corpus", 150)


@pytest.fixture
def smtp_directory(transactional_db):
    prepare_smtp_directory()


def _fuzz(name: str, messages: list[bytes], save_dir: Path) -> None:
    result = run_inputs(name, mutated_inputs(name, messages, INPUTS[name], seed=14,
                                             huge_one_in=0), save_dir=save_dir)
    assert result.inputs == INPUTS[name]
    assert (result.crashes, result.hangs) == (0, 0), (result.kinds, result.saved)


@pytest.mark.parametrize("name", sorted(set(TARGETS) - {"smtp", "reference"}))
def test_no_crash_or_hang(name, messages, tmp_path, settings):
    try:
        _fuzz(name, messages, tmp_path)
    finally:
        fakedns.ZONE.clear()  # the SPF target's records


def test_no_crash_or_hang_in_smtp_sessions(messages, tmp_path, smtp_directory, settings):
    settings.MAILHOST_ANTISPAM = False  # DATA files at once, as in bench/fuzz.py
    _fuzz("smtp", messages, tmp_path)
    # The seeds ran first, as they are: the sessions really reached the store.
    assert Message.objects.filter(folder__mailbox__address="alice@fuzz.example").exists()


def test_an_exception_a_logged_exception_and_a_hang_are_each_counted_and_saved(
        tmp_path, monkeypatch):
    def parser(data: bytes) -> None:
        if data == b"raise":
            raise KeyError(data)
        if data == b"log":
            try:
                {}[data]
            except KeyError:
                fuzz.logging.getLogger("apps.store.mime").exception("caught")
        while data == b"spin":
            pass

    monkeypatch.setitem(TARGETS, "probe", fuzz.Target("probe", parser, [], lambda m: []))
    monkeypatch.setattr(fuzz, "CPU_LIMIT", 0.05)
    result = run_inputs("probe", iter([b"ok", b"raise", b"log", b"spin", b"ok"]),
                        save_dir=tmp_path)
    assert (result.inputs, result.crashes, result.hangs) == (5, 2, 1)
    assert sorted(path.name.split("-")[0] for path in (tmp_path / "probe").glob("*.bin")) == [
        "crash", "crash", "hang"]
