"""/api/v1/mailboxes/ with each role."""

from apps.directory import services
from apps.directory.models import Mailbox, User
from apps.store import services as store
from tests.factories import PASSWORD, make_domain, make_mailbox

NEW_PASSWORD = "a brand new secret"


def test_create_mailbox_shape(as_root, ours):
    response = as_root.post("/api/v1/mailboxes/", {
        "address": "Bob@OURS.example", "password": "bob's long secret", "quota": 5_000_000,
    }, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert "password" not in body
    assert body["address"] == "bob@ours.example" and body["domain"] == "ours.example"
    assert body["quota"] == 5_000_000 and body["used_bytes"] == 0 and body["active"] is True
    assert services.authenticate("bob@ours.example", "bob's long secret") is not None


def test_quota_defaults_to_the_domains(as_root):
    domain = make_domain("small.example", default_quota=1234)
    response = as_root.post("/api/v1/mailboxes/", {
        "address": "x@small.example", "password": "long enough pw"}, format="json")
    assert response.json()["quota"] == 1234
    assert Mailbox.objects.get(address="x@small.example").domain == domain


def test_bad_input_answers_with_field_errors(as_root, ours, alice):
    cases = [
        ({"address": "no-at-sign", "password": "long enough pw"}, 400, "address"),
        ({"address": "a b@ours.example", "password": "long enough pw"}, 400, "address"),
        ({"address": "x@unknown.example", "password": "long enough pw"}, 400, "address"),
        ({"address": "x@ours.example", "password": "short"}, 400, "password"),
        ({"address": "x@ours.example", "password": "password"}, 400, "password"),
        ({"address": "x@ours.example", "password": "long enough pw", "quota": -5}, 400, "quota"),
        ({"address": "x@ours.example", "password": "long enough pw", "quota": "big"}, 400,
         "quota"),
        ({"address": "x@ours.example"}, 400, "password"),
        ({"address": "ALICE@ours.example", "password": "long enough pw"}, 409, "address"),
    ]
    for data, status, field in cases:
        response = as_root.post("/api/v1/mailboxes/", data, format="json")
        assert response.status_code == status, (data, response.json())
        assert field in response.json(), (data, response.json())
    assert list(Mailbox.objects.values_list("address", flat=True)) == ["alice@ours.example"]


def test_mailbox_limit_of_the_domain(as_root):
    make_domain("tiny.example", max_mailboxes=1)
    make_mailbox("one@tiny.example")
    response = as_root.post("/api/v1/mailboxes/", {
        "address": "two@tiny.example", "password": "long enough pw"}, format="json")
    assert response.status_code == 409 and "limit" in response.json()["address"][0]


def test_filters_search_and_ordering(as_root, alice, zed):
    make_mailbox("bob@ours.example")
    Mailbox.objects.filter(address="bob@ours.example").update(active=False)

    def addresses(query: str) -> list[str]:
        return [m["address"] for m in as_root.get(f"/api/v1/mailboxes/{query}").json()["results"]]

    assert addresses("") == ["alice@ours.example", "bob@ours.example", "zed@theirs.example"]
    assert addresses("?domain=ours.example") == ["alice@ours.example", "bob@ours.example"]
    assert addresses("?domain=OURS.EXAMPLE&active=true") == ["alice@ours.example"]
    assert addresses("?domain=not a domain") == []
    assert addresses("?search=zed") == ["zed@theirs.example"]
    assert addresses("?ordering=-address")[0] == "zed@theirs.example"


def test_usage_is_shown_per_mailbox(as_root, alice):
    store.deliver([alice], b"Subject: x\r\n\r\n" + b"y" * 500)
    body = as_root.get(f"/api/v1/mailboxes/{alice.pk}/").json()
    assert body["used_bytes"] == 500 + len(b"Subject: x\r\n\r\n")
    assert body["quota"] == alice.quota


def test_domain_admin_manages_their_domains_mailboxes(as_admin, alice):
    response = as_admin.post("/api/v1/mailboxes/", {
        "address": "carol@ours.example", "password": "carol's secret"}, format="json")
    assert response.status_code == 201
    response = as_admin.patch(f"/api/v1/mailboxes/{alice.pk}/",
                              {"quota": 10, "display_name": "Alice A."}, format="json")
    assert response.status_code == 200 and response.json()["quota"] == 10
    assert response.json()["display_name"] == "Alice A."
    carol = Mailbox.objects.get(address="carol@ours.example")
    assert as_admin.delete(f"/api/v1/mailboxes/{carol.pk}/").status_code == 204
    assert not Mailbox.objects.filter(address="carol@ours.example").exists()
    assert not User.objects.filter(email="carol@ours.example").exists()


def test_domain_admin_cannot_reach_another_domains_mailbox(as_admin, alice, zed):
    body = as_admin.get("/api/v1/mailboxes/").json()
    assert [m["address"] for m in body["results"]] == ["alice@ours.example"]
    assert as_admin.get(f"/api/v1/mailboxes/{zed.pk}/").status_code == 404
    response = as_admin.patch(f"/api/v1/mailboxes/{zed.pk}/",
                              {"password": NEW_PASSWORD, "quota": 1}, format="json")
    assert response.status_code == 404
    assert as_admin.delete(f"/api/v1/mailboxes/{zed.pk}/").status_code == 404
    response = as_admin.post("/api/v1/mailboxes/", {
        "address": "evil@theirs.example", "password": "long enough pw"}, format="json")
    assert response.status_code == 403
    zed.refresh_from_db()
    assert zed.quota != 1
    assert services.authenticate("zed@theirs.example", PASSWORD) is not None
    assert not Mailbox.objects.filter(address="evil@theirs.example").exists()


def test_mailbox_user_sees_and_changes_only_themselves(as_alice, alice, zed):
    body = as_alice.get("/api/v1/mailboxes/").json()
    assert [m["address"] for m in body["results"]] == ["alice@ours.example"]
    assert as_alice.get(f"/api/v1/mailboxes/{zed.pk}/").status_code == 404
    assert as_alice.patch(f"/api/v1/mailboxes/{zed.pk}/", {"display_name": "x"},
                          format="json").status_code == 404
    response = as_alice.patch(f"/api/v1/mailboxes/{alice.pk}/",
                              {"display_name": "Alice", "password": NEW_PASSWORD}, format="json")
    assert response.status_code == 200 and response.json()["display_name"] == "Alice"
    assert services.authenticate("alice@ours.example", NEW_PASSWORD) is not None


def test_mailbox_user_cannot_raise_their_own_quota(as_alice, alice):
    quota = alice.quota
    for data in ({"quota": quota * 2}, {"quota": 0}, {"active": False},
                 {"quota": quota * 2, "display_name": "sneaky"}):
        response = as_alice.patch(f"/api/v1/mailboxes/{alice.pk}/", data, format="json")
        assert response.status_code == 403, data
    alice.refresh_from_db()
    assert alice.quota == quota and alice.active and alice.user.display_name == ""


def test_mailbox_user_cannot_create_or_delete(as_alice, alice):
    response = as_alice.post("/api/v1/mailboxes/", {
        "address": "second@ours.example", "password": "long enough pw"}, format="json")
    assert response.status_code == 403
    assert as_alice.delete(f"/api/v1/mailboxes/{alice.pk}/").status_code == 403
    assert Mailbox.objects.filter(domain__name="ours.example").count() == 1


def test_password_change_takes_effect_for_logins_at_once(as_root, alice):
    # Warm authenticate()'s verification cache with the old password first.
    assert services.authenticate("alice@ours.example", PASSWORD, protocol="imap") is not None
    response = as_root.patch(f"/api/v1/mailboxes/{alice.pk}/", {"password": NEW_PASSWORD},
                             format="json")
    assert response.status_code == 200
    assert services.authenticate("alice@ours.example", PASSWORD, protocol="imap") is None
    assert services.authenticate("alice@ours.example", NEW_PASSWORD, protocol="pop3") is not None


def test_a_weak_new_password_changes_nothing(as_root, alice):
    response = as_root.patch(f"/api/v1/mailboxes/{alice.pk}/",
                             {"password": "short", "display_name": "Changed", "quota": 1},
                             format="json")
    assert response.status_code == 400 and "password" in response.json()
    alice.refresh_from_db()
    assert alice.quota != 1 and alice.user.display_name == ""
    assert services.authenticate("alice@ours.example", PASSWORD) is not None


def test_disabling_a_mailbox_stops_its_logins(as_admin, alice):
    response = as_admin.patch(f"/api/v1/mailboxes/{alice.pk}/", {"active": False}, format="json")
    assert response.status_code == 200 and response.json()["active"] is False
    assert services.authenticate("alice@ours.example", PASSWORD) is None
    as_admin.patch(f"/api/v1/mailboxes/{alice.pk}/", {"active": True}, format="json")
    assert services.authenticate("alice@ours.example", PASSWORD) is not None


def test_disabling_a_domain_stops_its_logins(as_root, ours, alice):
    assert as_root.patch(f"/api/v1/domains/{ours.pk}/", {"active": False},
                         format="json").status_code == 200
    assert services.authenticate("alice@ours.example", PASSWORD) is None


def test_mailbox_user_sets_their_own_forwarding(as_alice, alice, zed):
    response = as_alice.patch(f"/api/v1/mailboxes/{alice.pk}/", {
        "forward_to": ["Zed@theirs.example", "me@elsewhere.example"],
        "forward_keep_copy": False}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["forward_to"] == ["zed@theirs.example", "me@elsewhere.example"]
    assert body["forward_keep_copy"] is False
    resolution = services.resolve("alice@ours.example")
    assert [m.address for m in resolution.mailboxes] == ["zed@theirs.example"]
    assert resolution.external == ["me@elsewhere.example"]

    response = as_alice.patch(f"/api/v1/mailboxes/{alice.pk}/",
                              {"forward_to": ["alice@ours.example"]}, format="json")
    assert response.status_code == 400 and "forward_to" in response.json()
    assert as_alice.patch(f"/api/v1/mailboxes/{zed.pk}/", {"forward_to": ["x@y.example"]},
                          format="json").status_code == 404
    zed.refresh_from_db()
    assert zed.forward_to == []
    response = as_alice.patch(f"/api/v1/mailboxes/{alice.pk}/", {"forward_to": []},
                              format="json")
    assert response.json()["forward_to"] == []
    assert [m.address for m in services.resolve("alice@ours.example").mailboxes] == [
        "alice@ours.example"]


def test_a_create_race_lost_to_the_unique_constraint_is_a_conflict(as_root, alice, monkeypatch):
    # As if another request created the address between the check and the insert.
    monkeypatch.setattr(services, "_address_taken", lambda address: False)
    response = as_root.post("/api/v1/mailboxes/", {
        "address": "alice@ours.example", "password": "long enough pw"}, format="json")
    assert response.status_code == 409
    assert Mailbox.objects.filter(address="alice@ours.example").count() == 1
    assert as_root.get("/api/v1/mailboxes/").json()["count"] == 1
