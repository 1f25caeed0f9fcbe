"""The embedded default's Celery broker: kombu's filesystem transport, with
each task message written whole before any worker can see it.

kombu's own ``_put`` creates the message file under its final name and then
writes into it; a worker polling the folder in between moves and reads an
empty file and dies on the JSON decode ("Unrecoverable error:
JSONDecodeError"), and stays dead until restarted. Here the bytes go to a
name no worker takes (kombu takes only ``*.{queue}.msg``) and are renamed to
the final name, which is atomic within the folder."""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # The name kombu gives it: the millisecond first, so workers take
        # messages in the order they were sent.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb", buffering=0) as out:
                out.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
