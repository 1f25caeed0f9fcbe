"""The one error base of Mailhost.

Services raise a ``MailhostError`` subclass; each front end maps it to its own
answer: SMTP replies use ``smtp_code``/``enhanced``, the API maps ``code`` to a
status, IMAP and POP3 turn it into NO / -ERR with the same text.
"""

from __future__ import annotations


class MailhostError(Exception):
    code = "error"
    smtp_code = 451
    enhanced = "4.3.0"
    #: True when the client caused it (bad input, over quota); False for server faults.
    user_fault = True

    def __init__(self, message: str = "", **context: object) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.context = context

    def smtp_reply(self) -> str:
        return f"{self.smtp_code} {self.enhanced} {self.message}"


class NotFound(MailhostError):
    """No such object."""

    code = "not_found"
    smtp_code = 550
    enhanced = "5.1.1"


class Invalid(MailhostError):
    """The input is not valid."""

    code = "invalid"
    smtp_code = 501
    enhanced = "5.5.4"


class Conflict(MailhostError):
    """The object exists already."""

    code = "conflict"
    smtp_code = 550
    enhanced = "5.1.0"


class LimitExceeded(MailhostError):
    """A configured limit was reached."""

    code = "limit_exceeded"
    smtp_code = 452
    enhanced = "4.5.3"


class OverQuota(MailhostError):
    """The mailbox is over its quota."""

    code = "over_quota"
    smtp_code = 452
    enhanced = "4.2.2"


class Disabled(MailhostError):
    """The mailbox or domain is disabled."""

    code = "disabled"
    smtp_code = 550
    enhanced = "5.2.1"
