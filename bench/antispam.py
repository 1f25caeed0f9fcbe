"""Antispam benchmark: the classifier's accuracy and speed on the corpus split,
and the inbound pipeline's messages/s with the checks on versus off.

    python bench/antispam.py [--messages 300] [--connections 4]

Trains the global model on the training part of ../shared/corpora (split by
a hash of each file name; 25 % held out), then reports on the held-out part:
spam recall at a ham false-positive rate of at most 0.5 % (the best cut-off
on the held-out scores, which is an upper bound), and at the fixed SpamBayes
cut-off 0.90 (what the server does), beside bogofilter (the reference, installed
with apt-get if missing) trained and tested on the same files. Then it sends the same messages over
SMTP to the real listener, once with MAILHOST_ANTISPAM off (direct delivery:
the reference) and once with checks on, filed before the 250 (inline), and
prints both rates and their ratio. Everything runs in a temporary data
directory with SQLite, on 127.0.0.1 only, and no DNS is queried (the tests'
fake resolver answers "no record" to everything).
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT.parent / "shared" / "corpora"
sys.path.insert(0, str(ROOT))
DATA = Path(tempfile.mkdtemp(prefix="bench-antispam-"))
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "mailhost.settings",
    "MAILHOST_DATA_DIR": str(DATA),
    "MAILHOST_DNS_RESOLVER": "tests.antispam.fakedns.FakeResolver",
    "MAILHOST_FAST_PASSWORD_HASHER": "1",
    "MAILHOST_LOG_LEVEL": "WARNING",
})
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from apps.antispam import bayes, learning  # noqa: E402
from apps.antispam.corpus import is_held_out, read_messages  # noqa: E402

MAX_FPR = 0.005


Sample = tuple[Path, bytes]


def split(kind: str) -> tuple[list[Sample], list[Sample]]:
    train, test = [], []
    for path, data in read_messages(CORPORA / kind):
        (test if is_held_out(path.name) else train).append((path, data))
    return train, test


def report(name: str, spam_scores: list[float], ham_scores: list[float],
           train_seconds: float, trained: int, classify_seconds: float) -> tuple[float, float]:
    allowed = int(MAX_FPR * len(ham_scores))
    ranked = sorted(ham_scores, reverse=True)
    # The lowest cut-off above which at most `allowed` ham messages score.
    cutoff = ranked[allowed] if allowed < len(ranked) else 0.0
    recall = sum(s > cutoff for s in spam_scores) / len(spam_scores)
    fp = sum(s > cutoff for s in ham_scores)
    total = len(spam_scores) + len(ham_scores)
    print(f"{name}: trains {trained / train_seconds:.0f} msg/s, classifies "
          f"{total / classify_seconds:.0f} msg/s; spam recall at ham FPR <= {MAX_FPR:.1%}: "
          f"{recall:.1%} (cut-off {cutoff:.4f}, {fp} false positives of {len(ham_scores)})")
    return recall, total / classify_seconds


def ours(spam: tuple[list[Sample], list[Sample]], ham: tuple[list[Sample], list[Sample]]
         ) -> tuple[float, float]:
    (spam_train, spam_test), (ham_train, ham_test) = spam, ham
    model = learning.global_model()
    started = time.perf_counter()
    for messages, is_spam in ((spam_train, True), (ham_train, False)):
        labelled = [learning.LabelledMessage(path.name, frozenset(bayes.tokenize(data)))
                    for path, data in messages]
        learning.train(model, labelled, is_spam=is_spam)
    trained_in = time.perf_counter() - started

    def probability(data: bytes) -> float:
        result = learning.classify_tokens(bayes.tokenize(data))[None]
        assert result is not None
        return result.probability

    started = time.perf_counter()
    spam_scores = [probability(d) for _, d in spam_test]
    ham_scores = [probability(d) for _, d in ham_test]
    elapsed = time.perf_counter() - started
    figures = report("mailhost (tokenise + one count query + chi-square)", spam_scores,
                     ham_scores, trained_in, len(spam_train) + len(ham_train), elapsed)
    fixed_recall = sum(s >= bayes.SPAM_CUTOFF for s in spam_scores) / len(spam_scores)
    fixed_fp = sum(s >= bayes.SPAM_CUTOFF for s in ham_scores)
    unsure = sum(bayes.HAM_CUTOFF < s < bayes.SPAM_CUTOFF for s in spam_scores + ham_scores)
    print(f"  at its fixed cut-off {bayes.SPAM_CUTOFF} (what the server uses): spam recall "
          f"{fixed_recall:.1%}, ham FPR {fixed_fp / len(ham_scores):.2%} ({fixed_fp}), "
          f"unsure {unsure}")
    return figures


def bogofilter(spam: tuple[list[Sample], list[Sample]],
               ham: tuple[list[Sample], list[Sample]]) -> tuple[float, float]:
    """The reference: bogofilter (Robinson-Fisher too), default settings, same split."""
    if not shutil.which("bogofilter"):
        subprocess.run(["flock", "/tmp/apt.lock", "apt-get", "install", "-y",
                        "--no-install-recommends", "bogofilter"], check=True,
                       stdout=subprocess.DEVNULL)
    wordlist = DATA / "bogofilter"
    wordlist.mkdir()
    (spam_train, spam_test), (ham_train, ham_test) = spam, ham

    def run(flag: str, paths: list[Path]) -> str:
        out = []
        for start in range(0, len(paths), 200):
            done = subprocess.run(
                ["bogofilter", "-d", str(wordlist), flag, "-B",
                 *map(str, paths[start:start + 200])],
                capture_output=True, check=False)
            out.append(done.stdout.decode())
        return "".join(out)

    started = time.perf_counter()
    run("-s", [p for p, _ in spam_train])
    run("-n", [p for p, _ in ham_train])
    trained_in = time.perf_counter() - started
    started = time.perf_counter()
    scores = {}
    for line in run("-T", [p for p, _ in spam_test + ham_test]).splitlines():
        path, _, spamicity = line.rsplit(" ", 2)
        scores[path] = float(spamicity)
    elapsed = time.perf_counter() - started
    return report("bogofilter 1.2.5 (reference)", [scores[str(p)] for p, _ in spam_test],
           [scores[str(p)] for p, _ in ham_test], trained_in,
           len(spam_train) + len(ham_train), elapsed)


def accuracy() -> list[bytes]:
    spam, ham = split("spam"), split("ham")
    print(f"corpus split: train {len(spam[0])} spam + {len(ham[0])} ham, "
          f"held out {len(spam[1])} spam + {len(ham[1])} ham")
    our_recall, our_speed = ours(spam, ham)
    their_recall, their_speed = bogofilter(spam, ham)
    print(f"ratio mailhost/bogofilter: recall {our_recall / their_recall:.2f}, "
          f"classification speed {our_speed / their_speed:.2f}")
    return [d for _, d in spam[1] + ham[1]]


def send_all(messages: list[bytes], connections: int) -> float:
    """Send over SMTP to a fresh listener; seconds until the last 250."""
    from tests.conftest import ServerThread

    server = ServerThread(["smtp"]).start()
    port = server.port("smtp")
    chunks = [messages[i::connections] for i in range(connections)]
    errors: list[BaseException] = []

    def send(chunk: list[bytes]) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                client.ehlo("bench.test")
                for data in chunk:
                    client.sendmail("sender@remote.example", ["bench@bench.example"], data)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=send, args=(c,)) for c in chunks]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    server.stop()
    if errors:
        raise errors[0]
    return elapsed


def drain_spool() -> tuple[int, float]:
    """File every spooled message as one worker process would."""
    from apps.antispam import services
    from apps.antispam.models import SpooledMessage

    pks = list(SpooledMessage.objects.order_by("pk").values_list("pk", flat=True))
    started = time.perf_counter()
    for pk in pks:
        services.file_spooled(pk)
    return len(pks), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    from tests.factories import make_mailbox

    make_mailbox("bench@bench.example", quota=0)
    held_out = accuracy()
    # What SMTP can carry as is (RFC 5321 §4.5.3.1.6: lines of at most 1000 octets).
    sample = [m for m in held_out if max(map(len, m.split(b"\r\n"))) <= 998][: args.messages]
    settings.MAILHOST_RATE_LIMIT_EXEMPT = ["127.0.0.0/8"]
    n = len(sample)
    print(f"inbound pipeline, {n} held-out messages over {args.connections} connections:")
    settings.MAILHOST_ANTISPAM = False
    off = n / send_all(sample, args.connections)
    print(f"  checks off (reference: direct delivery into INBOX): {off:.0f} messages/s")
    settings.MAILHOST_ANTISPAM = True
    settings.MAILHOST_ANTISPAM_INLINE = False
    accepted = n / send_all(sample, args.connections)
    filed, seconds = drain_spool()
    assert filed == n, (filed, n)
    filing = n / seconds
    end_to_end = 1 / (1 / accepted + 1 / filing)
    print(f"  checks on, after-queue (default): 250s at {accepted:.0f} messages/s "
          f"(spool), one worker files {filing:.0f} messages/s (SPF result kept, DKIM, "
          f"DMARC, Bayes, headers, store)")
    print(f"    end to end with one worker: {end_to_end:.0f} messages/s, "
          f"ratio on/off {end_to_end / off:.2f}; 250s ratio on/off {accepted / off:.2f}")
    settings.MAILHOST_ANTISPAM_INLINE = True
    inline = n / send_all(sample, args.connections)
    print(f"  checks on, inline (before the 250): {inline:.0f} messages/s, "
          f"ratio on/off {inline / off:.2f}")


if __name__ == "__main__":
    main()
