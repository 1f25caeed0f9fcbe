"""Sieve benchmark: what an active script costs when mail is filed.

    python bench/sieve.py [--messages 300] [--connections 4]

Sends corpus messages over SMTP to the real listener (checks on, after the
250: the default), then files the spool as one worker does, twice: once with
no script (the reference, measured in the same run) and once with an active
script of the kind users write (header, address, :matches with variables,
size, fileinto, imap4flags). Prints both filing rates and their ratio, and
the rate of the script alone (compile and run per message, no database).
Runs in a temporary data directory with SQLite (bench/antispam.py's set-up).
"""

from __future__ import annotations

import argparse
import time

# bench/antispam.py sets up Django and the temporary data directory on import.
from antispam import drain_spool, send_all
from common import add_corpus_argument, corpus_messages
from django.conf import settings
from django.core.management import call_command

SCRIPT = """require ["fileinto", "imap4flags", "variables", "relational",
                     "comparator-i;ascii-numeric"];
if header :contains "subject" ["viagra", "money", "free", "offer"] {
    fileinto "Suspect"; stop;
}
if address :domain :is "from" ["example.com", "lists.sourceforge.net"] {
    fileinto "Lists";
}
if header :matches "subject" "*[*]*" { set "tag" "${2}"; addflag "${tag}"; }
if header :count "gt" :comparator "i;ascii-numeric" "received" "8" { addflag "$far"; }
if size :over 100K { fileinto "Large"; }
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--connections", type=int, default=4)
    add_corpus_argument(parser)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    from apps.sieve import services as sieve
    from apps.sieve.commands import compile_script
    from apps.sieve.interpreter import Envelope, evaluate
    from tests.factories import make_mailbox

    mailbox = make_mailbox("bench@bench.example", quota=0)
    paths = sorted(p for kind in ("ham", "spam") for p in (args.corpus / kind).rglob("*")
                   if p.is_file())
    messages = [m for m in corpus_messages(paths)
                if max(map(len, m.split(b"\r\n"))) <= 998][: args.messages]
    n = len(messages)
    settings.MAILHOST_RATE_LIMIT_EXEMPT = ["127.0.0.0/8"]
    settings.MAILHOST_ANTISPAM = True
    settings.MAILHOST_ANTISPAM_INLINE = False
    print(f"filing {n} corpus messages spooled over {args.connections} connections:")
    send_all(messages, args.connections)
    filed, seconds = drain_spool()
    reference = filed / seconds
    print(f"  no script (reference): one worker files {reference:.0f} messages/s")
    sieve.put_script(mailbox, "bench", SCRIPT)
    sieve.set_active(mailbox, "bench")
    send_all(messages, args.connections)
    filed, seconds = drain_spool()
    scripted = filed / seconds
    print(f"  active script: one worker files {scripted:.0f} messages/s, "
          f"ratio script/none {scripted / reference:.2f}")
    envelope = Envelope("sender@remote.example", "bench@bench.example")
    started = time.perf_counter()
    for data in messages:
        evaluate(compile_script(SCRIPT), data, envelope)
    print(f"  the script alone (compile and run, no database): "
          f"{n / (time.perf_counter() - started):.0f} messages/s")


if __name__ == "__main__":
    main()
