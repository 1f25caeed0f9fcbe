"""One exception handler: service errors become API answers with field-level errors."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from mailhost.errors import Conflict, LimitExceeded, MailhostError, NotFound

_STATUS: list[tuple[type[MailhostError], int]] = [
    (NotFound, status.HTTP_404_NOT_FOUND),
    (Conflict, status.HTTP_409_CONFLICT),
    (LimitExceeded, status.HTTP_409_CONFLICT),
]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, IntegrityError):
        # Two requests creating the same address at once: the services check
        # first, and the database's unique constraints settle the race.
        set_rollback()
        return Response({"detail": "the object exists already"}, status=status.HTTP_409_CONFLICT)
    if not isinstance(exc, MailhostError):
        return drf_exception_handler(exc, context)
    code = next((code for cls, code in _STATUS if isinstance(exc, cls)),
                status.HTTP_400_BAD_REQUEST)
    field = exc.context.get("field")
    # The shape of DRF's own validation errors, so that clients handle both alike.
    body = {str(field): [exc.message]} if field else {"detail": exc.message}
    return Response(body, status=code)
