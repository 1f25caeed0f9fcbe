"""What a listener process loads: the libraries only the web side and the
workers use (key making, DKIM verification, sealing, QR codes, mail import)
are megabytes each that every listener process would otherwise keep for its
whole life (issue 12: listener memory)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Top-level packages a listener never needs at start or for inbound mail.
NOT_IN_A_LISTENER = frozenset({
    "cryptography",  # DKIM keys, certificates, sealing: workers, web, a first start's child
    "dkim", "nacl", "authres",  # DKIM/ARC verification and results: the checking worker
    "segno",  # the second-factor enrolment page's QR code
    "imapclient",  # mail import jobs: a worker
})

_LOADED = """
import json, sys
import django
django.setup()
from apps.mailservers.management.commands import runmailservers
print(json.dumps(sorted(sys.modules)))
"""


def test_a_listener_process_does_not_load_what_only_the_web_side_and_workers_use():
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="mailhost.settings")
    result = subprocess.run([sys.executable, "-c", _LOADED], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True, timeout=120)
    modules = set(json.loads(result.stdout.splitlines()[-1]))
    loaded = {name.partition(".")[0] for name in modules}
    assert "django" in loaded and "apps.mailservers.listeners" in modules
    assert loaded & NOT_IN_A_LISTENER == set()
    # Each protocol's code is imported by the listeners that serve it:
    # ``runmailservers --only smtp`` keeps no IMAP, POP3 or ManageSieve code.
    assert {"apps.imap.session", "apps.pop3.server", "apps.sieve.session"} & modules == set()
