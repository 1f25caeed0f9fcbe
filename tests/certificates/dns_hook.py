"""MAILHOST_ACME_DNS_HOOK of the dns-01 test, as an administrator would write
one for their DNS provider: ``dns_hook.py ZONE set|clear NAME VALUE`` adds or
removes a TXT record in ZONE, a JSON file the test's DNS server answers from."""

import json
import sys
from pathlib import Path

zone_file, action, name, value = Path(sys.argv[1]), *sys.argv[2:5]
zone = json.loads(zone_file.read_text()) if zone_file.exists() else {}
values = zone.setdefault(name.rstrip(".") + ".", [])
if action == "set":
    values.append(value)
elif action == "clear":
    values.remove(value)
else:
    sys.exit(f"unknown action {action}")
zone_file.write_text(json.dumps({n: v for n, v in zone.items() if v}))
