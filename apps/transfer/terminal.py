"""What ``importmail`` and ``exportmail`` share on the terminal: the mailbox
named on the command line and the progress bar."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from django.core.management.base import CommandError
from tqdm import tqdm

from apps.directory.models import Mailbox
from apps.transfer.importing import Progress, ProgressCallback


def hosted_mailbox(address: str) -> Mailbox:
    mailbox = Mailbox.objects.filter(address__iexact=address).first()
    if mailbox is None:
        raise CommandError(f"no mailbox {address}")
    return mailbox


@contextmanager
def progress_bar(stream: TextIO, *, disable: bool = False) -> Iterator[ProgressCallback]:
    """A progress callback drawing messages done of the total, with the bytes
    and their rate beside them."""
    bar = tqdm(unit="msg", file=stream, disable=disable, dynamic_ncols=True)

    def update(state: Progress) -> None:
        bar.total = state.messages_total
        bar.n = state.messages_done
        elapsed = bar.format_dict["elapsed"] or 1e-9
        bar.set_postfix_str(
            f"{tqdm.format_sizeof(state.bytes_done, 'B', 1024)}, "
            f"{tqdm.format_sizeof(state.bytes_done / elapsed, 'B/s', 1024)}", refresh=True)

    try:
        yield update
    finally:
        bar.close()
