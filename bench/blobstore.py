"""The S3 blob store beside the local one, in one run: batched writes (as a
group commit issues them), whole reads from the server and from the read
cache, and 1 KiB ranged reads (IMAP header fetches, POP3 TOP) of blobs not
cached. The S3 server is SeaweedFS (``weed mini``, tests/s3_server.py) on this
machine, so the figures show the cost of the object store's protocol, not of
a network.

    python bench/blobstore.py [--messages 2000] [--batch 16]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def messages(count: int) -> list[bytes]:
    """Mixed sizes, 1 KiB to 64 KiB, most small, as mail is."""
    rng = random.Random(16)
    out = []
    for n in range(count):
        size = int(min(64 * 1024, 1024 * rng.lognormvariate(1.5, 1.0)))
        body = rng.randbytes(size).hex().encode()[:size]
        out.append(b"Subject: bench %d\r\n\r\n" % n + body)
    return out


def rate(count: int, work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    import boto3
    from botocore.config import Config

    from apps.store.blobs import LocalBlobStore, digest
    from apps.store.s3 import Location, ReadCache, S3BlobStore
    from tests import s3_server

    work = Path(tempfile.mkdtemp(prefix="blobbench-"))
    server = s3_server.start(work / "seaweedfs")
    try:
        settings = server.settings()
        client = boto3.session.Session().client(
            "s3", endpoint_url=settings["MAILHOST_S3_ENDPOINT"], region_name="us-east-1",
            aws_access_key_id=settings["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=settings["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=16))
        s3 = S3BlobStore(client, Location.parse(settings["MAILHOST_BLOB_STORE"]),
                         ReadCache(work / "cache", 1 << 30), ThreadPoolExecutor(16))
        local = LocalBlobStore(work / "local")
        data = messages(args.messages)
        names = [digest(message) for message in data]
        batches = [data[i:i + args.batch] for i in range(0, len(data), args.batch)]

        def write(store: object) -> Callable[[], None]:
            return lambda: [store.put_many(batch) for batch in batches]  # type: ignore[attr-defined]

        def read_all(store: object) -> Callable[[], None]:
            return lambda: [store.read(name) for name in names]  # type: ignore[attr-defined]

        def read_headers(store: object) -> Callable[[], None]:
            return lambda: [store.read_range(name, 0, 1024)  # type: ignore[attr-defined]
                            for name in names]

        def read_headers_together(store: object) -> Callable[[], None]:
            """100 at a time, as an IMAP FETCH batch reads them (filed.read_bytes)."""
            reads = [partial(store.read_range, name, 0, 1024)  # type: ignore[attr-defined]
                     for name in names]
            return lambda: [store.read_concurrently(reads[i:i + 100])  # type: ignore[attr-defined]
                            for i in range(0, len(reads), 100)]

        def drop_cache() -> None:
            shutil.rmtree(s3.cache.directory)
            s3.cache.directory.mkdir()

        figures = [(f"write, batches of {args.batch}", rate(len(data), write(local)),
                    rate(len(data), write(s3)))]
        drop_cache()
        figures.append(("1 KiB ranged read, not cached", rate(len(data), read_headers(local)),
                        rate(len(data), read_headers(s3))))
        figures.append(("the same, 100 at a time", rate(len(data), read_headers_together(local)),
                        rate(len(data), read_headers_together(s3))))
        figures.append(("whole read, not cached", rate(len(data), read_all(local)),
                        rate(len(data), read_all(s3))))
        figures.append(("whole read, cached", rate(len(data), read_all(local)),
                        rate(len(data), read_all(s3))))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    size = sum(map(len, data)) / len(data)
    print(f"{args.messages} messages, {size / 1024:.1f} KiB on average; messages/s")
    print(f"{'':32} {'local':>10} {'S3':>10} {'S3/local':>9}")
    for label, local_rate, s3_rate in figures:
        print(f"{label:32} {local_rate:10.0f} {s3_rate:10.0f} {s3_rate / local_rate:9.2f}")


if __name__ == "__main__":
    main()
