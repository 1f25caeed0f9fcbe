"""The spool's group commit: one batch, one answer per message."""

import pytest

from apps.antispam import services
from apps.antispam.models import SpooledMessage
from apps.store.blobs import get_blob_store
from mailhost.errors import OverQuota
from tests.antispam.conftest import message
from tests.factories import make_mailbox

pytestmark = pytest.mark.django_db(transaction=True)


def request(mailboxes, body: str, queue_id: str) -> services.SpoolRequest:
    facts = services.SmtpFacts(client_ip="192.0.2.10", helo="mx.sender.example",
                               mail_from="alice@sender.example", spf=None, queue_id=queue_id)
    return services.SpoolRequest(message(body=body), [m.pk for m in mailboxes], facts)


def test_a_batch_refuses_only_the_messages_a_mailbox_has_no_room_for(zone):
    tiny = make_mailbox("tiny@example.org", quota=3000)
    bob = make_mailbox("bob@example.org")
    batch = [request([tiny], "x" * 5000, "BIG2TINY"), request([tiny], "small", "SMALL2TINY"),
             request([bob], "x" * 5000, "BIG2BOB"), request([bob, tiny], "y" * 5000, "BIG2BOTH")]

    results = services.spool_batch(batch)

    assert [type(r) for r in results] == [OverQuota, int, int, OverQuota]
    assert "tiny@example.org" in str(results[0]) and "bob" not in str(results[3])
    rows = {row.queue_id: row for row in SpooledMessage.objects.all()}
    assert set(rows) == {"SMALL2TINY", "BIG2BOB"}
    assert [rows["SMALL2TINY"].pk, rows["BIG2BOB"].pk] == results[1:3]
    for row, sent in [(rows["SMALL2TINY"], batch[1]), (rows["BIG2BOB"], batch[2])]:
        assert get_blob_store().read(row.blob_id) == sent.data  # durable with its row
