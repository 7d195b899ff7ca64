"""Object stores beyond the shared contract (tests/test_backends.py runs that): an upload
killed (SIGKILL) between the blob and its name leaves an orphan that gc removes only after the
grace period; reads are verified into the local cache; credentials never show; the layout
names every object; a plain ``import ctxstore`` never imports fsspec."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from backend_servers import s3_storage_options

import app
from app.backends.objects import ObjectParts
from app.backends.objects.gc import collect, list_unreferenced
from app.backends.protocols import FileDigest, FileWriter
from app.core.atomic import atomic_file
from app.core.layout import object_blob, object_name, object_part, shard_name

ROOT = Path(__file__).resolve().parent.parent
CONTEXT, PART = "c1", "embeddings"


def writing(data: bytes) -> FileWriter:
    def write(path: Path) -> FileDigest:
        with atomic_file(path) as fh:
            fh.write(data)
        return FileDigest(hashlib.sha256(data).hexdigest(), len(data))

    return write


@pytest.fixture(params=["dir", "s3"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A directory, or a fresh bucket on the test S3 server (tests/backend_servers.py)."""
    if request.param == "dir":
        return str(tmp_path / "objects")
    bucket: str = request.getfixturevalue("s3_url")
    return f"{bucket}/store"


def options(url: str) -> dict[str, Any] | None:
    return s3_storage_options() if url.startswith("s3://") else None


def parts(url: str, cache: Path) -> ObjectParts:
    return ObjectParts(url, cache, options(url))


CHILD = textwrap.dedent(
    """
    import hashlib, json, sys, time
    from pathlib import Path
    from app.backends.objects import ObjectParts
    from app.backends.protocols import FileDigest
    from app.core.atomic import atomic_file

    options = json.loads(sys.argv[3])
    files = ObjectParts(sys.argv[1], Path(sys.argv[2]), options).files("c1", "embeddings")
    record = files.location.put

    def stalled(path, data):  # the upload is done; die before the name is recorded
        if "/names/" in path:
            print("uploaded", flush=True)
            time.sleep(600)
        record(path, data)

    files.location.put = stalled

    def write(path):
        with atomic_file(path) as fh:
            fh.write(b"orphan bytes")
        return FileDigest(hashlib.sha256(b"orphan bytes").hexdigest(), 12)

    files.put("s/shard-000002.npz", write)
    """
)


def test_a_killed_upload_leaves_an_orphan_gc_removes_after_the_grace(
    url: str, tmp_path: Path
) -> None:
    files = parts(url, tmp_path / "cache").files(CONTEXT, PART)
    kept = files.put(f"s/{shard_name(1)}", writing(b"kept bytes"))
    before = time.time() - 60
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(tmp_path / "child-cache"), json.dumps(options(url))],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"uploaded"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    orphan = hashlib.sha256(b"orphan bytes").hexdigest()
    assert files.list("s") == [f"s/{shard_name(1)}"]  # never visible
    with pytest.raises(app.NotFoundError):
        files.open(f"s/{shard_name(2)}")
    assert files.location.exists(files.blob(orphan))  # the upload itself completed
    assert list_unreferenced(files, files.referenced(), before) == []  # within the grace
    assert collect(files, before) == []
    assert files.location.exists(files.blob(orphan))
    assert collect(files, time.time() + 5) == [orphan]  # past the grace: removed
    assert not files.location.exists(files.blob(orphan))
    assert files.check(kept.key, kept.size, kept.sha256) is None  # referenced: kept


def test_deleted_files_leave_blobs_for_gc(url: str, tmp_path: Path) -> None:
    files = parts(url, tmp_path / "cache").files(CONTEXT, PART)
    stored = files.put(f"s/{shard_name(1)}", writing(b"gone soon"))
    assert files.delete(stored.key) is True
    assert collect(files, time.time() + 5) == [stored.sha256]


def test_reads_are_verified_into_the_cache_and_mmapable(url: str, tmp_path: Path) -> None:
    files = parts(url, tmp_path / "cache").files(CONTEXT, PART)
    stored = files.put(f"s/{shard_name(1)}", writing(b"cached bytes"))
    other = parts(url, tmp_path / "cache2").files(CONTEXT, PART)  # a cold cache
    path = other.local_path(stored.key)
    assert path.is_relative_to(tmp_path / "cache2") and path.name == stored.sha256
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
        assert bytes(view) == b"cached bytes"
    # the blob is replaced behind the store's back: a cold cache refuses it, check reports it
    files.location.put(files.blob(stored.sha256), b"tampered!!!!")
    third = parts(url, tmp_path / "cache3").files(CONTEXT, PART)
    with pytest.raises(app.IntegrityError, match="SHA-256"):
        third.local_path(stored.key)
    assert not any((tmp_path / "cache3").iterdir())  # nothing unverified stays cached
    assert "SHA-256" in (files.check(stored.key, stored.size, stored.sha256) or "")


def test_objects_live_where_the_layout_says(url: str, tmp_path: Path) -> None:
    files = parts(url, tmp_path / "cache").files(CONTEXT, PART)
    stored = files.put(f"s/{shard_name(1)}", writing(b"laid out"))
    prefix = object_part(files.location.base, CONTEXT, PART)
    assert files.location.exists(object_blob(prefix, stored.sha256))
    assert files.location.exists(object_name(prefix, stored.key))


def test_credentials_never_show(tmp_path: Path) -> None:
    secret = "s3cr3t-value"
    store = ObjectParts(
        f"s3://alice:{secret}@no-such-bucket-ctxstore/p",
        tmp_path / "cache",
        {
            "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"},
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        },
    )
    files = store.files(CONTEXT, PART)
    assert secret not in repr(store) and secret not in repr(files)
    with pytest.raises(app.StorageError) as caught:
        files.list("s")
    assert secret not in str(caught.value) and "alice:***@" in str(caught.value)


def test_import_ctxstore_never_imports_fsspec() -> None:
    code = (
        "import sys, ctxstore; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fsspec', 's3fs')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    assert out.stdout.strip() == "[]"
