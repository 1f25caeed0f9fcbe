"""/api/v1/aliases/: aliases, catch-alls and external forwards."""

from apps.directory import services
from apps.directory.models import Alias


def test_alias_catch_all_and_external_forward(as_root, alice):
    response = as_root.post("/api/v1/aliases/", {
        "address": "Team@ours.example",
        "destinations": ["alice@ours.example", "partner@elsewhere.example"]}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["address"] == "team@ours.example" and body["is_catch_all"] is False
    assert body["destinations"] == ["alice@ours.example", "partner@elsewhere.example"]
    resolution = services.resolve("team@ours.example")
    assert [m.address for m in resolution.mailboxes] == ["alice@ours.example"]
    assert resolution.external == ["partner@elsewhere.example"]

    response = as_root.post("/api/v1/aliases/", {
        "address": "@ours.example", "destinations": ["alice@ours.example"]}, format="json")
    assert response.status_code == 201 and response.json()["is_catch_all"] is True
    assert [m.address for m in services.resolve("anything@ours.example").mailboxes] == [
        "alice@ours.example"]


def test_alias_bad_input(as_root, alice):
    cases = [
        ({"address": "x@ours.example", "destinations": []}, 400, "destinations"),
        ({"address": "x@ours.example", "destinations": ["not an address"]}, 400, "destinations"),
        ({"address": "x@ours.example", "destinations": "alice@ours.example"}, 400,
         "destinations"),
        ({"address": "x@nowhere.example", "destinations": ["alice@ours.example"]}, 400,
         "address"),
        ({"address": "alice@ours.example", "destinations": ["b@c.example"]}, 409, "address"),
    ]
    for data, status, field in cases:
        response = as_root.post("/api/v1/aliases/", data, format="json")
        assert response.status_code == status, (data, response.json())
        assert field in response.json(), (data, response.json())
    assert not Alias.objects.exists()


def test_change_and_delete_an_alias(as_admin, alice):
    alias = services.create_alias("team@ours.example", ["alice@ours.example"])
    response = as_admin.patch(f"/api/v1/aliases/{alias.pk}/", {
        "destinations": ["x@elsewhere.example"], "address": "other@ours.example"},
        format="json")
    assert response.status_code == 200
    assert response.json()["address"] == "team@ours.example"
    assert services.resolve("team@ours.example").external == ["x@elsewhere.example"]
    response = as_admin.patch(f"/api/v1/aliases/{alias.pk}/", {"destinations": []},
                              format="json")
    assert response.status_code == 400 and "destinations" in response.json()
    assert as_admin.delete(f"/api/v1/aliases/{alias.pk}/").status_code == 204
    assert not Alias.objects.exists()


def test_domain_admin_is_kept_to_their_domains(as_admin, alice, zed):
    theirs = services.create_alias("sales@theirs.example", ["zed@theirs.example"])
    mine = services.create_alias("info@ours.example", ["alice@ours.example"])
    body = as_admin.get("/api/v1/aliases/").json()
    assert [a["address"] for a in body["results"]] == ["info@ours.example"]
    assert as_admin.get(f"/api/v1/aliases/{theirs.pk}/").status_code == 404
    assert as_admin.patch(f"/api/v1/aliases/{theirs.pk}/", {
        "destinations": ["thief@evil.example"]}, format="json").status_code == 404
    assert as_admin.delete(f"/api/v1/aliases/{theirs.pk}/").status_code == 404
    response = as_admin.post("/api/v1/aliases/", {
        "address": "@theirs.example", "destinations": ["alice@ours.example"]}, format="json")
    assert response.status_code == 403
    theirs.refresh_from_db()
    assert theirs.destinations == ["zed@theirs.example"]
    assert Alias.objects.count() == 2 and mine.pk


def test_filters(as_root, alice, zed):
    services.create_alias("a@ours.example", ["alice@ours.example"])
    services.create_alias("b@theirs.example", ["zed@theirs.example"])
    off = services.create_alias("c@theirs.example", ["zed@theirs.example"])
    services.update_alias(off, active=False)

    def addresses(query: str) -> list[str]:
        return [a["address"] for a in as_root.get(f"/api/v1/aliases/{query}").json()["results"]]

    assert addresses("?domain=theirs.example") == ["b@theirs.example", "c@theirs.example"]
    assert addresses("?active=false") == ["c@theirs.example"]
    assert addresses("?search=b@") == ["b@theirs.example"]
    assert addresses("?ordering=-address") == ["c@theirs.example", "b@theirs.example",
                                                "a@ours.example"]


def test_mailbox_user_gets_no_alias(as_alice, alice):
    alias = services.create_alias("team@ours.example", ["alice@ours.example"])
    assert as_alice.get("/api/v1/aliases/").status_code == 403
    assert as_alice.get(f"/api/v1/aliases/{alias.pk}/").status_code == 403
    assert as_alice.post("/api/v1/aliases/", {
        "address": "me2@ours.example", "destinations": ["alice@ours.example"]},
        format="json").status_code == 403
    assert as_alice.delete(f"/api/v1/aliases/{alias.pk}/").status_code == 403
    assert Alias.objects.count() == 1
