"""Whether a login is accepted, asked the way mail programs ask: imaplib,
poplib and smtplib against the listeners of a ServerThread."""

from __future__ import annotations

import imaplib
import poplib
import smtplib

from tests.conftest import ServerThread


def imap_login(servers: ServerThread, login: str, secret: str) -> bool:
    with imaplib.IMAP4("127.0.0.1", servers.port("imap")) as client:
        try:
            client.login(login, secret)
        except imaplib.IMAP4.error:
            return False
        return True


def pop3_login(servers: ServerThread, login: str, secret: str) -> bool:
    client = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=10)
    try:
        client.user(login)
        client.pass_(secret)
    except poplib.error_proto:
        return False
    finally:
        client.quit()
    return True


def smtp_login(servers: ServerThread, login: str, secret: str) -> bool:
    with smtplib.SMTP("127.0.0.1", servers.port("submission"), timeout=10) as client:
        client.ehlo()
        try:
            client.login(login, secret)
        except smtplib.SMTPAuthenticationError:
            return False
        return True
