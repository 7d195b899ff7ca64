"""``EmbeddingStore`` (``ctx.embeddings``): named embedding sets of one context (SPEC 5).

Layout: ``embeddings/<name>/metadata.json`` (checksummed; lists the set's shards in order)
and ``shard-NNNNNN.npz`` files (``app.formats.npz``). ``metadata.json`` is the commit point:
a save writes its shard, then replaces ``metadata.json`` atomically, then removes the shards
no longer listed. Shard numbers are never reused, so a reader holding an older
``metadata.json`` never opens a different file under a known name.

Writers hold the context's writer lock; readers take no lock (they retry once if a
concurrent overwrite removed a shard between reading ``metadata.json`` and opening it).
Reads never write: a set that ``append`` left in several shards is read shard by shard
(``compact`` merges them, explicitly).

Every path is checked on the way without following links (``app.core.nofollow``): a link, or
a file where the set's folder belongs (or the reverse), is damage (``IntegrityError`` naming
it; ``verify`` reports it). Each shard's SHA-256 is checked the first time this process opens
that file identity (``app.formats.filecheck``), for ``load`` with or without ``mmap`` and
for ``search``; ``load(verify=False)`` skips that check explicitly.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import itertools
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import icontract
import numpy as np
import numpy.typing as npt

from app.core.artifacts import EmbeddingInfo, EmbeddingSet, Hit, IdList, ShardInfo
from app.core.atomic import fsync_dir, write_atomic
from app.core.contracts import ensure, ensure_full, invariant, require, valid_name
from app.core.errors import (
    IntegrityError,
    InvalidInput,
    NotFoundError,
    StorageError,
    environmental,
    io_error,
)
from app.core.locks import WriterLock
from app.core.names import child, is_valid_name
from app.core.nofollow import (
    check_chain,
    entries,
    exists_as,
    lstat_as,
    open_regular,
    part_problems,
    read_regular,
    refuse_links,
)
from app.core.similarity import METRICS, TopK, compute_dtype, row_norms
from app.formats import npz
from app.formats.hashio import dump_checked, parse_checked, plain_json, sha256_fd
from app.managers.embeddings.checks import (
    MODES,
    SHARD_FILE,
    as_ids,
    as_matrix,
    as_queries,
    check_query,
    check_rows,
    info_of,
    is_k,
    make_doc,
)
from app.managers.embeddings.search import CACHE_SHARDS, Hits, ShardCache, hit_lists, search_result_ok

META = "metadata.json"
T = TypeVar("T")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _metadata_ok(metadata: object) -> bool:
    plain_json(metadata, "metadata")
    return True


@invariant(lambda self: len(self._cache) <= CACHE_SHARDS, "the search cache stays bounded")
class EmbeddingStore(icontract.DBC):
    """Embedding sets of one context: save / load / search / list / info / delete."""

    def __init__(self, root: Path, lock: WriterLock, context: str) -> None:
        self.root = root
        self.context = context
        self._lock = lock
        self._cache = ShardCache()

    def __repr__(self) -> str:
        return f"EmbeddingStore({self.context!r})"

    # -- internals ----------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return child(self.root, name, "name")

    def _checked_dir(self, name: str) -> Path:
        """The set's folder, after checking (``lstat``) that the context folder, the
        ``embeddings`` folder and the set's folder are real directories where they exist."""
        return check_chain(self.root.parent, self.root.name, self._dir(name).name, last="dir")

    def _meta(self, name: str) -> Path | None:
        """The set's ``metadata.json`` if it exists (each folder on the way checked)."""
        path = self._checked_dir(name) / META
        return path if exists_as(path, "file") else None

    def _read(self, name: str) -> tuple[EmbeddingInfo, int]:
        path = self._meta(name)
        try:
            if path is not None:
                return _read_meta(path)
        except FileNotFoundError:  # deleted meanwhile
            pass
        raise NotFoundError(f"embedding set {name!r} not found in context {self.context!r}")

    def _snapshot(self, name: str, fn: Callable[[EmbeddingInfo], T]) -> T:
        """Run ``fn`` on the set's current info; retry when a concurrent writer replaced the
        set between reading ``metadata.json`` and opening a shard."""
        info, _ = self._read(name)
        for _attempt in range(3):
            try:
                return fn(info)
            except IntegrityError:
                again, _ = self._read(name)
                if again.shards == info.shards:
                    raise
                info = again
        return fn(info)

    def _open(
        self, name: str, info: EmbeddingInfo, shard: ShardInfo, mmap: bool, verify: bool
    ) -> npz.ShardArrays:
        return npz.open_shard(
            self._dir(name) / shard.file,
            count=shard.count,
            dim=info.dim,
            dtype=info.dtype,
            mmap=mmap,
            sha256=shard.sha256 if verify else None,
            size=shard.size_bytes,
        )

    def _forget(self, name: str) -> None:
        self._cache.forget(self._dir(name))

    @staticmethod
    def _cleanup(set_dir: Path, keep: set[str]) -> None:
        """Remove shards not listed and temp files of interrupted writes (lock held)."""
        for entry in entries(set_dir):
            path = Path(entry.path)
            stale = (SHARD_FILE.fullmatch(path.name) and path.name not in keep) or (
                path.name.startswith(".") and path.name.endswith(".tmp")
            )
            if stale:
                with contextlib.suppress(OSError):
                    path.unlink()

    def _existing_ids(self, name: str, info: EmbeddingInfo) -> Any:
        arrays = [npz.read_ids(self._dir(name) / s.file, s.count) for s in info.shards]
        return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]

    # -- writing ------------------------------------------------------------------------

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @require(lambda mode: mode in MODES, "mode", "must be 'overwrite' or 'append'")
    @require(lambda metadata: _metadata_ok(metadata), "metadata", "must be a JSON object")
    @require(lambda ids, vectors: check_rows(ids, vectors), "vectors", "invalid rows")
    @ensure(lambda name, result: result.name == name, "the info names the saved set")
    @ensure(
        lambda ids, mode, result: (
            result.count == len(ids) if mode == "overwrite" else result.count >= len(ids)
        ),
        "the set holds the saved rows",
    )
    @ensure(lambda vectors, result: result.dim == np.shape(vectors)[1], "dimension recorded")
    def save(
        self,
        name: str,
        ids: Sequence[str],
        vectors: Any,
        *,
        metadata: Mapping[str, Any] | None = None,
        mode: str = "overwrite",
    ) -> EmbeddingInfo:
        """Save rows ``vectors`` with ``ids``: ``overwrite`` replaces the set, ``append`` adds
        a shard (same dimension, new ids). Durable when it returns."""
        matrix = as_matrix(vectors, check=False)
        id_array = as_ids(ids, matrix.shape[0])
        user_meta = plain_json(metadata, "metadata")
        with self._lock.hold():
            set_dir = self._checked_dir(name)
            refuse_links(set_dir)  # a link in the set is damage: never written around
            old: EmbeddingInfo | None = None
            next_shard = 1
            meta = self._meta(name)
            if meta is not None:
                try:
                    old, next_shard = _read_meta(meta)
                except IntegrityError:
                    if mode == "append":
                        raise
            if exists_as(set_dir, "dir"):
                used = [
                    int(m.group(1)) for p in entries(set_dir) if (m := SHARD_FILE.fullmatch(p.name))
                ]
                next_shard = max([next_shard, *[u + 1 for u in used]])
                if mode == "append" and old is None and used:  # shards whose record is gone
                    raise IntegrityError(
                        f"{set_dir / META}: missing (shards without metadata); appending "
                        "would drop the set's rows: restore the file or save with "
                        'mode="overwrite"'
                    )
            now = _now()
            if mode == "append" and old is not None:
                matrix = self._appendable(name, old, id_array, matrix)
                shards = list(old.shards)
                fields = {"created_at": old.created_at, "metadata": old.metadata}
            else:
                shards = []
                fields = {"created_at": now, "metadata": {}}
            if metadata is not None:
                fields["metadata"] = user_meta
            norms = row_norms(matrix)
            file = f"shard-{next_shard:06d}.npz"
            digest, size = npz.write_shard(set_dir / file, id_array, matrix, norms)
            shards.append(
                ShardInfo(
                    file=file,
                    count=matrix.shape[0],
                    sha256=digest,
                    size_bytes=size,
                    created_at=now,
                )
            )
            fields |= {
                "name": name,
                "dim": matrix.shape[1],
                "dtype": matrix.dtype.name,
                "updated_at": now,
            }
            doc = make_doc(fields, shards, next_shard + 1)
            write_atomic(set_dir / META, dump_checked(doc))
            self._cleanup(set_dir, {s.file for s in shards})
            self._forget(name)
            return info_of(doc, set_dir / META)[0]

    def _appendable(self, name: str, old: EmbeddingInfo, ids: Any, matrix: Any) -> Any:
        """Check rows appended to ``old``; returns them in the set's dtype."""
        if matrix.shape[1] != old.dim:
            raise InvalidInput(
                f"vectors: dimension {matrix.shape[1]} differs from the set's {old.dim}"
            )
        if matrix.dtype.name != old.dtype:
            with np.errstate(over="ignore"):
                matrix = matrix.astype(old.dtype)
            if not np.isfinite(matrix).all():
                raise InvalidInput(f"vectors: values overflow the set's dtype {old.dtype}")
        clash = np.isin(ids, self._existing_ids(name, old))
        if clash.any():
            first = str(ids[int(np.argmax(clash))])
            raise InvalidInput(
                f"ids: {int(clash.sum())} ids already in the set (first: {first[:80]!r})"
            )
        return matrix

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @ensure(lambda self, name: not (self.root / name / META).exists(), "the set is gone")
    def delete(self, name: str) -> None:
        """Delete the set and its files; ``NotFoundError`` if it does not exist."""
        with self._lock.hold():
            set_dir = self._checked_dir(name)
            if self._meta(name) is None:
                raise NotFoundError(f"embedding set {name!r} not found in context {self.context!r}")
            try:
                (set_dir / META).unlink()
                fsync_dir(set_dir)
                self._cleanup(set_dir, set())
                with contextlib.suppress(OSError):
                    set_dir.rmdir()
            except OSError as exc:
                raise StorageError(f"deleting {set_dir} failed: {exc}", errno=exc.errno) from exc
            self._forget(name)

    # -- reading ------------------------------------------------------------------------

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @require(lambda mmap: isinstance(mmap, bool), "mmap", "must be a bool")
    @require(lambda verify: isinstance(verify, bool), "verify", "must be a bool")
    @ensure(
        lambda result: (
            result.info is not None
            and len(result.ids) == result.vectors.shape[0] == result.info.count
        ),
        "one id per row, as recorded",
    )
    def load(self, name: str, *, mmap: bool = True, verify: bool = True) -> EmbeddingSet:
        """The set's ids, vectors and metadata.

        Each shard's SHA-256 is checked the first time this process opens that file (by
        identity: device, inode, size, mtime, ctime), so a damaged shard raises
        ``IntegrityError`` also with ``mmap=True``; later opens of the same file only
        compare its identity. ``verify=False`` skips the SHA-256 check (the structure is
        still checked): use it only for files you have just checked yourself.

        ``mmap=True`` maps a one-shard set read-only in place (nothing of the matrix is
        read). A set that ``append`` left in several shards cannot be mapped as one array:
        its shards are mapped and copied into one array backed by an anonymous temporary file
        outside the store (not held in memory; a read never rewrites the set); call
        ``compact(name)`` once to make it mappable in place again."""

        def read(info: EmbeddingInfo) -> EmbeddingSet:
            parts = [self._open(name, info, s, mmap, verify) for s in info.shards]
            if len(parts) == 1:
                ids, vectors = parts[0].ids, parts[0].vectors
            else:
                ids = np.concatenate([p.ids for p in parts])
                stack = _spilled if mmap else np.concatenate
                vectors = stack([p.vectors for p in parts])
            return EmbeddingSet(ids=IdList(ids), vectors=vectors, metadata=info.metadata, info=info)

        return self._snapshot(name, read)

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @ensure(lambda result: len(result.shards) == 1, "one shard left")
    def compact(self, name: str) -> EmbeddingInfo:
        """Merge the set's shards into one (rows, ids and metadata unchanged): a write, under
        the writer lock, reading the whole set once. Makes a set that ``append`` left in
        several shards mappable by ``load(mmap=True)`` again."""
        with self._lock.hold():
            info = self.info(name)
            if len(info.shards) == 1:
                return info
            whole = self.load(name, mmap=False)
            return self.save(name, whole.ids, np.asarray(whole.vectors), metadata=info.metadata)

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @require(lambda metric: metric in METRICS, "metric", "must be 'cosine', 'dot' or 'l2'")
    @require(lambda k: is_k(k), "k", "must be an int >= 1")
    @require(lambda query: check_query(query), "query", "invalid")
    @ensure(
        lambda query, k, metric, result: search_result_ok(result, query, k, metric),
        "at most k hits per query, best first",
    )
    def search(self, name: str, query: Any, *, k: int = 10, metric: str = "cosine") -> Hits:
        """Exact top-``k`` search. A 1-D ``query`` gives ``list[Hit]``; a 2-D one gives one
        list per row. ``l2`` scores are distances (smaller first)."""
        queries = as_queries(query)

        def run(info: EmbeddingInfo) -> builtins.list[builtins.list[Hit]]:
            if queries.shape[1] != info.dim:
                raise InvalidInput(
                    f"query: dimension {queries.shape[1]} differs from the set's {info.dim}"
                )
            q = queries.astype(compute_dtype(np.dtype(info.dtype)), copy=False)
            top = TopK(q, metric, k)
            set_dir = self._dir(name)
            shards = [self._cache.get(set_dir / s.file, s, info) for s in info.shards]
            starts = [0, *itertools.accumulate(s.count for s in info.shards)]
            for entry, start in zip(shards, starts, strict=False):
                top.add(entry.arrays.vectors, entry.term(metric), start)
            scores, rows = top.result()
            return hit_lists(shards, starts, scores, rows, queries, metric)

        result = self._snapshot(name, run)
        return result[0] if np.ndim(query) == 1 else result

    @ensure(
        lambda result: [i.name for i in result] == sorted({i.name for i in result}),
        "sets are listed once each, sorted by name",
    )
    def list(self) -> builtins.list[EmbeddingInfo]:
        """Every embedding set of the context, sorted by name."""
        return [self._read(name)[0] for name in self.names()]

    @ensure(lambda result: len(set(result)) == len(result), "each name is listed once")
    @ensure_full(lambda self, result: result == [i.name for i in self.list()], "names match list()")
    def names(self) -> builtins.list[str]:
        """Names of the context's embedding sets, sorted (``IntegrityError`` if the
        ``embeddings`` folder is a link or a file; a damaged set folder is not listed:
        ``verify`` reports it)."""
        check_chain(self.root.parent, self.root.name, last="dir")
        return sorted(
            e.name
            for e in entries(self.root)
            if is_valid_name(e.name)
            and e.is_dir(follow_symlinks=False)
            and os.path.lexists(os.path.join(e.path, META))
        )

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @ensure(lambda name, result: result.name == name, "the info names the set")
    def info(self, name: str) -> EmbeddingInfo:
        """What the store records about the set; ``NotFoundError`` if absent."""
        return self._read(name)[0]

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    def exists(self, name: str) -> bool:
        return self._meta(name) is not None

    # -- maintenance --------------------------------------------------------------------

    @ensure(
        lambda self, result: all(str(self.root.parent) in p for p in result),
        "problems name paths of the context",
    )
    def verify(self) -> builtins.list[str]:
        """Check every set: the folders and files are what they should be (no link, no file
        where a folder belongs), metadata checksum, shard presence, size and SHA-256 (always
        re-hashed: finds damage made after a first check). Returns the problems found, each
        naming its path; never raises for damage."""
        return part_problems(self.root, "an embedding set folder", self._verify_set)

    def _verify_set(self, set_dir: Path) -> builtins.list[str]:
        meta = set_dir / META
        try:
            present = lstat_as(meta, "file") is not None
            if not present or not is_valid_name(set_dir.name):
                if any(SHARD_FILE.fullmatch(e.name) for e in entries(set_dir)):
                    return [f"{meta}: missing (shards without metadata)"]
                return []
            info, _ = _read_meta(meta)
        except IntegrityError as exc:
            return [str(exc)]
        except StorageError as exc:
            if environmental(exc) is not None:
                raise  # an I/O failure, not damage
            return [str(exc)]
        problems: builtins.list[str] = []
        for shard in info.shards:
            problems += self._verify_shard(set_dir / shard.file, shard)
        return problems

    @staticmethod
    def _verify_shard(path: Path, shard: ShardInfo) -> builtins.list[str]:
        try:
            fd = open_regular(path)
        except FileNotFoundError:
            return [f"{path}: shard file is missing"]
        except IntegrityError as exc:  # a link or a directory where the shard belongs
            return [str(exc)]
        try:
            size = os.fstat(fd).st_size
            if size != shard.size_bytes:
                return [f"{path}: size {size} differs from the recorded {shard.size_bytes}"]
            if sha256_fd(fd) != shard.sha256:
                return [f"{path}: SHA-256 mismatch (the shard is damaged)"]
        except OSError as exc:
            raise io_error("reading", path, exc) from exc
        finally:
            os.close(fd)
        return []


def _read_meta(path: Path) -> tuple[EmbeddingInfo, int]:
    """Parse a set's ``metadata.json`` (read without following a link)."""
    return info_of(parse_checked(read_regular(path), path), path)


def recorded_files(root: Path) -> dict[str, tuple[int, str]]:
    """``(size, sha256)`` on record for every shard of every set below the ``embeddings``
    folder ``root``, keyed by ``<set>/<shard file>`` (for export's check of what it packs).
    A damaged ``metadata.json`` raises ``IntegrityError`` naming it."""
    out: dict[str, tuple[int, str]] = {}
    for entry in entries(root):
        meta = Path(entry.path) / META
        if not (is_valid_name(entry.name) and entry.is_dir(follow_symlinks=False)):
            continue
        if exists_as(meta, "file"):
            info, _ = _read_meta(meta)
            for shard in info.shards:
                out[f"{entry.name}/{shard.file}"] = (shard.size_bytes, shard.sha256)
    return out


def _spilled(parts: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """The row-wise concatenation of ``parts`` in a read-only memory map of an unlinked
    temporary file (``$TMPDIR``, never the store): memory stays flat for any set size."""
    rows = sum(p.shape[0] for p in parts)
    shape = (rows, parts[0].shape[1])
    with tempfile.TemporaryFile(prefix="ctxstore-emb-") as fh:
        out = np.memmap(fh, dtype=parts[0].dtype, mode="w+", shape=shape)
        at = 0
        for p in parts:
            out[at : at + p.shape[0]] = p
            at += p.shape[0]
        out.flush()
        view = np.memmap(fh, dtype=parts[0].dtype, mode="r", shape=shape)
    del out
    return view
