"""The maildrop of one POP3 session: the INBOX as it was at login (RFC 1939 §4:
message numbers and sizes are fixed for the session), with the DELE marks.

Pure state, no I/O: the session fills it from one query and asks it what to
answer; messages are removed from the store only at QUIT (UPDATE state)."""

from __future__ import annotations

from dataclasses import dataclass, field

from apps.pop3.protocol import CommandError, uidl


@dataclass(frozen=True)
class Entry:
    uid: int
    size: int  # octets as RETR sends them (RFC 1939 §11), see protocol.wire_size
    blob_id: str
    # Header fields inserted into the blob at ``added_at`` (apps/store/filed.py).
    added_headers: bytes = b""
    added_at: int = 0


@dataclass
class Maildrop:
    folder_id: int
    uidvalidity: int
    entries: list[Entry]
    leave_copy: bool = False  # DELE + QUIT hides from POP3 instead of removing
    deleted: set[int] = field(default_factory=set)  # message numbers marked by DELE

    def get(self, number: int) -> Entry:
        """The message with this number; RFC 1939 §5: a deleted one may not be used."""
        if not 1 <= number <= len(self.entries):
            raise CommandError(f"no message {number}")
        if number in self.deleted:
            raise CommandError(f"message {number} is deleted")
        return self.entries[number - 1]

    def live(self) -> list[tuple[int, Entry]]:
        return [(n, e) for n, e in enumerate(self.entries, 1) if n not in self.deleted]

    def stat(self) -> tuple[int, int]:
        live = self.live()
        return len(live), sum(e.size for _, e in live)

    def unique_id(self, number: int) -> str:
        return uidl(self.uidvalidity, self.get(number).uid)

    def delete(self, number: int) -> None:
        self.get(number)
        self.deleted.add(number)

    def reset(self) -> None:
        self.deleted.clear()

    def deleted_uids(self) -> list[int]:
        return sorted(self.entries[n - 1].uid for n in self.deleted)
