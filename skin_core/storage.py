"""Read, write and list files by URI: a local path or ``s3://bucket/key``.

S3 goes through boto3 and so through the standard AWS credential chain and
environment (``AWS_ENDPOINT_URL`` for S3-compatible stores, ``AWS_REGION``,
profiles, instance roles).  Nothing here holds credentials.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow.fs as pafs

S3_SCHEME = "s3://"


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ``("bucket", "a/b")``."""
    bucket, _, key = uri[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"not an S3 URI with a bucket: {uri!r}")
    return bucket, key


def absolute(uri: str) -> str:
    """S3 URIs as they are, local paths made absolute: Ray workers and pyarrow do not share our cwd."""
    return uri if is_s3(uri) else str(Path(uri).resolve())


def arrow_filesystem(uri: str) -> tuple["pafs.FileSystem", str]:
    """The pyarrow filesystem and path for ``uri`` (S3 configured by the standard AWS environment)."""
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(absolute(uri))


def join(base: str, *parts: str) -> str:
    """Join path parts with ``/`` for S3 and the OS separator locally."""
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


@functools.lru_cache(maxsize=1)
def s3_client():  # noqa: ANN201 - boto3 clients have no static type
    """One boto3 S3 client per process, configured by the standard AWS chain."""
    import boto3  # deferred: local-only runs never pay boto3's import

    return boto3.client("s3")


def _s3_missing(err: Exception) -> bool:
    code = getattr(err, "response", {}).get("Error", {}).get("Code", "")
    return code in ("404", "NoSuchKey", "NotFound")


def read_bytes(uri: str) -> bytes:
    """The whole object; ``FileNotFoundError`` naming the URI when it does not exist."""
    if not is_s3(uri):
        return Path(uri).read_bytes()
    bucket, key = split_s3(uri)
    try:
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as err:
        if _s3_missing(err):
            raise FileNotFoundError(uri) from err
        raise


def read_csv(uri: str, keep_default_na: bool = False, **kwargs: Any) -> "pd.DataFrame":
    """A CSV file by URI as a DataFrame; by default empty fields stay empty strings, not NaN."""
    import pandas as pd

    return pd.read_csv(io.BytesIO(read_bytes(uri)), keep_default_na=keep_default_na, **kwargs)


def exists(uri: str) -> bool:
    if not is_s3(uri):
        return Path(uri).exists()
    bucket, key = split_s3(uri)
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
        return True
    except Exception as err:
        if _s3_missing(err):
            return False
        raise


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically: a reader sees the old object or the new one, never a part."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)  # a PUT is atomic
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide published outputs from other users
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_names(uri: str) -> list[str]:
    """Names of the files directly inside folder ``uri`` (sorted); ``[]`` when absent."""
    if not is_s3(uri):
        folder = Path(uri)
        return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    bucket, prefix = split_s3(uri.rstrip("/") + "/")
    pages = s3_client().get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, Delimiter="/")
    # pyarrow leaves "folder/" marker objects on S3; they are not files
    return sorted(obj["Key"][len(prefix):] for page in pages for obj in page.get("Contents", [])
                  if not obj["Key"].endswith("/"))


def delete_prefix(uri: str) -> None:
    """Remove a folder (or every object under an S3 prefix); absent is fine."""
    if not is_s3(uri):
        shutil.rmtree(uri, ignore_errors=True)
        return
    bucket, prefix = split_s3(uri.rstrip("/") + "/")
    client = s3_client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def list_tree(uri: str) -> list[str]:
    """Paths (relative, ``/``-separated) of every file below folder ``uri`` (sorted)."""
    if not is_s3(uri):
        root = Path(uri)
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    bucket, prefix = split_s3(uri.rstrip("/") + "/")
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    # pyarrow leaves "folder/" marker objects on S3; they are not files
    return sorted(obj["Key"][len(prefix):] for page in pages for obj in page.get("Contents", [])
                  if not obj["Key"].endswith("/"))


def list_folders(uri: str) -> list[str]:
    """Names of the sub-folders directly inside ``uri`` (sorted)."""
    if not is_s3(uri):
        root = Path(uri)
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    bucket, prefix = split_s3(uri.rstrip("/") + "/")
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
    return sorted(p["Prefix"][len(prefix):].rstrip("/") for page in pages for p in page.get("CommonPrefixes", []))


def upload_tree(folder: Path, uri: str, last: tuple[str, ...] = ()) -> None:
    """Copy a local folder tree to ``uri`` (local or S3), file by file; ``last`` names go after the rest."""
    files = [p.relative_to(folder).as_posix() for p in sorted(Path(folder).rglob("*")) if p.is_file()]
    for name in sorted(files, key=lambda f: f in last):  # stable: keeps the sorted order otherwise
        write_bytes(join(uri, name), (Path(folder) / name).read_bytes())
