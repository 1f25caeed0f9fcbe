"""The progress bar of ``importmail`` and ``exportmail`` on the terminal."""

from __future__ import annotations

from typing import TextIO

from tqdm import tqdm

from apps.transfer.importing import Progress, ProgressCallback


class ProgressBar:
    """Messages done of the total, and the bytes and their rate beside them."""

    def __init__(self, stream: TextIO, *, disable: bool = False) -> None:
        self.bar = tqdm(unit="msg", file=stream, disable=disable, dynamic_ncols=True)

    def update(self, state: Progress) -> None:
        self.bar.total = state.messages_total
        self.bar.n = state.messages_done
        elapsed = self.bar.format_dict["elapsed"] or 1e-9
        self.bar.set_postfix_str(
            f"{tqdm.format_sizeof(state.bytes_done, 'B', 1024)}, "
            f"{tqdm.format_sizeof(state.bytes_done / elapsed, 'B/s', 1024)}", refresh=True)

    def close(self) -> None:
        self.bar.close()

    @property
    def callback(self) -> ProgressCallback:
        return self.update
