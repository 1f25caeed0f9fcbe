"""The spool and the check task: verdict headers, INBOX or Junk, never lost."""

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.antispam import bayes, learning, services
from apps.antispam.auth import SpfResult
from apps.antispam.models import SpooledMessage
from apps.directory.services import update_domain, update_mailbox
from apps.imap.parser import SearchKey
from apps.imap.search import search_folder
from apps.store import services as store
from apps.store import tasks as store_tasks
from apps.store import textindex
from apps.store.blobs import get_blob_store
from apps.store.models import Blob, BlobText, Folder, Message
from mailhost.errors import OverQuota
from tests.antispam.conftest import message
from tests.factories import make_mailbox
from tests.smtp.helpers import stored

RECEIVED = b"Received: from mx.sender.example ([192.0.2.10]) by mx.test; Thu, 26 Nov 2026\r\n"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def bob(zone):
    return make_mailbox("bob@example.org")


def spool(mailboxes, data, *, spf="none", mail_from="alice@sender.example") -> int:
    facts = services.SmtpFacts(
        client_ip="192.0.2.10", helo="mx.sender.example", mail_from=mail_from,
        spf=SpfResult(spf, "", mail_from.rpartition("@")[2]))
    return services.spool_message(RECEIVED + data, [m.pk for m in mailboxes], facts)


def header_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def test_clean_message_lands_in_inbox_with_the_verdict_headers(settings, bob, zone,
                                                               dkim_signer):
    settings.MAILHOST_HOSTNAME = "mx.test"
    zone.add("_dmarc.sender.example", "TXT", "v=DMARC1; p=reject")
    data = dkim_signer("sender.example").sign(message())
    pk = spool([bob], data, spf="pass")
    assert services.file_spooled(pk)
    (got,) = stored("bob@example.org")
    head = header_block(got)
    assert head.startswith(RECEIVED + b"Authentication-Results: mx.test;")
    assert b"spf=pass smtp.mailfrom=alice@sender.example" in head
    assert b"dkim=pass header.d=sender.example header.s=test" in head
    assert b"dmarc=pass header.from=sender.example" in head
    assert b"X-Spam-Status: No, score=0.0 required=9.0 tests=BAYES_UNTRAINED\r\n" in head
    assert got.endswith(data)
    assert not SpooledMessage.objects.exists()
    # Filed as spooled: one blob, no second copy with the verdicts.
    assert list(Blob.objects.values_list("sha256", flat=True)) == [
        hashlib.sha256(RECEIVED + data).hexdigest()]
    # Filing is idempotent: a second run (a redelivered task) does nothing.
    assert not services.file_spooled(pk)
    assert len(stored("bob@example.org")) == 1


def test_dmarc_reject_failure_never_reaches_inbox(bob, zone):
    zone.add("_dmarc.bank.example", "TXT", "v=DMARC1; p=reject")
    pk = spool([bob], message("security@bank.example"), spf="fail",
               mail_from="x@phish.example")
    services.file_spooled(pk)
    assert stored("bob@example.org") == []
    (got,) = stored("bob@example.org", "Junk")
    assert b"dmarc=fail header.from=bank.example policy.dmarc=reject" in got
    assert b"X-Spam-Status: Yes," in got and b"DMARC_FAIL" in got


def test_dmarc_reject_failure_for_a_mailbox_without_junk_gets_a_junk_folder(bob, zone):
    """The user deleted Junk: a DMARC reject failure must still stay out of
    INBOX, so the \\Junk folder comes back (ordinary spam without one
    still falls back to INBOX)."""
    store.delete_folder(bob, "Junk")
    zone.add("_dmarc.bank.example", "TXT", "v=DMARC1; p=reject")
    services.file_spooled(spool([bob], message("security@bank.example"), spf="fail",
                                mail_from="x@phish.example"))
    assert stored("bob@example.org") == []
    (got,) = stored("bob@example.org", "Junk")
    assert b"dmarc=fail header.from=bank.example policy.dmarc=reject" in got
    assert Folder.objects.get(mailbox=bob, name="Junk").special_use == "\\Junk"


def test_forged_results_from_the_sender_are_removed(settings, bob):
    settings.MAILHOST_HOSTNAME = "mx.test"
    forged = message(extra="Authentication-Results: mx.test; dmarc=pass\r\n"
                           "Authentication-Results: other.example; spf=pass\r\n"
                           "X-Spam-Status: No, trust me\r\n")
    services.file_spooled(spool([bob], forged))
    (got,) = stored("bob@example.org")
    assert b"trust me" not in got and b"mx.test; dmarc=pass" not in got
    assert b"Authentication-Results: other.example; spf=pass" in got  # not ours to judge
    assert got.count(b"X-Spam-Status:") == 1


def test_header_problems_and_forged_local_sender_are_scored(bob):
    data = (b"From: boss@example.org\r\nSubject: urgent\r\n\r\nPay this invoice.\r\n")
    services.file_spooled(spool([bob], data, spf="softfail"))
    (got,) = stored("bob@example.org")
    status = next(line for line in got.split(b"\r\n") if line.startswith(b"X-Spam-Status"))
    for test in (b"MISSING_DATE", b"MISSING_MESSAGE_ID", b"SPF_SOFTFAIL",
                 b"FORGED_LOCAL_SENDER"):
        assert test in status
    assert b"score=6.0" in status


def trained_global_model():
    model = learning.global_model()
    spam = [message(subject=f"Cheap pills {i}", body="Buy cheap pills viagra now online")
            for i in range(10)]
    ham = [message(subject=f"Minutes {i}", body="The meeting agenda for Thursday's review")
           for i in range(10)]
    for batch, is_spam in ((spam, True), (ham, False)):
        learning.train(model, [learning.LabelledMessage(hashlib.sha256(m).hexdigest(), frozenset(
            bayes.tokenize(m))) for m in batch], is_spam=is_spam)


def test_classifier_files_spam_into_junk_by_each_mailboxs_threshold(bob):
    trained_global_model()
    lenient = make_mailbox("carol@example.org")
    lenient.spam_threshold = 20.0
    lenient.save()
    spam = message(subject="Cheap pills", body="Buy cheap viagra pills online now")
    services.file_spooled(spool([bob, lenient], spam))
    (junk,) = stored("bob@example.org", "Junk")
    assert b"X-Spam-Status: Yes, score=10.0 required=9.0 tests=BAYES_99" in junk
    (kept,) = stored("carol@example.org")
    assert b"X-Spam-Status: No, score=10.0 required=20.0" in kept
    ham = message(subject="Minutes", body="The agenda for the review meeting")
    services.file_spooled(spool([bob], ham))
    (inbox,) = stored("bob@example.org")
    assert b"X-Spam-Status: No, score=0.0" in inbox


def test_domain_threshold_sits_between_the_mailboxs_own_and_the_site_default(bob):
    trained_global_model()
    own = make_mailbox("dan@lenient.example")
    by_domain = make_mailbox("erin@lenient.example")
    update_domain(own.domain, spam_threshold=20.0)
    update_mailbox(own, spam_threshold=5.0)
    spam = message(subject="Cheap pills", body="Buy cheap viagra pills online now")
    services.file_spooled(spool([bob, own, by_domain], spam))
    assert b"required=9.0" in stored("bob@example.org", "Junk")[0]  # the site default
    assert b"required=5.0" in stored("dan@lenient.example", "Junk")[0]  # its own
    (kept,) = stored("erin@lenient.example")  # its domain's
    assert b"X-Spam-Status: No, score=10.0 required=20.0" in kept


def test_slow_checks_give_way_and_the_message_is_delivered_unfiled(settings, bob, zone):
    settings.MAILHOST_ANTISPAM_TIMEOUT = 0  # any check is too slow
    data = message()
    services.file_spooled(spool([bob], data))
    (got,) = stored("bob@example.org")
    assert got == RECEIVED + data  # no verdict: the bytes as accepted


def test_failing_checks_deliver_unfiled(bob, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("classifier exploded")

    monkeypatch.setattr(learning, "classify_tokens", broken)
    data = message()
    services.file_spooled(spool([bob], data))
    assert stored("bob@example.org") == [RECEIVED + data]


def test_unchecked_mail_loses_the_senders_verdict_fields_too(bob):
    forged = message(extra="X-Spam-Status: Yes, score=99.0 tests=FORGED_LOCAL_SENDER\r\n"
                           "X-Spam-Clues: viagra=0.99\r\n")
    old = spool([bob], forged)
    SpooledMessage.objects.filter(pk=old).update(
        received=timezone.now() - timedelta(minutes=5))
    assert services.sweep_spool() == 1  # filed without the checks
    (got,) = stored("bob@example.org")
    assert b"X-Spam-" not in got and b"Subject:" in got


def test_sweeper_delivers_what_no_worker_filed_and_the_spool_blob_is_kept_while_filed(bob):
    fresh = spool([bob], message(subject="fresh"))
    old = spool([bob], message(subject="old"))
    SpooledMessage.objects.filter(pk=old).update(
        received=timezone.now() - timedelta(minutes=5))
    # A claim by a worker that died has expired too.
    SpooledMessage.objects.filter(pk=fresh).update(
        claimed_until=timezone.now() + timedelta(minutes=1))
    assert services.sweep_spool() == 1
    (got,) = stored("bob@example.org")
    assert b"Subject: old" in got
    assert list(SpooledMessage.objects.values_list("pk", flat=True)) == [fresh]

    SpooledMessage.objects.filter(pk=fresh).update(claimed_until=None)
    spool_blob = SpooledMessage.objects.get(pk=fresh).blob_id
    services.file_spooled(fresh)
    # The filed message is the spooled blob with the verdicts before it: the
    # collector keeps the blob while the message is there...
    store.collect_garbage(0)
    (old_got, fresh_got) = stored("bob@example.org")
    assert b"Subject: fresh" in fresh_got and b"X-Spam-Status: " in fresh_got
    assert b"Subject: old" in old_got
    # ...and takes it, row and file, once the message is gone.
    inbox = Folder.objects.get(mailbox=bob, name="INBOX")
    store.remove(inbox, list(Message.objects.filter(folder=inbox, blob_id=spool_blob)
                             .values_list("uid", flat=True)))
    assert store.collect_garbage(0) >= 1
    assert not Blob.objects.filter(pk=spool_blob).exists()
    assert not get_blob_store().exists(spool_blob)
    assert stored("bob@example.org") == [old_got]


def test_over_quota_recipient_is_refused_before_spooling(zone):
    tiny = make_mailbox("tiny@example.org", quota=100)
    with pytest.raises(OverQuota):
        spool([tiny], message(body="x" * 500))
    assert not SpooledMessage.objects.exists()


def test_spam_goes_to_the_folder_marked_junk_whatever_its_name(bob, zone):
    zone.add("_dmarc.bank.example", "TXT", "v=DMARC1; p=quarantine")
    store.list_folders(bob)
    Folder.objects.filter(mailbox=bob, name="Junk").update(name="Spam")
    services.file_spooled(spool([bob], message("security@bank.example"), spf="fail"))
    assert len(stored("bob@example.org", "Spam")) == 1
    assert stored("bob@example.org") == []


def test_one_call_files_every_waiting_message_but_those_another_worker_holds(bob):
    pks = [spool([bob], message(subject=f"batch {n}")) for n in range(5)]
    held = pks[2]
    SpooledMessage.objects.filter(pk=held).update(
        claimed_until=timezone.now() + timedelta(minutes=1))
    assert services.file_waiting(pks[:1]) == 4
    subjects = [header_block(got).split(b"Subject: ")[1].split(b"\r\n")[0]
                for got in stored("bob@example.org")]
    assert subjects == [b"batch 0", b"batch 1", b"batch 3", b"batch 4"]
    assert list(SpooledMessage.objects.values_list("pk", flat=True)) == [held]
    assert services.file_waiting([held]) == 0  # still held: left for its worker


def test_a_message_filed_unchecked_is_parsed_and_searchable(bob, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # a worker takes the index task at once
    pk = spool([bob], message(subject="unchecked quokka", body="a wombat said hi"))
    assert services.file_spooled(pk, checks=False)
    inbox = Folder.objects.get(mailbox=bob, name="INBOX")
    (filed,) = Message.objects.filter(folder=inbox).select_related("blob")
    assert filed.blob.subject == "unchecked quokka"
    assert filed.blob.envelope[1] == "unchecked quokka"
    assert textindex.lookup(inbox.pk, ["body"], "wombat").hits == {filed.uid}


def test_a_filed_message_is_found_before_its_index_row_is_written(bob, settings):
    """The index row is written after the filing commits, by a task: a search
    in between reads the message, and a task lost with its worker is made
    good by the periodic sweep."""
    settings.CELERY_TASK_ALWAYS_EAGER = False  # no worker: the index task waits
    for number, pk in enumerate([
            spool([bob], message(subject="first", body="a wombat said hi")),
            spool([bob], message(subject="second", body="a quokka said hi"))], start=1):
        assert services.file_spooled(pk) if number == 1 else services.file_spooled(
            pk, checks=False)
    inbox = Folder.objects.get(mailbox=bob, name="INBOX")
    assert not BlobText.objects.exists()
    assert textindex.lookup(inbox.pk, ["body"], "wombat") == textindex.Lookup(set(), {1, 2})
    assert search_folder(inbox.pk, SearchKey("BODY", ("wombat",))) == [1]
    assert search_folder(inbox.pk, SearchKey("SUBJECT", ("second",))) == [2]

    assert store_tasks.index_unindexed() == 2
    assert textindex.lookup(inbox.pk, ["body"], "wombat") == textindex.Lookup({1}, set())
    assert search_folder(inbox.pk, SearchKey("BODY", ("quokka",))) == [2]


def test_slow_checks_file_what_is_checked_and_give_the_rest_back(bob, monkeypatch):
    monkeypatch.setattr(services, "_BATCH_CHECK_SECONDS", 0)  # every check is "slow"
    pks = [spool([bob], message(subject=f"slow {n}")) for n in range(3)]
    assert services.file_spooled_batch(pks, fill_to=3) == pks[:1]
    assert list(SpooledMessage.objects.filter(claimed_until__isnull=True)
                .values_list("pk", flat=True)) == pks[1:]
    assert services.file_waiting([]) == 2
    assert len(stored("bob@example.org")) == 3
