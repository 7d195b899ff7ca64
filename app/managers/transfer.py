"""Whole contexts (SPEC section 8): save / load in memory, export / import as archives.

Export: under the context's writer lock a snapshot is staged inside the store (compacted copies
of the record logs, ``context.json``, hard links to the embedding and model files, which are
only ever replaced by rename); outside the lock the files are hashed, the manifest is built and
the archive written (``app.formats.archive``: temp file + rename). The SQLite index is derived
data and never exported; it is rebuilt when the imported context is first opened.

Import: the archive is checked member by member and extracted into a private staging directory
inside the store (``app.formats.archive.read_archive``), the manifest is validated, the layout
checked (only ``context.json``, ``<collection>.jsonl``, ``embeddings/``, ``models/``), every log
scanned (batch checksums, record counts against the manifest) and the embedding sets and models
verified. Only then does anything become visible: a rename (new context), an exchange of
directories (``overwrite``) or a merge applied to a staged copy of the live context which is
then exchanged with it (``merge``, ``skip``). Any failure before that leaves the store as it
was; the trust records of pickled models (``<root>/trust``) are never written by an import, so
imported ``.joblib`` models stay untrusted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from app.core.atomic import write_atomic
from app.core.errors import (
    ConflictError,
    IntegrityError,
    InvalidInput,
    NotFoundError,
    SchemaVersionError,
)
from app.core.names import check_name, child, is_valid_name
from app.core.nofollow import entries, part_problems, refuse_links
from app.core.transfer_types import (
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    ContextState,
    Manifest,
    ManifestFile,
)
from app.formats.archive import Limits, read_archive, write_archive
from app.formats.batchlog import BatchLog
from app.managers.context import Context
from app.managers.ctxfiles import layout_problems
from app.managers.records.catalog import Catalog
from app.managers.transfer_fs import (
    contexts_dir,
    copy_file,
    hash_files,
    install,
    recorded_digests,
    snapshot_tree,
    staging,
)

if TYPE_CHECKING:
    from app.managers.store import Store

SAVE_BATCH = 10_000
ON_CONFLICT = ("fail", "overwrite", "merge", "skip")
PARTS = ("embeddings", "models")


def _library_version() -> str:
    from app import __version__

    return __version__


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _exists(store: Store, name: str) -> bool:
    return (child(contexts_dir(store), name, "name") / "context.json").is_file()


def _has_part(path: Path, part: str) -> bool:
    return (path / part).is_dir()


# -- summaries and manifests ------------------------------------------------------------------


def _summaries(ctx: Context) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    embeddings: dict[str, dict[str, Any]] = {}
    models: dict[str, list[dict[str, Any]]] = {}
    if _has_part(ctx.path, "embeddings"):
        for e in ctx.embeddings.list():
            embeddings[e.name] = {
                "count": e.count,
                "dim": e.dim,
                "dtype": e.dtype,
                "sha256": e.sha256,
            }
    if _has_part(ctx.path, "models"):
        for m in ctx.models.list():
            models[m.name] = [
                {
                    "version": v.version,
                    "format": v.format,
                    "sha256": v.sha256,
                    "size_bytes": v.size_bytes,
                }
                for v in ctx.models.versions(m.name)
            ]
    return embeddings, models


def _build_manifest(
    name: str,
    root: Path,
    files: list[str],
    counts: Mapping[str, int],
    summaries: tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]],
) -> Manifest:
    # every shard and model file is compared with its recorded SHA-256 while it is hashed
    hashed = hash_files([root / f for f in files], expected=recorded_digests(root))
    return Manifest(
        format=MANIFEST_FORMAT,
        format_version=MANIFEST_VERSION,
        context=name,
        library_version=_library_version(),
        created_at=_now(),
        files=[
            ManifestFile(path=f, size=s, sha256=h) for f, (s, h) in zip(files, hashed, strict=True)
        ],
        collections=dict(counts),
        embeddings=summaries[0],
        models=summaries[1],
    )


def _sets_without_metadata(set_dir: Path) -> list[str]:
    names = {e.name for e in entries(set_dir)}
    if "metadata.json" in names or not any(n.endswith(".npz") for n in names):
        return []
    return [f"{set_dir / 'metadata.json'}: missing (shards without metadata)"]


def _refuse_incomplete(ctx: Context) -> None:
    """Export never writes an archive that silently lacks part of the context (SPEC 22): a
    collection the index holds whose log is gone, a part folder of the wrong type, an
    embedding set whose metadata is gone are damage (cheap checks; files are hashed later)."""
    problems = layout_problems(ctx.path, ctx.name) + ctx.missing_logs()
    problems += part_problems(
        ctx.path / "embeddings", "an embedding set folder", _sets_without_metadata
    )
    problems += part_problems(ctx.path / "models", "a model folder", lambda _: [])
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(f"export refused, the context is damaged: {problems[0]}{more}")


def _snapshot(ctx: Context, dest: Path) -> tuple[list[str], dict[str, int], Any]:
    """Stage a consistent copy of ``ctx`` in ``dest`` (caller holds nothing; locks here)."""
    files = ["context.json"]
    counts: dict[str, int] = {}
    with ctx.writer_lock.hold():
        refuse_links(ctx.path)  # nothing inside a store is followed (SPEC 22)
        _refuse_incomplete(ctx)
        copy_file(ctx.path / "context.json", dest / "context.json")
        for coll in ctx.collections():
            with open(dest / f"{coll}.jsonl", "wb") as fh:
                counts[coll] = ctx.write_compacted_log(coll, fh)
            files.append(f"{coll}.jsonl")
        for part in PARTS:
            files += [f"{part}/{f}" for f in snapshot_tree(ctx.path / part, dest / part)]
        summaries = _summaries(ctx)
    return files, counts, summaries


# -- export ---------------------------------------------------------------------------------


def export_context(store: Store, name: str, dest: Path) -> Manifest:
    """Write a consistent snapshot of context ``name`` to the archive ``dest``."""
    check_name(name, "name")
    if dest.is_dir():
        raise InvalidInput(f"dest: {dest} is a directory; give the path of a .tar.gz file")
    if not dest.parent.is_dir():
        raise InvalidInput(f"dest: directory {dest.parent} does not exist")
    ctx = store.context(name, create=False)
    with staging(store, "export") as snap:
        files, counts, summaries = _snapshot(ctx, snap)
        manifest = _build_manifest(name, snap, files, counts, summaries)
        payload = orjson.dumps(manifest.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
        write_archive(dest, payload, [(f, snap / f) for f in files])
    return manifest


# -- import ---------------------------------------------------------------------------------


def _parse_manifest(raw: Mapping[str, Any], src: Path) -> Manifest:
    fmt, version = raw.get("format"), raw.get("format_version")
    if fmt != MANIFEST_FORMAT:
        raise IntegrityError(f"{src}: not a ctxstore context archive (format {str(fmt)[:40]!r})")
    if isinstance(version, int) and not isinstance(version, bool) and version > MANIFEST_VERSION:
        raise SchemaVersionError(
            f"{src}: archive format {version} is newer than this ctxstore reads "
            f"({MANIFEST_VERSION})"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise IntegrityError(f"{src}: manifest field {where}: {first['msg']}") from None


def _check_layout(manifest: Manifest, staged: Path, src: Path) -> None:
    """Only the files a context consists of; counts agree with the logs."""
    logs: set[str] = set()
    has_catalog = False
    for f in manifest.files:
        parts = f.path.split("/")
        if f.path == "context.json":
            has_catalog = True
        elif len(parts) == 1 and f.path.endswith(".jsonl") and is_valid_name(f.path[:-6]):
            logs.add(f.path[:-6])
        elif len(parts) >= 3 and parts[0] in PARTS and is_valid_name(parts[1]):
            continue
        else:
            raise IntegrityError(f"{src}: {f.path!r} is not part of a context")
    if not has_catalog:
        raise IntegrityError(f"{src}: the archive has no context.json")
    if logs != set(manifest.collections):
        raise IntegrityError(f"{src}: the manifest's record counts do not match its logs")
    for coll in sorted(logs):
        _scan_log(staged / f"{coll}.jsonl")
    try:
        catalog = orjson.loads((staged / "context.json").read_bytes())
        assert isinstance(catalog, dict) and isinstance(catalog["collections"], dict)
        assert isinstance(catalog["format"], int)
    except (orjson.JSONDecodeError, KeyError, AssertionError):
        raise IntegrityError(f"{src}: damaged context.json") from None


def _scan_log(path: Path) -> int:
    """Check every batch checksum of an imported log (fast: entries are not parsed; the index
    build that follows parses them); the number of record versions."""
    log = BatchLog(path)
    _, header_len = log.header()
    return log.count_verified(header_len)


def _build_index(store: Store, target: str, staged: Path, manifest: Manifest, src: Path) -> None:
    """Build the staged context's index (parsing and checking every entry, so a malformed log
    is refused before anything is visible) and compare record counts with the manifest."""
    ctx = Context(target, staged, store._trust_dir)
    try:
        for coll, expected in sorted(manifest.collections.items()):
            found = ctx.count(coll)
            if found != expected:
                raise IntegrityError(
                    f"{src}: {coll}.jsonl holds {found} records, the manifest says {expected}"
                )
    finally:
        ctx.close()


def _retarget(staged: Path, name: str) -> None:
    """Name the staged context ``name`` in its context.json."""
    path = staged / "context.json"
    data = orjson.loads(path.read_bytes())
    if data.get("context") != name:
        data["context"] = name
        write_atomic(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def _verify_parts(name: str, staged: Path) -> None:
    """Checksums of the staged embedding sets and models (no trust records are consulted
    or written: the staged context gets an empty private trust directory)."""
    if not any(_has_part(staged, p) for p in PARTS):
        return
    ctx = Context(name, staged, staged / ".no-trust")
    try:
        problems: list[str] = []
        for part in PARTS:
            if _has_part(staged, part):
                problems += getattr(ctx, part).verify()
    finally:
        ctx.close()
    if problems:
        raise IntegrityError(
            f"archive: {problems[0]}"
            + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
        )


def import_context(
    store: Store,
    src: Path,
    *,
    name: str | None = None,
    on_conflict: str = "fail",
    limits: Limits | None = None,
) -> Manifest:
    """Check the archive ``src`` completely, then make it the context ``name``."""
    if on_conflict not in ON_CONFLICT:
        raise InvalidInput(f"on_conflict: must be one of {', '.join(ON_CONFLICT)}")
    if name is not None:
        check_name(name, "name")
        if on_conflict == "fail" and _exists(store, name):
            raise ConflictError(f"context {name!r} already exists (on_conflict='fail')")
    if not src.is_file():
        raise NotFoundError(f"archive {src} not found")
    with staging(store, "import") as staged:
        raw = read_archive(src, staged, limits=limits)
        manifest = _parse_manifest(raw, src)
        target = name if name is not None else manifest.context
        check_name(target, "name")
        if on_conflict == "fail" and _exists(store, target):
            raise ConflictError(f"context {target!r} already exists (on_conflict='fail')")
        _check_layout(manifest, staged, src)
        _retarget(staged, target)
        _verify_parts(target, staged)
        _build_index(store, target, staged, manifest, src)
        with store._lock.hold():
            if not _exists(store, target):
                install(store, target, staged, replace=False)
            elif on_conflict == "fail":
                raise ConflictError(f"context {target!r} already exists (on_conflict='fail')")
            elif on_conflict == "overwrite":
                live = store.context(target, create=False)
                with live.writer_lock.hold():
                    install(store, target, staged, replace=True)
            else:
                from app.managers.transfer_merge import merge_into

                merge_into(store, target, staged, manifest, on_conflict)
    return manifest


# -- save / load ----------------------------------------------------------------------------


def _as_state(state: object) -> ContextState:
    if isinstance(state, ContextState):
        return state
    if isinstance(state, Mapping):
        try:
            return ContextState.model_validate(dict(state))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidInput(f"state: {where}: {first['msg']}") from None
    raise InvalidInput(f"state: expected an app.ContextState, got {type(state).__name__}")


def _check_state_names(state: ContextState) -> None:
    for kind, names in (
        ("collection", state.collections),
        ("embedding set", state.embeddings),
        ("model", state.models),
    ):
        for n in names:
            check_name(n, f"state.{kind.replace(' ', '_')}s")


def _chunks(records: list[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def save_context(store: Store, name: str, state: object) -> Manifest:
    """Replace the content of context ``name`` by ``state`` (all or nothing)."""
    check_name(name, "name")
    st = _as_state(state)
    _check_state_names(st)
    with staging(store, "save") as staged:
        existing = child(contexts_dir(store), name, "name")
        if (existing / "context.json").is_file():
            copy_file(existing / "context.json", staged / "context.json")
        else:
            write_atomic(staged / "context.json", Catalog.initial(name))
        ctx = Context(name, staged, store._trust_dir)
        try:
            for coll, records in st.collections.items():
                if not records:
                    ctx.define_collection(coll)
                for n, chunk in enumerate(_chunks(records, SAVE_BATCH)):
                    ctx.append(coll, chunk, batch_id=f"save-{coll}-{n}")
            for ename, es in st.embeddings.items():
                try:
                    ids, vectors = es.ids, es.vectors
                except AttributeError:
                    raise InvalidInput(
                        f"state.embeddings: {ename!r} must be an app.EmbeddingSet"
                    ) from None
                ctx.embeddings.save(ename, ids, vectors, metadata=getattr(es, "metadata", None))
            for mname, model in st.models.items():
                ctx.models.save(mname, model)
            files = ["context.json", *[f"{c}.jsonl" for c in ctx.collections()]]
            counts = {c: ctx.count(c) for c in ctx.collections()}
            for part in PARTS:
                if _has_part(staged, part):
                    from app.managers.transfer_fs import relative_files

                    files += [f"{part}/{f}" for f in relative_files(staged / part)]
            manifest = _build_manifest(name, staged, files, counts, _summaries(ctx))
        finally:
            ctx.close()
        with store._lock.hold():
            if _exists(store, name):
                live = store.context(name, create=False)
                with live.writer_lock.hold():
                    install(store, name, staged, replace=True)
            else:
                install(store, name, staged, replace=False)
    return manifest


def load_context(store: Store, name: str) -> ContextState:
    """The whole content of context ``name`` (a consistent snapshot)."""
    check_name(name, "name")
    ctx = store.context(name, create=False)
    with ctx.writer_lock.hold():
        collections = {c: ctx.records_from_log(c) for c in ctx.collections()}
        embeddings: dict[str, Any] = {}
        models: dict[str, Any] = {}
        if _has_part(ctx.path, "embeddings"):
            embeddings = {
                e.name: ctx.embeddings.load(e.name, mmap=False) for e in ctx.embeddings.list()
            }
        if _has_part(ctx.path, "models"):
            models = {m.name: ctx.models.load(m.name) for m in ctx.models.list()}
    return ContextState(collections=collections, embeddings=embeddings, models=models)


__all__ = ["ON_CONFLICT", "export_context", "import_context", "load_context", "save_context"]
