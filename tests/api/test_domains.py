"""/api/v1/domains/ with each role."""

import re

from django.test import override_settings

from apps.directory.models import Domain
from tests.factories import make_mailbox


def test_superadmin_creates_a_domain_from_its_name(as_root):
    response = as_root.post("/api/v1/domains/", {"name": "Bücher.Example"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "xn--bcher-kva.example"
    assert body["unicode_name"] == "bücher.example"
    assert body["active"] is True and body["mailbox_count"] == 0 and body["used_bytes"] == 0
    assert Domain.objects.filter(name="xn--bcher-kva.example").exists()


def test_bad_and_duplicate_domain_names_are_field_errors(as_root, ours):
    response = as_root.post("/api/v1/domains/", {"name": "no_such thing"}, format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["name"]
    response = as_root.post("/api/v1/domains/", {"name": "OURS.example."}, format="json")
    assert response.status_code == 409
    assert "exists" in response.json()["name"][0]
    response = as_root.post("/api/v1/domains/", {"name": "x.example", "default_quota": -1},
                            format="json")
    assert response.status_code == 400 and "default_quota" in response.json()
    assert not Domain.objects.filter(name="x.example").exists()


def test_list_is_paginated_and_filterable(as_root, ours, theirs):
    Domain.objects.filter(pk=theirs.pk).update(active=False)
    body = as_root.get("/api/v1/domains/").json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert [d["name"] for d in body["results"]] == ["ours.example", "theirs.example"]
    body = as_root.get("/api/v1/domains/?active=false").json()
    assert [d["name"] for d in body["results"]] == ["theirs.example"]
    body = as_root.get("/api/v1/domains/?search=thei").json()
    assert [d["name"] for d in body["results"]] == ["theirs.example"]
    body = as_root.get("/api/v1/domains/?ordering=-name&page_size=1").json()
    assert body["count"] == 2 and [d["name"] for d in body["results"]] == ["theirs.example"]
    assert "page=2" in body["next"]


def test_superadmin_changes_limits_and_disables(as_root, ours):
    response = as_root.patch(f"/api/v1/domains/{ours.pk}/",
                             {"active": False, "max_mailboxes": 3, "name": "renamed.example"},
                             format="json")
    assert response.status_code == 200
    ours.refresh_from_db()
    assert (ours.active, ours.max_mailboxes, ours.name) == (False, 3, "ours.example")


def test_a_domain_with_mailboxes_is_not_deleted(as_root, ours, alice, theirs):
    response = as_root.delete(f"/api/v1/domains/{ours.pk}/")
    assert response.status_code == 409 and "mailboxes" in response.json()["name"][0]
    assert Domain.objects.filter(pk=ours.pk).exists()
    assert as_root.delete(f"/api/v1/domains/{theirs.pk}/").status_code == 204
    assert not Domain.objects.filter(pk=theirs.pk).exists()


def test_domain_admin_sees_only_their_domains_and_changes_none(as_admin, ours, theirs):
    body = as_admin.get("/api/v1/domains/").json()
    assert [d["name"] for d in body["results"]] == ["ours.example"]
    assert as_admin.get(f"/api/v1/domains/{theirs.pk}/").status_code == 404
    assert as_admin.get(f"/api/v1/domains/{ours.pk}/").status_code == 200
    for response in (
        as_admin.post("/api/v1/domains/", {"name": "new.example"}, format="json"),
        as_admin.patch(f"/api/v1/domains/{ours.pk}/", {"max_mailboxes": 0}, format="json"),
        as_admin.patch(f"/api/v1/domains/{theirs.pk}/", {"active": False}, format="json"),
        as_admin.delete(f"/api/v1/domains/{theirs.pk}/"),
    ):
        assert response.status_code in (403, 404)
    assert not Domain.objects.filter(name="new.example").exists()
    assert Domain.objects.filter(name="theirs.example", active=True).exists()


def test_mailbox_user_sees_no_domain(as_alice, ours):
    assert as_alice.get("/api/v1/domains/").json()["count"] == 0
    assert as_alice.get(f"/api/v1/domains/{ours.pk}/").status_code == 404
    assert as_alice.get(f"/api/v1/domains/{ours.pk}/dns_records/").status_code == 404
    response = as_alice.post("/api/v1/domains/", {"name": "mine.example"}, format="json")
    assert response.status_code == 403
    assert not Domain.objects.filter(name="mine.example").exists()


def test_without_credentials_401_and_with_a_wrong_token_401(client, ours):
    response = client.get("/api/v1/domains/")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    response = client.get("/api/v1/domains/", HTTP_AUTHORIZATION="Token mh_not-a-key")
    assert response.status_code == 401


def test_domain_quota_shows_mailbox_count_and_usage(as_root, ours, alice):
    from apps.store import services as store

    make_mailbox("bob@ours.example")
    store.deliver([alice], b"Subject: hi\r\n\r\n" + b"x" * 1000)
    body = as_root.get(f"/api/v1/domains/{ours.pk}/").json()
    assert body["mailbox_count"] == 2
    assert body["used_bytes"] == 1000 + len(b"Subject: hi\r\n\r\n")


@override_settings(MAILHOST_HOSTNAME="mx.provider.example",
                   MAILHOST_PUBLIC_HOSTNAME="mail.provider.example")
def test_dns_records_of_a_domain(as_admin, ours, theirs):
    response = as_admin.get(f"/api/v1/domains/{ours.pk}/dns_records/")
    assert response.status_code == 200
    records = {(r["type"], r["name"]): r for r in response.json()}
    assert records[("MX", "ours.example")]["value"] == "mx.provider.example"
    assert records[("MX", "ours.example")]["priority"] == 10
    assert records[("TXT", "ours.example")]["value"] == "v=spf1 mx -all"
    assert records[("TXT", "_dmarc.ours.example")]["value"].startswith("v=DMARC1; p=")
    # RFC 6376 §3.6.1 and RFC 8463 §4: one key record per selector, RSA and Ed25519.
    for key in ours.dkim_keys.all():
        key_type = {"rsa-sha256": "rsa", "ed25519-sha256": "ed25519"}[key.algorithm]
        record = records[("TXT", f"{key.selector}._domainkey.ours.example")]
        assert record["value"] == f"v=DKIM1; k={key_type}; p={key.public_key}"
        assert record["priority"] is None and key.selector in record["purpose"]
    # RFC 6186 / RFC 8314 §5.1: mail programs find the public host and standard ports.
    srv = {name: (r["priority"], r["value"]) for (kind, name), r in records.items()
           if kind == "SRV"}
    assert srv == {f"_{service}._tcp.ours.example": (0, f"1 {port} mail.provider.example")
                   for service, port in (("submissions", 465), ("submission", 587),
                                         ("imaps", 993), ("imap", 143), ("pop3s", 995),
                                         ("autodiscover", 443))}
    for name in ("autoconfig", "autodiscover", "mta-sts"):
        assert records[("CNAME", f"{name}.ours.example")]["value"] == "mail.provider.example"
    assert re.fullmatch(r"v=STSv1; id=[0-9a-f]{32}",
                        records[("TXT", "_mta-sts.ours.example")]["value"])
    assert records[("TXT", "_smtp._tls.ours.example")]["value"] == (
        "v=TLSRPTv1; rua=mailto:postmaster@ours.example")
    assert len(records) == 5 + 11
    assert as_admin.get(f"/api/v1/domains/{theirs.pk}/dns_records/").status_code == 404


def test_domain_detail_shows_the_public_dkim_keys(as_admin, ours):
    body = as_admin.get(f"/api/v1/domains/{ours.pk}/").json()
    keys = {k["algorithm"]: k for k in body["dkim_keys"]}
    assert set(keys) == {"rsa-sha256", "ed25519-sha256"}
    for key in ours.dkim_keys.all():
        shown = keys[key.algorithm]
        assert (shown["selector"], shown["public_key"], shown["active"]) == (
            key.selector, key.public_key, True)
        assert set(shown) == {"selector", "algorithm", "public_key", "active", "created"}
    # Lists stay lean (a constant number of queries): the keys are in the detail only.
    listed = as_admin.get("/api/v1/domains/").json()["results"]
    assert "dkim_keys" not in listed[0]


def test_no_api_answer_shows_a_dkim_private_key(as_root, ours, client):
    created = as_root.post("/api/v1/domains/", {"name": "new.example"}, format="json")
    new = Domain.objects.get(name="new.example")
    answers = [
        created,
        as_root.get("/api/v1/domains/"),
        as_root.get(f"/api/v1/domains/{ours.pk}/"),
        as_root.get(f"/api/v1/domains/{new.pk}/dns_records/"),
        as_root.get(f"/api/v1/domains/{ours.pk}/dns_records/"),
        as_root.patch(f"/api/v1/domains/{ours.pk}/", {"max_mailboxes": 5}, format="json"),
        client.get("/api/schema/"),
    ]
    secrets = [key.private_key for domain in (ours, new) for key in domain.dkim_keys.all()]
    assert len(secrets) == 4
    for response in answers:
        assert response.status_code in (200, 201), response.content
        text = response.content.decode()
        assert "private_key" not in text
        # The PEM's base64 body (RSA) and the seed (Ed25519), without the armour.
        for secret in secrets:
            body = "".join(line for line in secret.splitlines() if "-----" not in line)
            assert body[:40] not in text


def test_greylisting_and_spam_threshold_as_in_the_panel(client_for, superadmin):
    client = client_for(superadmin)
    created = client.post("/api/v1/domains/", {"name": "grey.example", "greylisting": True,
                                               "spam_threshold": 7.5}, format="json").json()
    assert (created["greylisting"], created["spam_threshold"]) == (True, 7.5)
    url = f"/api/v1/domains/{created['id']}/"
    assert client.patch(url, {"greylisting": False}, format="json").json()["spam_threshold"] == 7.5
    assert client.patch(url, {"spam_threshold": None}, format="json").json()[
        "spam_threshold"] is None
    bad = client.patch(url, {"spam_threshold": 0}, format="json")
    assert bad.status_code == 400 and "spam_threshold" in bad.json()
