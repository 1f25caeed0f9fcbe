"""Copy every referenced blob from one store to another (``manage.py
migrateblobs``): from the local disk to S3 when a platform grows past one host,
and back.

Resumable: the target's names are listed first and what it already holds is
skipped, so a run stopped anywhere is started again and finishes the rest.
Each blob read from the source is checked against its sha256 before it is
written (and an S3 target checks the bytes it received against it too), so a
damaged source file is reported, never copied.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from apps.store.blobs import BlobStore, digest
from apps.store.models import Blob


@dataclass
class Progress:
    total: int  # blobs the database references
    copied: int = 0
    present: int = 0  # already in the target: skipped
    unreadable: list[str] = field(default_factory=list)  # missing or damaged in the source

    @property
    def done(self) -> int:
        return self.copied + self.present + len(self.unreadable)


def copy_blobs(source: BlobStore, target: BlobStore, *, batch: int = 100) -> Iterator[Progress]:
    """Copy the blobs of ``Blob`` rows that ``target`` lacks; yields the
    progress after each batch (written with one ``put_many``)."""
    present = set(target.files_older_than(-math.inf))  # everything it holds
    progress = Progress(total=Blob.objects.count())
    after = ""
    while True:
        names = list(Blob.objects.filter(sha256__gt=after).order_by("sha256")
                     .values_list("sha256", flat=True)[:batch])
        if not names:
            return
        after = names[-1]
        datas = []
        for name in names:
            if name in present:
                progress.present += 1
                continue
            try:
                data = source.read(name)
            except OSError:
                data = b""
            if digest(data) != name:
                progress.unreadable.append(name)
                continue
            datas.append(data)
        if datas:
            target.put_many(datas)
            progress.copied += len(datas)
        yield progress
