"""Typed readers for settings that come from the environment.

Each helper fails loudly on a malformed value instead of guessing, and the
``NAME_FILE`` form lets secrets come from a file (healthchecks does the same).
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        return Path(file_name).read_text().strip()
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    raw = env_str(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name, "").strip().lower()
    if raw == "" and name not in os.environ:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = env_str(name, "")
    if not raw:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_port(name: str, default: int) -> int:
    port = env_int(name, default)
    if not 0 <= port <= 65535:
        raise ImproperlyConfigured(f"{name}={port} is not a TCP port (0 picks a free one)")
    return port
