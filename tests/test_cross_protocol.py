"""Behaviour that needs two merged parts together, over real sockets: POP3 and
IMAP on one INBOX, the REST API and the mail protocols, IMAP MOVE and the
spam classifier, the outbound queue's DKIM signatures and the inbound checks."""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import imaplib
import io
import poplib
import re
import smtplib
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from apps.antispam import auth, bayes, learning
from apps.api.services import create_token
from apps.delivery import services as delivery
from apps.directory.models import Mailbox, User
from apps.mailservers.tls import server_context
from apps.store.blobs import get_blob_store
from apps.store.models import Blob, Message
from tests import fakedns
from tests.conftest import ServerThread
from tests.delivery.receiver import Receiver
from tests.factories import PASSWORD, make_mailbox
from tests.imap.helpers import RawIMAP
from tests.smtp.helpers import make_message, stored

pytestmark = pytest.mark.slow


class Net:
    """Clients of the running listeners; all of them are closed after the test."""

    def __init__(self, servers: ServerThread) -> None:
        self.servers = servers
        self._opened: list[imaplib.IMAP4 | poplib.POP3 | RawIMAP] = []

    def port(self, name: str) -> int:
        return self.servers.port(name)

    def imap(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port("imap"), timeout=20)
        self._opened.append(client)
        return client

    def raw_imap(self) -> RawIMAP:
        client = RawIMAP(self.port("imap"))
        self._opened.append(client)
        return client

    def pop3(self) -> poplib.POP3:
        client = poplib.POP3("127.0.0.1", self.port("pop3"), timeout=20)
        self._opened.append(client)
        return client

    def send_mx(self, sender: str, recipient: str, data: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", self.port("smtp"), timeout=20) as client:
            client.ehlo("client.test")
            assert client.sendmail(sender, [recipient], data) == {}

    def imap_refuses(self, login: str, password: str) -> bool:
        client = self.imap()
        try:
            client.login(login, password)
        except imaplib.IMAP4.error as error:
            assert "[AUTHENTICATIONFAILED]" in str(error)
            return True
        client.logout()
        return False

    def pop3_refuses(self, login: str, password: str) -> bool:
        client = self.pop3()
        client.user(login)
        try:
            client.pass_(password)
        except poplib.error_proto as error:
            assert error.args[0].startswith(b"-ERR")
            return True
        client.quit()
        return False

    def pop3_messages(self, login: str, password: str) -> list[bytes]:
        """Every message of the maildrop as RETR gives it (CRLF line ends)."""
        client = self.pop3()
        client.user(login)
        assert client.pass_(password).startswith(b"+OK")
        count, _ = client.stat()
        messages = []
        for number in range(1, count + 1):
            _, lines, _ = client.retr(number)
            messages.append(b"".join(line + b"\r\n" for line in lines))
        assert client.quit().startswith(b"+OK")
        return messages

    def close(self) -> None:
        for client in self._opened:
            with contextlib.suppress(Exception):
                if isinstance(client, imaplib.IMAP4):
                    client.shutdown()
                else:
                    client.close()


@pytest.fixture
def net(mail_servers: ServerThread) -> Iterator[Net]:
    clients = Net(mail_servers)
    yield clients
    clients.close()


def header(data: bytes, name: str) -> list[str]:
    """The values of a header field, unfolded."""
    parsed = email.message_from_bytes(data, policy=email.policy.compat32)
    return [re.sub(r"\s+", " ", str(value)) for value in parsed.get_all(name, [])]


# --- 1. POP3 DELE + QUIT under a selected IMAP session ------------------------------


def test_pop3_deletion_is_announced_to_imap_sessions_with_the_inbox_selected(net):
    mailbox = make_mailbox("carol@cross.example")
    for n in (1, 2, 3):
        net.send_mx("sender@remote.example", mailbox.address,
                    make_message(mailbox.address, subject=f"number {n}"))

    imap = net.imap()
    imap.login(mailbox.address, PASSWORD)
    assert imap.select("INBOX") == ("OK", [b"3"])
    # A second session, read byte for byte, to see exactly what goes on the wire.
    raw = net.raw_imap()
    assert raw.login(mailbox.address, PASSWORD)[-1].startswith(b"t1 OK")
    assert b"* 3 EXISTS\r\n" in raw.command("SELECT INBOX")

    pop = net.pop3()
    pop.user(mailbox.address)
    assert pop.pass_(PASSWORD).startswith(b"+OK maildrop has 3 messages")
    assert pop.dele(2).startswith(b"+OK")
    # RFC 1939 §6: nothing is removed before the UPDATE state (QUIT).
    assert raw.command("NOOP") == [b"t3 OK NOOP completed\r\n"]
    assert pop.quit().startswith(b"+OK")

    # RFC 3501 §7.4.1: the deletion is announced with the old sequence number.
    assert raw.command("NOOP") == [b"* 2 EXPUNGE\r\n", b"t4 OK NOOP completed\r\n"]
    imap.untagged_responses.clear()
    assert imap.noop()[0] == "OK"
    assert imap.untagged_responses.get("EXPUNGE") == [b"2"]
    # The session's view now holds the two survivors, numbered 1 and 2.
    assert imap.search(None, "ALL") == ("OK", [b"1 2"])
    typ, data = imap.fetch("1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    fetched = [item for item in data if isinstance(item, tuple)]
    assert [re.findall(rb"UID (\d+)", meta) for meta, _ in fetched] == [[b"1"], [b"3"]]
    assert [body.strip() for _, body in fetched] == [b"Subject: number 1", b"Subject: number 3"]
    imap.logout()
    # And a new POP3 session finds the same two.
    assert [header(m, "Subject") for m in net.pop3_messages(mailbox.address, PASSWORD)] == [
        ["number 1"], ["number 3"]]


# --- 2. provisioned over the API, read over IMAP and POP3 ---------------------------


API_PASSWORD = "set through the api"
NEW_PASSWORD = "changed through the api"


@pytest.fixture
def as_root(transactional_db) -> APIClient:
    """An API client with a superadmin's token, as tests/api makes them."""
    root = User.objects.create_superuser("root@admin.example", "root password 1")
    _, key = create_token(root, name="cross-protocol")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_mailbox_provisioned_over_the_api_is_read_over_imap_and_pop3(net, as_root):
    response = as_root.post("/api/v1/domains/", {"name": "api.example"}, format="json")
    assert response.status_code == 201, response.content
    response = as_root.post("/api/v1/mailboxes/", {
        "address": "dora@api.example", "password": API_PASSWORD}, format="json")
    assert response.status_code == 201, response.content
    mailbox_id = response.json()["id"]

    message = make_message("dora@api.example", subject="provisioned")
    net.send_mx("sender@remote.example", "dora@api.example", message)

    imap = net.imap()
    imap.login("dora@api.example", API_PASSWORD)
    assert imap.select("INBOX", readonly=True) == ("OK", [b"1"])
    typ, data = imap.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK"
    over_imap = data[0][1]
    imap.logout()
    (over_pop3,) = net.pop3_messages("dora@api.example", API_PASSWORD)
    # The message as sent, below the trace and verdict fields the server adds.
    assert over_imap.endswith(message)
    assert over_pop3 == over_imap == stored("dora@api.example")[0]

    response = as_root.patch(f"/api/v1/mailboxes/{mailbox_id}/", {"password": NEW_PASSWORD},
                             format="json")
    assert response.status_code == 200, response.content
    # At once: no remembered verification of the old password survives the change.
    assert net.imap_refuses("dora@api.example", API_PASSWORD)
    assert net.pop3_refuses("dora@api.example", API_PASSWORD)
    assert not net.imap_refuses("dora@api.example", NEW_PASSWORD)
    assert net.pop3_messages("dora@api.example", NEW_PASSWORD) == [over_imap]


# --- 3. IMAP MOVE into and out of Junk trains the user's classifier -----------------


LOTTERY = "Congratulations winner, claim your lottery prize transfer fee"


def _labelled(data: bytes) -> learning.LabelledMessage:
    return learning.LabelledMessage(hashlib.sha256(data).hexdigest(),
                                    frozenset(bayes.tokenize(data)))


def train_global() -> None:
    """A site-wide model that has seen enough of each class to judge, on other words."""
    model = learning.global_model()
    learning.train(model, [_labelled(make_message("x@cross.example", subject=f"pills {i}",
                                                  body="cheap pills online"))
                           for i in range(5)], is_spam=True)
    learning.train(model, [_labelled(make_message("x@cross.example", subject=f"minutes {i}",
                                                  body="meeting agenda attached"))
                           for i in range(5)], is_spam=False)


def spam_probability(mailbox: Mailbox, data: bytes) -> float:
    """The classifier's verdict on ``data`` for this mailbox (global + user model)."""
    score = learning.classify_tokens(bayes.tokenize(data), [mailbox.pk])[mailbox.pk]
    assert score is not None
    return score.probability


def test_imap_move_into_and_out_of_junk_changes_the_users_next_verdict(net, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the store hook's training task runs at once
    settings.MAILHOST_BAYES_USER_MIN_MESSAGES = 5  # erin's model speaks after five moves
    train_global()
    erin = make_mailbox("erin@cross.example")
    for n in range(5):
        net.send_mx("sender@remote.example", erin.address,
                    make_message(erin.address, subject=f"You won {n}", body=LOTTERY))
    probe = make_message(erin.address, subject="You won again", body=LOTTERY)
    before = spam_probability(erin, probe)
    assert before <= 0.5  # words the models have not seen: no opinion
    assert len(stored(erin.address)) == 5 and stored(erin.address, "Junk") == []

    imap = net.imap()
    imap.login(erin.address, PASSWORD)
    assert imap.select("INBOX") == ("OK", [b"5"])
    typ, data = imap.uid("MOVE", "1:*", "Junk")
    assert typ == "OK", data
    junked = spam_probability(erin, probe)
    assert junked > 0.9 > before
    # What Erin sees: the next one is filed in Junk, marked as spam.
    net.send_mx("sender@remote.example", erin.address, probe)
    assert stored(erin.address) == []
    (filed,) = stored(erin.address, "Junk")[5:]
    assert header(filed, "X-Spam-Status")[0].startswith("Yes, ")

    # Out of Junk (all six): learnt as ham instead.
    assert imap.select("Junk") == ("OK", [b"6"])
    typ, data = imap.uid("MOVE", "1:*", "INBOX")
    assert typ == "OK", data
    assert spam_probability(erin, probe) < before
    net.send_mx("sender@remote.example", erin.address,
                make_message(erin.address, subject="You won once more", body=LOTTERY))
    assert stored(erin.address, "Junk") == []
    inbox = stored(erin.address)
    assert len(inbox) == 7
    assert header(inbox[-1], "X-Spam-Status")[0].startswith("No, ")
    imap.logout()


# --- 4. our outbound DKIM signatures, verified by our inbound checks ----------------


@pytest.fixture
def remote(settings) -> Iterator[Receiver]:
    """A remote server for example.net reached through the transport map (as in
    tests/delivery), MX lookups from a fake DNS, no Celery kick (the test runs the
    queue), and an empty fake DNS zone."""
    settings.MAILHOST_QUEUE_KICK = False
    settings.MAILHOST_HOSTNAME = "mail.mailhost.test"
    settings.MAILHOST_DELIVERY_TIMEOUT = 10
    fakedns.ZONE.clear()
    server = Receiver(server_context()).start()
    settings.MAILHOST_TRANSPORTS = f"example.net=127.0.0.1:{server.port}"
    yield server
    server.stop()
    fakedns.ZONE.clear()


def run_queue() -> int:
    """What beat and the workers do, synchronously: claim, then attempt each claim."""
    claims = delivery.claim_due()
    for claim, ids in claims:
        delivery.attempt(claim, ids)
    return len(claims)


def publish_txt_records(domain_name: str) -> list[str]:
    """The DKIM and DMARC records ``manage.py dnsrecords`` prints for the domain,
    served to the antispam checks as a resolver answers (strings joined); not the
    MX and SPF ones, which name the real mail host, not 127.0.0.1. Returns the
    DKIM selectors."""
    out = io.StringIO()
    call_command("dnsrecords", domain_name, stdout=out)
    selectors = []
    for line in out.getvalue().splitlines():
        name, _ttl, _class, rdtype, _ = line.split(None, 4)
        wanted = name.startswith("_dmarc.") or "._domainkey." in name
        if rdtype != "TXT" or not wanted:
            continue
        fakedns.publish([line])
        if "._domainkey." in name:
            selectors.append(name.partition("._domainkey.")[0])
    return selectors


def our_results(data: bytes) -> str:
    """The Authentication-Results field this server wrote (RFC 8601), unfolded."""
    (results,) = [value for value in header(data, "Authentication-Results")
                  if value.startswith("mail.mailhost.test;")]
    return results


def dkim_results(data: bytes) -> list[tuple[str, str, str]]:
    """(result, header.d, header.s) of each dkim resinfo we wrote."""
    return re.findall(r"dkim=(\w+)(?: \([^)]*\))? header\.d=([\w.-]+) header\.s=([\w.-]+)",
                      our_results(data))


def test_what_our_queue_signs_passes_our_own_dkim_checks(net, remote, client_tls_context):
    alice = make_mailbox("alice@signer.example")
    make_mailbox("bob@verifier.example")
    selectors = publish_txt_records("signer.example")
    assert len(selectors) == 2  # RSA and Ed25519

    message = make_message("carol@example.net", subject="signed", body="Hello from A").replace(
        b"From: sender@remote.example", b"From: Alice <alice@signer.example>")
    with smtplib.SMTP("localhost", net.port("submission"), timeout=20) as client:
        client.starttls(context=client_tls_context)
        client.login(alice.address, PASSWORD)
        assert client.sendmail(alice.address, ["carol@example.net"], message) == {}
    assert run_queue() == 1
    (got,) = remote.script.messages
    assert got.recipients == ["carol@example.net"]
    sent = got.data  # the exact bytes the remote server received
    tampered = sent.replace(b"Hello from A", b"Hello from B")
    assert tampered != sent

    # The verifier itself: each signature passes, and fails once the body (body
    # hash) or a signed header field (signature) is changed.
    expected = sorted(("pass", "signer.example", s) for s in selectors)
    assert sorted((r.result, r.domain, r.selector) for r in auth.verify_dkim(sent)) == expected
    assert [r.result for r in auth.verify_dkim(tampered)] == ["fail", "fail"]
    retitled = sent.replace(b"Subject: signed", b"Subject: signed!")
    assert [r.result for r in auth.verify_dkim(retitled)] == ["fail", "fail"]

    # What a user of another hosted domain gets when both arrive over the MX.
    net.send_mx(alice.address, "bob@verifier.example", sent)
    net.send_mx(alice.address, "bob@verifier.example", tampered)
    (good,) = stored("bob@verifier.example")
    assert sorted(dkim_results(good)) == expected
    assert "dmarc=pass" in our_results(good)
    good_status = header(good, "X-Spam-Status")[0]
    assert good_status.startswith("No, ")
    assert "DKIM_INVALID" not in good_status and "FORGED_LOCAL_SENDER" not in good_status
    # The tampered copy: both signatures fail, so DMARC fails and its p=quarantine
    # sends it to Junk.
    (bad,) = stored("bob@verifier.example", "Junk")
    assert sorted(dkim_results(bad)) == sorted(("fail", "signer.example", s) for s in selectors)
    assert "dmarc=fail" in our_results(bad)
    assert "DKIM_INVALID" in header(bad, "X-Spam-Status")[0]


# --- 5. A filed message is the spooled blob and its verdicts: byte-exact ---------------

NESTED = (
    b"From: Erin <erin@sender.example>\r\nTo: dave@filed.example\r\nSubject: parts\r\n"
    b"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <parts@sender.example>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n"
    b"preamble\r\n--outer\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    b"First part, with . a dot\r\n.leading dot line\r\n"
    b"--outer\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=a.bin\r\n"
    b"\r\nAAECAwQFBgcICQ==\r\n"
    b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: inner@sender.example\r\nSubject: inner\r\n\r\nInner body\r\n"
    b"--outer--\r\nepilogue\r\n"
)

SECTIONS = ("RFC822.SIZE BODYSTRUCTURE ENVELOPE", "BODY.PEEK[]", "BODY.PEEK[HEADER]",
            "BODY.PEEK[TEXT]", "BODY.PEEK[1]", "BODY.PEEK[2.MIME]", "BINARY.PEEK[2]",
            "BODY.PEEK[3.HEADER]", "BODY.PEEK[3.TEXT]", "BODY.PEEK[]<0.40>",
            "BODY.PEEK[]<300.150>", "BODY.PEEK[HEADER.FIELDS (X-SPAM-STATUS SUBJECT)]",
            "RFC822.HEADER")


def test_a_filed_message_reads_byte_for_byte_as_if_stored_whole(net):
    mailbox = make_mailbox("dave@filed.example")
    net.send_mx("erin@sender.example", mailbox.address, NESTED)
    row = Message.objects.get(folder__mailbox=mailbox, folder__name="INBOX")
    # Filed from the spooled blob, the verdicts beside it, no second blob.
    assert bytes(row.added_headers).startswith(b"Authentication-Results: ")
    spooled = get_blob_store().read(row.blob_id)
    assert spooled.endswith(NESTED) and spooled.startswith(b"Received: ")
    assert Blob.objects.count() == 1
    (whole,) = stored(mailbox.address)
    at = spooled.index(NESTED)  # below our Received field, as if inserted
    assert whole == spooled[:at] + bytes(row.added_headers) + spooled[at:]
    assert header(whole, "X-Spam-Status")[0].startswith("No, ")

    client = net.imap()
    client.login(mailbox.address, PASSWORD)
    client.create("Copy")
    # The reference: the same bytes appended, so stored whole in one blob.
    assert client.append("Copy", None, None, whole)[0] == "OK"

    def fetched(folder: str) -> list:
        client.select(folder)
        answers = []
        for items in SECTIONS:
            status, data = client.fetch("1", f"({items})")
            assert status == "OK", items
            answers.append(data)
        return answers

    filed_answers, reference = fetched("INBOX"), fetched("Copy")
    assert filed_answers == reference
    assert f"RFC822.SIZE {len(whole)} ".encode() in filed_answers[0][0]
    assert filed_answers[1][0][1] == whole
    client.select("INBOX")
    # SEARCH sees the added fields, through the index and without it.
    assert client.search(None, "HEADER", "X-Spam-Status", "No") == ("OK", [b"1"])
    assert client.search(None, "TEXT", "dmarc=none") == ("OK", [b"1"])
    assert client.search(None, "TEXT", '"Inner body"') == ("OK", [b"1"])
    assert client.search(None, "HEADER", "X-Spam-Status", "dmarc") == ("OK", [b""])
    client.logout()

    pop = net.pop3()
    pop.user(mailbox.address)
    assert pop.pass_(PASSWORD).startswith(b"+OK")
    assert pop.list(1) == f"+OK 1 {len(whole)}".encode()
    _, lines, _ = pop.retr(1)
    assert b"".join(line + b"\r\n" for line in lines) == whole
    _, top_lines, _ = pop.top(1, 0)
    assert b"".join(line + b"\r\n" for line in top_lines) == whole[:whole.index(b"\r\n\r\n") + 4]
    assert pop.quit().startswith(b"+OK")
