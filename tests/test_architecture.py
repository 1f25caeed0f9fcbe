"""DESIGN.md's import direction, checked: directory <- store <- (protocols,
delivery, antispam) <- (api, webadmin, webmail, mailservers)."""

import ast
from pathlib import Path

import pytest

APPS = Path(__file__).resolve().parent.parent / "apps"

LAYER = {
    "directory": 0,
    "store": 1,
    "smtp": 2, "imap": 2, "pop3": 2, "delivery": 2, "antispam": 2, "sieve": 2,
    "certificates": 2, "transfer": 2,
    "api": 3, "web": 3, "webadmin": 3, "webmail": 3, "mailservers": 3,
}
# Protocols and workers are peers; these peer imports are part of the design
# (SMTP submission hands remote mail to the outbound queue and inbound mail to
# the checks; delivery drops local bounces through SMTP's code paths).
# The admin panel and the webmail share the web shell (sign-in, layout, guards).
ALLOWED_PEERS = {("smtp", "delivery"), ("smtp", "antispam"), ("delivery", "smtp"),
                 ("antispam", "delivery"), ("webadmin", "web"), ("webmail", "web"),
                 # Every delivery path files through the recipients' Sieve
                 # scripts (apps/delivery/filing.py).
                 ("delivery", "sieve")}


def imported_apps(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "apps" and len(parts) > 1:
                names.add(parts[1])
    return names


def app_files():
    for path in sorted(APPS.rglob("*.py")):
        app = path.relative_to(APPS).parts[0]
        if app in LAYER and "migrations" not in path.parts:
            yield app, path


def test_every_app_has_a_layer():
    apps = {p.name for p in APPS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert apps <= set(LAYER), f"add {apps - set(LAYER)} to LAYER (and to DESIGN.md)"


@pytest.mark.parametrize(("app", "path"), list(app_files()),
                         ids=lambda v: str(v.relative_to(APPS)) if isinstance(v, Path) else v)
def test_imports_point_one_way(app, path):
    for target in imported_apps(path) - {app}:
        upward = LAYER[target] > LAYER[app]
        sideways = LAYER[target] == LAYER[app] and (app, target) not in ALLOWED_PEERS
        assert not (upward or sideways), f"{path.relative_to(APPS)} imports apps.{target}"


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from apps.api import views\nimport apps.store.services\n")
    assert imported_apps(bad) == {"api", "store"}
