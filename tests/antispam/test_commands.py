"""manage.py trainspam and classify, on files as operators have them."""

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.antispam import learning

pytestmark = pytest.mark.django_db


def write(directory: Path, name: str, subject: str, body: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    # An mbox "From " line and LF line ends, as the SpamAssassin corpus has them.
    path.write_bytes(f"From x@y Thu Nov 26 10:00:00 2026\nSubject: {subject}\n"
                     f"From: a@b.example\n\n{body}\n".encode())
    return path


def test_trainspam_then_classify(tmp_path: Path):
    spam, ham = tmp_path / "spam", tmp_path / "ham"
    for n in range(6):
        write(spam, f"s{n}", f"cheap pills {n}", "buy cheap viagra pills online today")
        write(ham, f"h{n}", f"minutes {n}", "agenda for the quarterly review meeting")
    out = StringIO()
    call_command("trainspam", "--spam", str(spam), "--ham", str(ham), stdout=out)
    assert out.getvalue() == "spam: 6 learnt of 6 files\nham: 6 learnt of 6 files\n"
    model = learning.global_model()
    assert (model.spam_count, model.ham_count) == (6, 6)

    suspect = write(tmp_path, "suspect", "cheap offer", "viagra pills online")
    friendly = write(tmp_path, "friendly", "review", "the meeting agenda")
    out = StringIO()
    call_command("classify", str(suspect), str(friendly), stdout=out)
    lines = [line.split("\t") for line in out.getvalue().splitlines()]
    assert [(path, label) for path, label, _, _ in lines] == [
        (str(suspect), "spam"), (str(friendly), "ham")]
    assert float(lines[0][2]) > 0.9 > 0.1 > float(lines[1][2])
    assert "'viagra'=" in lines[0][3] and "'agenda'=" in lines[1][3]


def test_classify_refuses_an_untrained_model(tmp_path: Path):
    with pytest.raises(CommandError, match="trainspam"):
        call_command("classify", str(write(tmp_path, "m", "hi", "there")))


def test_trainspam_needs_a_directory(tmp_path: Path):
    with pytest.raises(CommandError):
        call_command("trainspam")
    with pytest.raises(CommandError, match="not a directory"):
        call_command("trainspam", "--spam", str(tmp_path / "missing"))
