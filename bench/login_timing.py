"""Login failures: does an unknown login cost the same time as a wrong password?

For IMAP LOGIN, POP3 USER/PASS, SMTP AUTH PLAIN on submission, the web sign-in
page and the REST API, times --attempts failures with a login that does not
exist and as many with a real login and a wrong password, taking turns, over
real sockets against ``manage.py runmailservers`` and the web server (uvicorn
serving mailhost.asgi) of a throw-away instance, with the real password hasher
(Argon2; not MAILHOST_FAST_PASSWORD_HASHER). Each attempt's clock runs from
the authentication command to its answer (the connection and greeting are
made before). Prints per protocol the median of each kind, their difference
and ratio. The reference beside them, measured in the same run: the median of
one bare Argon2 hash in this process, which both kinds of failure must spend.

The REST API has no passwords (its clients sign in with a token or the web
session): its pair is a key that matches no token beside the key of an existing
token whose account is disabled.

The lockout is raised out of the way (10^6 failures), since a locked login is
refused before any hashing and this measures the failures themselves.

    python bench/login_timing.py [--attempts 200] [--only imap,pop3,smtp,web,api]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import imaplib
import os
import poplib
import re
import secrets
import smtplib
import statistics
import time
import urllib.parse
from collections.abc import Callable

from common import PYTHON, Background, MailhostInstance, free_port, wait_for_port

USER, PASSWORD = "real@timing.example", "the real password 1"
UNKNOWN = "nobody@timing.example"
WRONG = "not the password 1"

_SETUP = """
from apps.api.services import create_token
from apps.directory.services import create_mailbox, update_mailbox
disabled = create_mailbox("disabled@timing.example", "a disabled password 1")
_, key = create_token(disabled.user, name="bench")
update_mailbox(disabled, active=False)
print("KEY", key)
"""


def timed_failure(what: str, call: Callable[[], object], refused: type[Exception]) -> float:
    """Seconds until ``call`` is refused (raises ``refused``)."""
    started = time.perf_counter()
    try:
        call()
    except refused:
        return time.perf_counter() - started
    raise SystemExit(f"{what}: a login meant to fail succeeded")


def imap_attempt(port: int) -> Callable[[str, str], float]:
    def attempt(login: str, password: str) -> float:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=60)
        elapsed = timed_failure("IMAP", lambda: client.login(login, password),
                                imaplib.IMAP4.error)
        client.shutdown()
        return elapsed
    return attempt


def pop3_attempt(port: int) -> Callable[[str, str], float]:
    def attempt(login: str, password: str) -> float:
        client = poplib.POP3("127.0.0.1", port, timeout=60)
        elapsed = timed_failure("POP3", lambda: (client.user(login), client.pass_(password)),
                                poplib.error_proto)
        client.quit()
        return elapsed
    return attempt


def smtp_attempt(port: int) -> Callable[[str, str], float]:
    def attempt(login: str, password: str) -> float:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.ehlo()
            plain = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
            started = time.perf_counter()
            code, _ = client.docmd("AUTH", f"PLAIN {plain}")
            elapsed = time.perf_counter() - started
        if code != 535:
            raise SystemExit(f"SMTP AUTH: {code} for a login meant to fail")
        return elapsed
    return attempt


def timed_http(connection: http.client.HTTPConnection, what: str, expected: int,
               method: str, url: str, body: str | None, headers: dict[str, str]) -> float:
    """Seconds for one request that must be refused with status ``expected``."""
    started = time.perf_counter()
    connection.request(method, url, body, headers)
    answer = connection.getresponse()
    answer.read()
    elapsed = time.perf_counter() - started
    if answer.status != expected:
        raise SystemExit(f"{what}: {answer.status} for a login meant to fail")
    return elapsed


def web_attempt(port: int) -> Callable[[str, str], float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def attempt(login: str, password: str) -> float:
        connection.request("GET", "/signin/")
        page = connection.getresponse()
        body = page.read().decode()
        cookie = re.search(r"csrftoken=([^;]+)", page.getheader("Set-Cookie", "")).group(1)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1)
        form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "email": login,
                                       "password": password})
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "Cookie": f"csrftoken={cookie}", "Referer": f"http://127.0.0.1:{port}/"}
        return timed_http(connection, "web sign-in", 400, "POST", "/signin/", form, headers)
    return attempt


def api_attempt(port: int) -> Callable[[str, str], float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def attempt(key: str, _: str) -> float:
        return timed_http(connection, "API", 401, "GET", "/api/v1/me/", None,
                          {"Authorization": f"Token {key}"})
    return attempt


def bare_hash_ms(instance: MailhostInstance, rounds: int) -> float:
    out = instance.manage("shell", "-c", (
        "import time, statistics\n"
        "from django.contrib.auth.hashers import make_password\n"
        f"t = []\nfor _ in range({rounds}):\n"
        "    s = time.perf_counter(); make_password('x'); t.append(time.perf_counter() - s)\n"
        "print('HASH', statistics.median(t) * 1000)\n"))
    return float(re.search(r"HASH ([\d.]+)", out).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=200)
    parser.add_argument("--only", default="imap,pop3,smtp,web,api",
                        help="the protocols to measure, comma-separated")
    args = parser.parse_args()
    instance = MailhostInstance(os.environ.get("DATABASE_URL"))
    instance.env.pop("MAILHOST_FAST_PASSWORD_HASHER")  # the real hasher: Argon2
    instance.env.update({"MAILHOST_AUTH_MAX_FAILURES_PER_LOGIN": "1000000",
                         "MAILHOST_AUTH_MAX_FAILURES_PER_IP": "1000000"})
    processes: list[Background] = []
    try:
        instance.manage("createdomain", "timing.example")
        instance.manage("createmailbox", USER, "--password-stdin", stdin=PASSWORD + "\n")
        disabled_key = re.search(r"KEY (\S+)", instance.manage("shell", "-c", _SETUP)).group(1)
        listeners, ports = instance.start_listeners("imap,pop3,submission")
        processes.append(listeners)
        web_port = free_port()
        web = Background([PYTHON, "-m", "uvicorn", "mailhost.asgi:application", "--host",
                          "127.0.0.1", "--port", str(web_port), "--no-access-log",
                          "--lifespan", "off"], instance.env)
        processes.append(web)
        wait_for_port(web_port, "web server", lambda: web.process.poll() is None)
        protocols = {
            "imap": ("IMAP LOGIN", imap_attempt(ports["imap"]), UNKNOWN, USER),
            "pop3": ("POP3 USER/PASS", pop3_attempt(ports["pop3"]), UNKNOWN, USER),
            "smtp": ("SMTP AUTH PLAIN", smtp_attempt(ports["submission"]), UNKNOWN, USER),
            "web": ("web sign-in", web_attempt(web_port), UNKNOWN, USER),
            "api": ("API token", api_attempt(web_port), "mh_" + secrets.token_urlsafe(30),
                    disabled_key),
        }
        reference = bare_hash_ms(instance, 20)
        print(f"{args.attempts} failures of each kind per protocol, taking turns; "
              f"reference: one bare Argon2 hash {reference:.1f} ms (median of 20)")
        print(f"{'protocol':<17}{'unknown login':>15}{'wrong password':>16}"
              f"{'difference':>12}{'ratio':>8}")
        for key in args.only.split(","):
            name, attempt, unknown, known = protocols[key]
            attempt(unknown, WRONG), attempt(known, WRONG)  # warm-up
            unknown_times, wrong_times = [], []
            for _ in range(args.attempts):
                unknown_times.append(attempt(unknown, WRONG))
                wrong_times.append(attempt(known, WRONG))
            a = statistics.median(unknown_times) * 1000
            b = statistics.median(wrong_times) * 1000
            print(f"{name:<17}{a:>12.2f} ms{b:>13.2f} ms{a - b:>+9.2f} ms{a / b:>8.3f}",
                  flush=True)
    finally:
        for process in processes:
            process.stop()
        instance.cleanup()


if __name__ == "__main__":
    main()
