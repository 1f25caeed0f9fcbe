"""TLS for the listeners: the configured certificate, or a self-signed pair
generated into the data directory on first start (apps/certificates), and a
new certificate written over it (ACME renewal, certbot, an administrator) is
served to new connections without a restart. A certificate that another node
renewed is installed from the database (apps/certificates/storage.py)."""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import connections

from apps.certificates.storage import certificate_paths, install_newer

log = logging.getLogger(__name__)

__all__ = ["certificate_paths", "server_context"]


def _context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context


def _stamp(*paths: Path) -> tuple[tuple[int, int, int], ...] | None:
    """Changes whenever one of the files is rewritten or renamed over."""
    try:
        return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in map(os.stat, paths))
    except OSError:
        return None


class ReloadingCertificate:
    """One server context for every listener, implicit TLS and STARTTLS alike.
    Each handshake looks at the certificate files (two stat calls) and, when
    they changed, hands the connection a context loaded from the new files:
    the ClientHello callback may switch a connection's context, as SNI
    virtual hosting does. Connections already open keep their certificate.

    At most every MAILHOST_ACME_CHECK_SECONDS a handshake also has a thread
    look in the database for a pair another node renewed, which it writes
    over the files: a later handshake serves it. A thread, because the
    handshake runs on the event loop, where the ORM must not block."""

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.paths = (cert_path, key_path)
        self._stamp = _stamp(*self.paths)
        self.context = _context(cert_path, key_path)
        self.current = self.context
        self.context.sni_callback = self._client_hello
        self._checked = float("-inf")  # when the database was last looked at
        self._checking = threading.Lock()

    def _check_database_soon(self) -> None:
        now = time.monotonic()
        if now - self._checked < settings.MAILHOST_ACME_CHECK_SECONDS:
            return
        if not self._checking.acquire(blocking=False):
            return  # a check is under way
        self._checked = now
        threading.Thread(target=self._check_database, name="certificate-check",
                         daemon=True).start()

    def _check_database(self) -> None:
        try:
            install_newer()
        except Exception:
            log.exception("could not look for a renewed certificate in the database")
        finally:
            connections.close_all()  # this thread's own connections
            self._checking.release()

    def _refresh(self) -> None:
        stamp = _stamp(*self.paths)
        if stamp == self._stamp or stamp is None:
            return
        try:
            self.current = _context(*self.paths)
        except (OSError, ssl.SSLError) as error:
            # Half replaced (the new key, the old certificate): the next
            # handshake looks again; until then the previous pair serves.
            log.warning("new certificate in %s not loaded yet: %s", self.paths[0], error)
            return
        self._stamp = stamp
        log.info("serving the new certificate from %s", self.paths[0])

    def _client_hello(self, connection: ssl.SSLObject | ssl.SSLSocket,
                      server_name: str | None, context: ssl.SSLContext) -> None:
        # Called for every ClientHello, with or without a server name. An
        # exception here would fail the handshake: keep serving what we have.
        try:
            self._check_database_soon()
            self._refresh()
        except Exception:
            log.exception("could not check %s for a new certificate", self.paths[0])
        if self.current is not context:
            connection.context = self.current


def server_context() -> ssl.SSLContext:
    return ReloadingCertificate(*certificate_paths()).context
