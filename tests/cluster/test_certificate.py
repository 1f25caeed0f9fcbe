"""A certificate renewed on one node reaches the others (issue 16: nothing
of a node only on its own disk): the renewing node keeps the pair in the
database, and a listener process with a data directory of its own installs
it and serves it to new connections, without a restart."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from apps.certificates import storage
from tests.cluster.conftest import node_environment
from tests.conftest import ListenerProcess

ACME = {"MAILHOST_ACME_DIRECTORY": "https://acme.invalid/directory",  # on; no CA is asked
        "MAILHOST_ACME_CHECK_SECONDS": "0",  # every handshake may look
        "MAILHOST_TLS_CERT": "", "MAILHOST_TLS_KEY": ""}


def served_name(port: int) -> str:
    """The common name of the certificate an IMAPS client is shown."""
    trust = ssl.create_default_context()
    trust.check_hostname, trust.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            trust.wrap_socket(raw) as tls:
        assert tls.recv(1024).startswith(b"* OK")
        leaf = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    return leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_a_pair_kept_by_the_renewing_node_is_served_by_another(transactional_db, settings,
                                                               tmp_path: Path):
    # Every node has the same SECRET_KEY (README "A cluster"): the key is sealed with it.
    environment = {**node_environment("b", tmp_path), **ACME, "SECRET_KEY": settings.SECRET_KEY}
    node_b = ListenerProcess(["imaps"], Path(environment["MAILHOST_STORAGE_ROOT"]), environment)
    try:
        assert served_name(node_b.ports["imaps"]) == "b.cluster.test"  # its first, self-signed

        # Node A (this process, a data directory of its own) renews.
        settings.DATA_DIR = tmp_path / "node-a"
        settings.MAILHOST_ACME_DIRECTORY = ACME["MAILHOST_ACME_DIRECTORY"]
        settings.MAILHOST_TLS_CERT = settings.MAILHOST_TLS_KEY = ""
        made = tmp_path / "issued"
        storage.generate_self_signed(made / "cert.pem", made / "key.pem", "renewed.cluster.test")
        chain_pem, key_pem = (made / "cert.pem").read_bytes(), (made / "key.pem").read_bytes()
        storage.keep_issued(chain_pem=chain_pem, key_pem=key_pem)
        assert (tmp_path / "node-a" / "tls" / "cert.pem").read_bytes() == chain_pem

        # A handshake on B sets off its look at the database; a later one
        # gets the new pair.
        deadline = time.monotonic() + 60
        while served_name(node_b.ports["imaps"]) != "renewed.cluster.test":
            assert time.monotonic() < deadline, "".join(node_b.output)
            time.sleep(0.2)
        tls_b = tmp_path / "node-b" / "tls"
        assert (tls_b / "cert.pem").read_bytes() == chain_pem
        assert (tls_b / "key.pem").read_bytes() == key_pem
    finally:
        node_b.kill()


def test_a_node_does_not_install_a_pair_no_newer_than_its_own(db, settings, tmp_path: Path):
    settings.DATA_DIR = tmp_path
    settings.MAILHOST_TLS_CERT = settings.MAILHOST_TLS_KEY = ""
    settings.MAILHOST_ACME_DIRECTORY = ACME["MAILHOST_ACME_DIRECTORY"]
    cert_path, key_path = storage.certificate_paths()  # self-signed
    storage.keep_issued(chain_pem=cert_path.read_bytes(), key_pem=key_path.read_bytes())
    assert storage.install_newer() is False  # it is this node's own
    # An administrator's file after ACME is turned off is left alone.
    (tmp_path / "acme" / "installed-version").unlink()
    settings.MAILHOST_ACME_DIRECTORY = ""
    assert storage.install_newer() is False
    settings.MAILHOST_ACME_DIRECTORY = ACME["MAILHOST_ACME_DIRECTORY"]
    assert storage.install_newer() is True
