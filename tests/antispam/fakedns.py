"""A resolver for tests (MAILHOST_DNS_RESOLVER): answers from a table, never
from the network. Tests fill ``ZONE``; a process started by a test reads the
JSON file named by MAILHOST_FAKE_DNS instead (re-read on every query, so a
test may change it while the process runs).

A value is a list of answers, ``"TEMPFAIL"`` (the lookup fails temporarily)
or ``{"sleep": seconds, "answers": [...]}`` (a slow server).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from apps.antispam.dns import DnsTemporaryError

ZONE: dict[str, object] = {}


def key(name: str, rdtype: str) -> str:
    return f"{name.lower().rstrip('.')} {rdtype.upper()}"


class FakeResolver:
    def query(self, name: str, rdtype: str) -> list[str]:
        path = os.environ.get("MAILHOST_FAKE_DNS")
        zone = json.loads(Path(path).read_text()) if path else ZONE
        value = zone.get(key(name, rdtype), [])
        if value == "TEMPFAIL":
            raise DnsTemporaryError(f"{name} {rdtype}: SERVFAIL")
        if isinstance(value, dict):
            time.sleep(value["sleep"])
            value = value["answers"]
        assert isinstance(value, list)
        return list(value)
