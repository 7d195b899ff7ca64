"""``import_context``: check an archive completely, then make it a context.

The archive is checked member by member and extracted into a private staging folder inside
the store (``app.formats.archive.read_archive``), the manifest is validated, the layout checked
(only ``context.json``, ``<collection>.jsonl`` and the registered parts' folders), every log
scanned (batch checksums, record counts against the manifest) and every part verified (on a
worker thread while the staged index is built: the index of a context that has none is built
in bulk when it is first opened). Only then does anything become visible: a rename (new
context), an exchange of folders (``overwrite``) or a merge applied to a staged copy of the
live context which is then exchanged with it (``merge``, ``skip``:
``app.managers.transfer.merge``). Any failure before that leaves the store as it was; the
trust marks of pickled models are never written by an import, so imported ``.joblib``
models stay untrusted. See docs/api.md, "Whole contexts".
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import orjson

from app.core import layout
from app.core.atomic import write_atomic
from app.core.errors import ConflictError, IntegrityError, NotFoundError
from app.core.names import is_valid_name
from app.core.rules import ContextName, OnConflictValue, check
from app.core.transfer_types import Manifest
from app.formats.archive import Limits, read_archive
from app.formats.batchlog import BatchLog
from app.managers.host import ContextHost
from app.managers.parts import parts
from app.managers.transfer.manifest import has_part, parse_manifest
from app.managers.transfer.merge import merge_into


def _check_layout(manifest: Manifest, staged: Path, src: Path) -> None:
    """Only the files a context consists of; counts agree with the logs."""
    folders = {p.folder for p in parts()}
    logs: set[str] = set()
    has_catalog = False
    for f in manifest.files:
        segments = f.path.split("/")
        coll = layout.collection_of(f.path) if len(segments) == 1 else None
        if f.path == layout.CATALOG_FILE:
            has_catalog = True
        elif coll is not None and is_valid_name(coll):
            logs.add(coll)
        elif len(segments) >= 3 and segments[0] in folders and is_valid_name(segments[1]):
            continue
        else:
            raise IntegrityError(f"{src}: {f.path!r} is not part of a context")
    if not has_catalog:
        raise IntegrityError(f"{src}: the archive has no {layout.CATALOG_FILE}")
    if logs != set(manifest.collections):
        raise IntegrityError(f"{src}: the manifest's record counts do not match its logs")
    for coll in sorted(logs):
        _scan_log(staged / layout.log_name(coll))
    try:
        catalog = orjson.loads(layout.catalog(staged).read_bytes())
        assert isinstance(catalog, dict) and isinstance(catalog["collections"], dict)
        assert isinstance(catalog["format"], int)
    except (orjson.JSONDecodeError, KeyError, AssertionError):
        raise IntegrityError(f"{src}: damaged {layout.CATALOG_FILE}") from None


def _scan_log(path: Path) -> int:
    """Check every batch checksum of an imported log (fast: entries are not parsed; the index
    build that follows parses them); the number of record versions."""
    log = BatchLog(path)
    _, header_len = log.header()
    return log.count_verified(header_len)


def _build_index(
    host: ContextHost, target: str, staged: Path, manifest: Manifest, src: Path
) -> None:
    """Build the staged context's index (parsing and checking every entry, so a malformed log
    is refused before anything is visible) and compare record counts with the manifest."""
    ctx = host.open_staged(target, staged, trusted=True)
    try:
        for coll, expected in sorted(manifest.collections.items()):
            found = ctx.count(coll)
            if found != expected:
                raise IntegrityError(
                    f"{src}: {layout.log_name(coll)} holds {found} records, "
                    f"the manifest says {expected}"
                )
    finally:
        ctx.close()


def _retarget(staged: Path, name: str) -> None:
    """Name the staged context ``name`` in its context.json."""
    path = layout.catalog(staged)
    data = orjson.loads(path.read_bytes())
    if data.get("context") != name:
        data["context"] = name
        write_atomic(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def _verify_parts(host: ContextHost, name: str, staged: Path) -> None:
    """Checksums of every staged part (no trust marks are consulted or written: the staged
    context gets an empty private trust folder)."""
    present = [p for p in parts() if has_part(staged, p)]
    if not present:
        return
    ctx = host.open_staged(name, staged, trusted=False)
    try:
        problems: list[str] = []
        for part in present:
            problems += part.verify(ctx)
    finally:
        ctx.close()
    if problems:
        raise IntegrityError(
            f"archive: {problems[0]}"
            + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
        )


def _check_parts_and_index(
    host: ContextHost, target: str, staged: Path, manifest: Manifest, src: Path
) -> None:
    """Verify the staged parts (hashing, on a worker thread: hashlib releases the GIL) while
    this thread builds the staged index; both must succeed (the index's error first)."""
    with ThreadPoolExecutor(1, thread_name_prefix="ctxstore-import-verify") as pool:
        verified = pool.submit(_verify_parts, host, target, staged)
        try:
            _build_index(host, target, staged, manifest, src)
        finally:
            wait([verified])  # never leave it reading a folder that is about to go
        verified.result()


def import_context(
    host: ContextHost,
    src: Path,
    *,
    name: str | None = None,
    on_conflict: OnConflictValue = "fail",
    limits: Limits | None = None,
) -> Manifest:
    """Check the archive ``src`` completely, then make it the context ``name`` (the
    arguments come checked by ``Store.import_context``)."""
    if name is not None and on_conflict == "fail" and host.exists(name):
        raise ConflictError(f"context {name!r} already exists (on_conflict='fail')")
    if not src.is_file():
        raise NotFoundError(f"archive {src} not found")
    with host.staging("import") as staged:
        raw = read_archive(src, staged, limits=limits)
        manifest = parse_manifest(raw, src)
        target = name if name is not None else manifest.context
        check(ContextName, target, "name")  # the archive's own name
        if on_conflict == "fail" and host.exists(target):
            raise ConflictError(f"context {target!r} already exists (on_conflict='fail')")
        _check_layout(manifest, staged, src)
        _retarget(staged, target)
        _check_parts_and_index(host, target, staged, manifest, src)
        with host.writer_lock.hold():
            if not host.exists(target):
                host.install(target, staged, replace=False)
            elif on_conflict == "fail":
                raise ConflictError(f"context {target!r} already exists (on_conflict='fail')")
            elif on_conflict == "overwrite":
                live = host.context(target, create=False)
                with live.writer_lock.hold():
                    host.install(target, staged, replace=True)
            else:
                merge_into(host, target, staged, manifest, on_conflict)
    return manifest


__all__ = ["import_context"]
