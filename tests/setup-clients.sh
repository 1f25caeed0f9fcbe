#!/usr/bin/env bash
# Installs the Debian command-line clients and the browser that the real-client tests drive,
# when they are missing. Needs root (as on CI); prints what it installs.
set -euo pipefail
# chromium (and a font) for the real-browser tests of the admin panel and webmail.
wanted=(swaks libnet-ssleay-perl libio-socket-ssl-perl postfix fetchmail getmail6 isync offlineimap3
        chromium fonts-dejavu-core dovecot-imapd)
# pebble: the ACME test server that tests/certificates issues certificates from.
wanted+=(pebble)
# sieve-connect: the ManageSieve client that tests/sieve drives.
wanted+=(sieve-connect)
# knot: the authoritative DNS server that tests/directory publishes to (RFC 2136).
wanted+=(knot)
# haproxy: the load balancer that tests/mailservers/test_proxy_protocol.py puts in front
# of the listeners (send-proxy, send-proxy-v2).
wanted+=(haproxy)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "tests/setup-clients.sh: please install: ${missing[*]} (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing test clients: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A benchmark installing its reference may be running apt too: take the lock the
# benchmarks take, and wait for dpkg's own lock besides.
flock /tmp/apt.lock apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null
flock /tmp/apt.lock apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
# Postfix is a test peer started by the tests with their own configuration:
# the system instance that its package starts must not hold port 25.
if [[ " ${missing[*]} " == *" postfix "* ]]; then
  service postfix stop >/dev/null 2>&1 || true
fi
# HAProxy is started by the tests with their own configuration, never as a service.
if [[ " ${missing[*]} " == *" haproxy "* ]]; then
  service haproxy stop >/dev/null 2>&1 || true
fi
# Dovecot is the remote IMAP server of the import tests (tests/transfer), started by
# them with a throwaway configuration: the system instance is not wanted.
if [[ " ${missing[*]} " == *" dovecot-imapd "* ]]; then
  service dovecot stop >/dev/null 2>&1 || true
fi
# Knot DNS is the primary of the publishing tests, started by them on a free port
# with a throwaway zone: the system instance is not wanted.
if [[ " ${missing[*]} " == *" knot "* ]]; then
  service knot stop >/dev/null 2>&1 || true
fi
