"""One interface for the landing zone and the warehouse: a local folder or an S3 prefix.

Keys are always relative POSIX paths. A key that is absolute or climbs with ``..``
is refused, so a name taken from an export can never reach outside its root.
Writes are atomic: a reader sees the old object or the whole new one, never a
half-written file.
"""

from __future__ import annotations

import mmap
import os
import posixpath
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq


class PathEscapeError(ValueError):
    """A key that would leave the store's root."""


class StorageUnavailableError(OSError):
    """The store could not be reached, after the client's bounded retries with backoff."""


def safe_key(key: str) -> str:
    """Normalize a relative key and refuse anything that escapes the root."""
    if not key or "\x00" in key:
        raise PathEscapeError(f"invalid path {key!r}")
    posix = key.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        raise PathEscapeError(f"absolute path {key!r} is not allowed")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise PathEscapeError(f"path {key!r} points outside the root")
    if not parts:
        raise PathEscapeError(f"invalid path {key!r}")
    return "/".join(parts)


@dataclass(frozen=True)
class FileInfo:
    """What a listing knows of a file without reading it: enough to refuse or defer it."""

    size: int
    modified: float  # seconds since the epoch (local mtime, S3 LastModified)


class Store(Protocol):
    """What the pipeline needs from storage, whatever the backend."""

    @property
    def url(self) -> str: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def stat(self, prefix: str = "") -> dict[str, FileInfo]:
        """Every key below ``prefix`` with its size and modification time, from one listing."""
        ...

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def read_bytes(self, key: str) -> bytes: ...

    def read_tail(self, key: str, size: int) -> bytes:
        """The last ``size`` bytes of ``key`` (all of it when shorter): a Parquet footer without the data."""
        ...

    def write_bytes(self, key: str, data: bytes) -> None: ...

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist yet, atomically; False when it already existed."""
        ...

    def delete(self, key: str) -> None: ...


@dataclass
class LocalStore:
    """A folder on local disk."""

    root: Path

    @property
    def url(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        return self.root / safe_key(key)

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / safe_key(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        keys = [
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        ]
        return sorted(keys)

    def stat(self, prefix: str = "") -> dict[str, FileInfo]:
        info = {}
        for key in self.list(prefix):
            try:
                found = self.path(key).stat()
            except FileNotFoundError:  # removed since the listing
                continue
            info[key] = FileInfo(size=found.st_size, modified=found.st_mtime)
        return info

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def read_tail(self, key: str, size: int) -> bytes:
        with self.path(key).open("rb") as handle:
            handle.seek(max(handle.seek(0, os.SEEK_END) - size, 0))
            return handle.read()

    def write_bytes(self, key: str, data: bytes) -> None:
        with self._staged(key, data) as (tmp, target):
            os.replace(tmp, target)

    def create(self, key: str, data: bytes) -> bool:
        with self._staged(key, data) as (tmp, target):
            try:
                os.link(tmp, target)  # atomic, and fails when the target exists: one creator wins
            except FileExistsError:
                return False
        return True

    @contextmanager
    def _staged(self, key: str, data: bytes) -> Iterator[tuple[str, Path]]:
        """The data in a synced temporary file beside the target, removed afterwards whatever happens."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            yield tmp, target
        finally:
            Path(tmp).unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


@dataclass
class S3Store:
    """A prefix in an S3 bucket, through boto3 (AWS or any S3-compatible endpoint).

    A PutObject is atomic on S3, so writes need no temporary object. Transient failures (connection
    refused or reset, timeouts, throttling, 5xx) are retried: quickly by botocore, then on the
    S3_BACKOFF schedule (about 30 s in all), so a store that restarts or fails over is ridden out;
    what still fails is raised as StorageUnavailableError naming the object, never the credentials.
    """

    bucket: str
    prefix: str
    endpoint_url: str | None = None
    _client: object = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def client(self):  # boto3's client type is generated at run time
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60),
            )
        return self._client

    def _call(self, operation: str, key: str, read_body: bool = False, **kwargs) -> Any:  # boto3's untyped response
        from botocore.exceptions import BotoCoreError, ClientError

        schedule = (*S3_BACKOFF, None)
        for pause in schedule:
            try:
                response = getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
                return response["Body"].read() if read_body else response
            except ClientError as error:
                status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if status < 500 and error.response.get("Error", {}).get("Code") not in (
                    "SlowDown",
                    "Throttling",
                    "RequestTimeout",
                ):
                    raise
                failure = error
            except BotoCoreError as error:
                failure = error
            if pause is None:
                raise StorageUnavailableError(
                    f"{self.url}/{key}: {operation} failed after {len(schedule)} attempts "
                    f"over {sum(S3_BACKOFF):g} s: {failure}"
                ) from None
            time.sleep(pause)

    def _full(self, key: str) -> str:
        return posixpath.join(self.prefix, safe_key(key)) if self.prefix else safe_key(key)

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self.stat(prefix))

    def stat(self, prefix: str = "") -> dict[str, FileInfo]:
        full = self._full(prefix) + "/" if prefix else (self.prefix + "/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        info: dict[str, FileInfo] = {}
        token = None
        while True:
            page = self._call("list_objects_v2", prefix, Prefix=full, **({"ContinuationToken": token} if token else {}))
            for obj in page.get("Contents", []):
                info[obj["Key"][strip:]] = FileInfo(size=int(obj["Size"]), modified=obj["LastModified"].timestamp())
            token = page.get("NextContinuationToken")
            if not token:
                return dict(sorted(info.items()))

    def size(self, key: str) -> int:
        return int(self._call("head_object", key, Key=self._full(key))["ContentLength"])

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._call("head_object", key, Key=self._full(key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def read_bytes(self, key: str) -> bytes:
        return self._call(
            "get_object", key, read_body=True, Key=self._full(key)
        )  # a body cut off mid-stream is retried too

    def read_tail(self, key: str, size: int) -> bytes:
        return self._call("get_object", key, read_body=True, Key=self._full(key), Range=f"bytes=-{size}")

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call("put_object", key, Key=self._full(key), Body=data)

    def create(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._call("put_object", key, Key=self._full(key), Body=data, IfNoneMatch="*")  # S3 conditional write
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._call("delete_object", key, Key=self._full(key))


S3_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # seconds between attempts when S3 cannot be reached


def open_store(url: str, *, endpoint_url: str | None = None, base: Path | None = None) -> Store:
    """A store for ``s3://bucket/prefix`` or a local path (relative to ``base``)."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"{url!r}: an S3 location needs a bucket, as s3://bucket/prefix")
        return S3Store(bucket=parsed.netloc, prefix=parsed.path.strip("/"), endpoint_url=endpoint_url)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"{url!r}: only local paths and s3:// locations are supported")
    path = Path(parsed.path if parsed.scheme == "file" else url).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return LocalStore(root=path)


def readable(store: Store, key: str) -> str | bytes:
    """What pyarrow reads in parts: the file's path on local disk (nothing is read until asked for), else the
    object's bytes (held whole: on S3 a file's size is bounded by the read policy, a table's by its compression)."""
    if isinstance(store, LocalStore):
        return str(store.path(key))
    return store.read_bytes(key)


Data = bytes | memoryview  # a file's bytes: read into memory, or mapped (:func:`mapped`)


def mapped(store: Store, key: str) -> Data:
    """A file's bytes for a reader that decodes or digests them and keeps nothing: on local disk the file
    memory-mapped, its pages served from the page cache as they are read, where reading it copies the whole file
    into fresh memory first (night 60 of bench.nights read the vote table's 165 MB base three times); else the
    object's bytes. Files are replaced by a rename, never rewritten in place, so a mapping keeps the file as it
    was when mapped."""
    if not isinstance(store, LocalStore):
        return store.read_bytes(key)
    with store.path(key).open("rb") as handle:
        if not os.fstat(handle.fileno()).st_size:  # an empty file cannot be mapped
            return b""
        return memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))


def parquet_file(store: Store, key: str) -> pq.ParquetFile:
    """A Parquet file to read some columns of: on local disk only their bytes are read, an S3 object is fetched
    whole first (:func:`readable`)."""
    source = readable(store, key)
    return pq.ParquetFile(source if isinstance(source, str) else pa.BufferReader(source))


@contextmanager
def staged_file(store: Store, key: str) -> Iterator[Path]:
    """A local file to write ``key``'s content into, put in place atomically when the block ends without error
    (beside the target on local disk, so the rename is atomic; uploaded in one write otherwise), removed if not."""
    target = store.path(key) if isinstance(store, LocalStore) else None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent if target is not None else None)
    os.close(fd)
    try:
        yield Path(tmp)
        if target is not None:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        else:
            store.write_bytes(key, Path(tmp).read_bytes())
    finally:
        Path(tmp).unlink(missing_ok=True)
