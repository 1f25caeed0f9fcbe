from __future__ import annotations

import asyncio
import gc
import itertools
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connection
from hypothesis import settings as hypothesis_settings

from apps.directory.models import Domain, Mailbox
from apps.mailservers.listeners import RunningListener, start_listeners, stop_listeners
from apps.mailservers.tls import certificate_paths, server_context
from mailhost.celery import app as celery_app
from tests.factories import make_domain, make_mailbox
from tests.knot_server import KnotServer
from tests.web_server import WebServerProcess

ROOT = Path(__file__).resolve().parent.parent
# The blob store the whole run uses; empty: the local store (tests/s3_server.py).
_S3_STORE = os.environ.get("MAILHOST_BLOB_STORE", "")

# No test queries real DNS; mail is checked and filed before the 250 so that a
# test sees it in the mailbox at once (apps/antispam). Processes started by
# tests inherit these.
os.environ.setdefault("MAILHOST_DNS_RESOLVER", "tests.fakedns.FakeResolver")
os.environ.setdefault("MAILHOST_ANTISPAM_INLINE", "1")
# Verdicts in tests come from what each test trains; the day-one model's
# own tests turn it on (tests/antispam/test_starter.py).
os.environ.setdefault("MAILHOST_BAYES_STARTER", "0")
# Playwright's sync API runs an event loop in the test's thread; the tests' own
# ORM calls there are synchronous all the same (the web server process keeps
# Django's guard).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
# Property tests assert behaviour, never speed: hypothesis' per-example
# deadline (200 ms) only measures how busy the machine is.
hypothesis_settings.register_profile("mailhost", deadline=None)
hypothesis_settings.load_profile("mailhost")
# Real mail nobody here wrote: a copy of the shared corpora's mime/ set and a sample
# of its ham and spam (tests/corpus/README.md), so that a clone tests on its own.
CORPORA = ROOT / "tests" / "corpus"


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets its own blob store, an empty cache (lockout counters) and
    an empty task queue (a worker started by one test must not run tasks that
    an earlier test enqueued for rows that its database no longer holds).

    With the S3 store configured (MAILHOST_BLOB_STORE=s3://…, as .ci/run's
    second run does) the store is a prefix of its own under the configured one,
    with a read cache of its own; the environment says so too, for the
    processes that tests start."""
    settings.MAILHOST_STORAGE_ROOT = tmp_path / "messages"
    if _S3_STORE.startswith("s3://"):
        isolated = {"MAILHOST_BLOB_STORE": f"{_S3_STORE.rstrip('/')}/{uuid.uuid4().hex}",
                    "MAILHOST_S3_CACHE_DIR": str(tmp_path / "blob-cache")}
        for name, value in isolated.items():
            setattr(settings, name, value)
            monkeypatch.setenv(name, value)
    settings.MAILHOST_DNS_RESOLVER = os.environ["MAILHOST_DNS_RESOLVER"]
    settings.MAILHOST_ANTISPAM_INLINE = True
    settings.MAILHOST_BAYES_STARTER = False
    cache.clear()
    celery_app.control.purge()
    yield


@pytest.fixture(scope="session", autouse=True)
def _release_thread_connections(django_db_setup, django_db_blocker):  # type: ignore[no-untyped-def]
    """The listeners' worker threads keep a database connection each, as in a
    real listener process where they live as long as the process, and processes
    that tests SIGKILL leave theirs for the server to notice. PostgreSQL refuses
    to drop the test database while any is open: end them first."""
    yield
    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        connection.close()


@pytest.fixture(scope="session", autouse=True)
def _frozen_startup_heap(django_db_setup) -> None:  # type: ignore[no-untyped-def]
    """Everything imported and set up so far lives as long as the session:
    freezing it leaves each later ``gc.collect()`` (ServerThread.stop runs one
    per test) only the objects the tests themselves made to look at."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def _flush_by_delete(django_db_setup) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """What ``flush`` runs after each transactional test on PostgreSQL: DELETE
    where Django would TRUNCATE the same tables. Both leave them empty with
    their sequences where they were; TRUNCATE makes new files for every table
    and took over a second a test here, DELETE of a test's few rows a few
    milliseconds. Django's foreign keys are DEFERRABLE INITIALLY DEFERRED, so
    the order of the tables does not matter inside flush's transaction."""
    if connection.vendor != "postgresql":
        yield
        return
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush

    def delete(self, style, tables, *, reset_sequences=False, allow_cascade=False):  # type: ignore[no-untyped-def]
        if reset_sequences or not tables:
            return truncate(self, style, tables, reset_sequences=reset_sequences,
                            allow_cascade=allow_cascade)
        return ["SET CONSTRAINTS ALL DEFERRED",
                *(f"{style.SQL_KEYWORD('DELETE FROM')} {style.SQL_FIELD(self.quote_name(table))}"
                  for table in tables)]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabaseOperations, "sql_flush", delete)
        yield


@pytest.fixture(scope="session", autouse=True)
def _flush_keeps_content_types(django_db_setup) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """The flush after a transactional test leaves the content type and
    permission rows that migrate made, instead of deleting them and having
    post_migrate (no other receiver here) make the very same rows again: that
    took most of each flush. No test adds or removes such rows."""
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType
    from django.core.management.commands import flush

    kept = {ContentType._meta.db_table, Permission._meta.db_table}

    def sql_flush(style, connection, reset_sequences=True, allow_cascade=False):  # type: ignore[no-untyped-def]
        tables = connection.introspection.django_table_names(only_existing=True,
                                                             include_views=False)
        return connection.ops.sql_flush(style, [t for t in tables if t not in kept],
                                        reset_sequences=reset_sequences,
                                        allow_cascade=allow_cascade)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flush, "sql_flush", sql_flush)
        patch.setattr(flush, "emit_post_migrate_signal", lambda *args, **kwargs: None)
        yield


class _PooledRSA:
    """Stands in for ``cryptography``'s ``rsa`` module in apps.directory.dkim_keys
    during tests: every new domain gets a real RSA-2048 DKIM key (RFC 8301 §3.2),
    taken in turn from a pool made once per session, instead of generating one,
    which costs most of a domain's creation. Consecutive domains never share a
    key; keys still sign and verify for real."""

    SIZE = 16

    def __init__(self, module) -> None:  # type: ignore[no-untyped-def]
        self._module = module
        self._pool: list = []
        self._turn = itertools.count()

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._module, name)

    def generate_private_key(self, public_exponent: int, key_size: int):  # type: ignore[no-untyped-def]
        if (public_exponent, key_size) != (65537, 2048):
            return self._module.generate_private_key(public_exponent, key_size)
        turn = next(self._turn) % self.SIZE
        if turn == len(self._pool):
            self._pool.append(self._module.generate_private_key(public_exponent, key_size))
        return self._pool[turn]


@pytest.fixture(scope="session", autouse=True)
def _pooled_dkim_keys() -> Iterator[None]:
    from apps.directory import dkim_keys

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dkim_keys, "rsa", _PooledRSA(dkim_keys.rsa))
        yield


class ServerThread:
    """The real listeners on ephemeral ports, in an event loop of their own."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.listeners: list[RunningListener] = []
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # surfaced to the test by start()
            self._error = error
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.listeners = await start_listeners(
            dict.fromkeys(self.names, 0), host="127.0.0.1", tls_context=server_context())
        self._ready.set()
        await self._stop.wait()
        await stop_listeners(self.listeners, grace=5)

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        # The loop's executor threads are gone, but their database connections
        # close only when collected; PostgreSQL will not drop a test database
        # that still has sessions.
        gc.collect()

    def port(self, name: str) -> int:
        return next(lst.port for lst in self.listeners if lst.spec.name == name)


@pytest.fixture
def mail_servers(transactional_db) -> Iterator[ServerThread]:
    from apps.mailservers.listeners import LISTENERS

    server = ServerThread(list(LISTENERS)).start()
    yield server
    server.stop()


@pytest.fixture
def smtp_port(mail_servers: ServerThread) -> int:
    return mail_servers.port("smtp")


@pytest.fixture
def client_tls_context() -> ssl.SSLContext:
    """Trusts the listeners' certificate, and checks the host name against it."""
    cert_path, _ = certificate_paths()
    context = ssl.create_default_context(cafile=str(cert_path))
    context.check_hostname = True
    return context


# Two hosted domains and a mailbox in each: the API's and the admin panel's
# tests check what one domain's administrator may and may not reach.
@pytest.fixture
def ours(db) -> Domain:
    return make_domain("ours.example")


@pytest.fixture
def theirs(db) -> Domain:
    return make_domain("theirs.example")


@pytest.fixture
def alice(ours: Domain) -> Mailbox:
    return make_mailbox("alice@ours.example")


@pytest.fixture
def zed(theirs: Domain) -> Mailbox:
    return make_mailbox("zed@theirs.example")


def database_url() -> str:
    """The test database as a URL, for listener processes started by tests."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    user = params.get("USER") or ""
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    port = f":{params['PORT']}" if params.get("PORT") else ""
    return f"postgres://{auth}{params.get('HOST') or '127.0.0.1'}{port}/{params['NAME']}"


class ListenerProcess:
    """``manage.py runmailservers`` as a separate process on free ports."""

    def __init__(self, names: list[str], storage_root: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": database_url(),
            "MAILHOST_STORAGE_ROOT": str(storage_root),
            "MAILHOST_BIND": "127.0.0.1",
            "MAILHOST_SHUTDOWN_GRACE": "10",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        })
        for name in names:
            env[{"smtp": "SMTP_PORT", "submission": "SUBMISSION_PORT", "smtps": "SMTPS_PORT",
                 "imap": "IMAP_PORT", "imaps": "IMAPS_PORT", "pop3": "POP3_PORT",
                 "pop3s": "POP3S_PORT", "managesieve": "MANAGESIEVE_PORT"}[name]] = "0"
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runmailservers", "--only", ",".join(names)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.ports: dict[str, int] = {}
        self.output: list[str] = []
        deadline = time.monotonic() + 60
        assert self.process.stdout is not None
        while len(self.ports) < len(names):
            line = self.process.stdout.readline().decode(errors="replace")
            if not line and self.process.poll() is not None:
                raise RuntimeError("listener process died:\n" + "".join(self.output))
            self.output.append(line)
            match = re.search(r"listening name=(\w+) address=\S+ port=(\d+)", line)
            if match:
                self.ports[match.group(1)] = int(match.group(2))
            if time.monotonic() > deadline:
                raise RuntimeError("listener process did not start:\n" + "".join(self.output))
        # Keep draining its output so that it never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.output.append(raw.decode(errors="replace"))

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


@pytest.fixture
def listener_process(transactional_db, settings) -> Iterator[type[ListenerProcess]]:
    started: list[ListenerProcess] = []

    def start(names: list[str]) -> ListenerProcess:
        process = ListenerProcess(names, Path(settings.MAILHOST_STORAGE_ROOT))
        started.append(process)
        return process

    yield start  # type: ignore[misc]
    for process in started:
        if process.process.poll() is None:
            process.kill()


@pytest.fixture
def local_store(settings):  # type: ignore[no-untyped-def]
    """The local store, for a test about its files, also in a run configured
    with the S3 store."""
    from apps.store.blobs import local_blob_store

    settings.MAILHOST_BLOB_STORE = ""
    return local_blob_store()


# --- the S3 blob store ------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3 server's settings: the run's own when it is configured with
    one (.ci/run), else SeaweedFS started for this session (tests/s3_server.py)."""
    if _S3_STORE.startswith("s3://"):
        yield {"MAILHOST_BLOB_STORE": _S3_STORE, **{name: os.environ.get(name, "") for name in (
            "MAILHOST_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}}
        return
    from tests import s3_server

    server = s3_server.start(tmp_path_factory.mktemp("seaweedfs"))
    yield server.settings()
    server.stop()


@pytest.fixture
def s3_store(s3_settings: dict[str, str], settings, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """This test's blobs on S3, under a prefix of their own, with a read cache
    of their own; processes the test starts use it too (the environment)."""
    from apps.store.blobs import get_blob_store

    isolated = {**s3_settings,
                "MAILHOST_BLOB_STORE": f"{s3_settings['MAILHOST_BLOB_STORE']}/{uuid.uuid4().hex}",
                "MAILHOST_S3_CACHE_DIR": str(tmp_path / "blob-cache")}
    for name, value in isolated.items():
        monkeypatch.setenv(name, value)
    settings.MAILHOST_BLOB_STORE = isolated["MAILHOST_BLOB_STORE"]
    settings.MAILHOST_S3_ENDPOINT = isolated["MAILHOST_S3_ENDPOINT"]
    settings.MAILHOST_S3_CACHE_DIR = isolated["MAILHOST_S3_CACHE_DIR"]
    settings.MAILHOST_S3_ACCESS_KEY_ID = isolated["AWS_ACCESS_KEY_ID"]
    settings.MAILHOST_S3_SECRET_ACCESS_KEY = isolated["AWS_SECRET_ACCESS_KEY"]
    return get_blob_store()


def require_program(name: str) -> str:
    """A Debian client the test set-up (tests/setup-clients.sh) installs."""
    path = shutil.which(name)
    assert path, f"{name} is missing: run tests/setup-clients.sh (make test does)"
    return path


# A TXT record at the apex that is not Mailhost's: publishing leaves it alone.
FOREIGN_TXT = '"google-site-verification=abc123"'


def resolve_through(settings, port: int, *, timeout: int = 2) -> None:  # type: ignore[no-untyped-def]
    """The project's resolver (mailhost/dns.py) asks the DNS server a test
    started on 127.0.0.1 at ``port``."""
    settings.MAILHOST_DNS_RESOLVER = "mailhost.dns.DnsPythonResolver"
    settings.MAILHOST_DNS_NAMESERVERS = ["127.0.0.1"]
    settings.MAILHOST_DNS_PORT = port
    settings.MAILHOST_DNS_TIMEOUT = timeout


@pytest.fixture
def knot(ours: Domain, tmp_path: Path, settings) -> Iterator[KnotServer]:
    """Knot DNS serving the zone ours.example, with a foreign TXT at the apex;
    the project's resolver (mailhost/dns.py) asks it."""
    directory = tmp_path / "knot"
    directory.mkdir()
    server = KnotServer(directory, ours.name, require_program("knotd"),
                        records=(f"@ TXT {FOREIGN_TXT}", "www A 192.0.2.80"))
    settings.MAILHOST_HOSTNAME = "mx.hosting.example"
    resolve_through(settings, server.port, timeout=5)
    yield server
    server.stop()


# --- the web side in a real browser --------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last: Playwright's sync API leaves its event loop
    marked as running in the main thread for the rest of the session, and
    asyncio.run() in a later test would then refuse to start."""
    items.sort(key=lambda item: "page" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """Debian's Chromium (tests/setup-clients.sh installs it): Playwright cannot
    download a browser of its own here."""
    return {**browser_type_launch_args, "executable_path": require_program("chromium")}


@pytest.fixture
def web_server(transactional_db, settings) -> Iterator[WebServerProcess]:
    """The web server as a separate process on the test database and this
    test's blob store; ``web_server.url`` is where the browser goes."""
    server = WebServerProcess(database_url(), Path(settings.MAILHOST_STORAGE_ROOT))
    yield server
    server.stop()


def sign_in(page, base_url: str, email: str, password: str) -> None:  # type: ignore[no-untyped-def]
    """Sign in through the sign-in page, as a person does."""
    page.goto(f"{base_url}/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
