"""``EmbeddingStore`` (``ctx.embeddings``): named embedding sets of one context (SPEC 5).

Layout: ``embeddings/<name>/metadata.json`` (checksummed; lists the set's shards in order)
and ``shard-NNNNNN.npz`` files (``app.formats.npz``). ``metadata.json`` is the commit point:
a save writes its shard, then replaces ``metadata.json`` atomically, then removes the shards
no longer listed. Shard numbers are never reused, so a reader holding an older
``metadata.json`` never opens a different file under a known name.

Writers hold the context's writer lock; readers take no lock (they retry once if a
concurrent overwrite removed a shard between reading ``metadata.json`` and opening it).
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import icontract
import numpy as np

from app.core.artifacts import EmbeddingInfo, EmbeddingSet, Hit, IdList, ShardInfo
from app.core.atomic import fsync_dir, write_atomic
from app.core.contracts import ensure, require, valid_name
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
from app.core.similarity import METRICS, TopK, compute_dtype, row_norms
from app.formats import npz
from app.formats.hashio import dump_checked, plain_json, read_checked, sha256_fd
from app.managers.embcheck import (
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
from app.managers.embsearch import Hits, ShardCache, hit_lists, search_result_ok

META = "metadata.json"
T = TypeVar("T")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _metadata_ok(metadata: object) -> bool:
    plain_json(metadata, "metadata")
    return True


@icontract.invariant(lambda self: is_valid_name(self.context), "context name stays valid")
@icontract.invariant(lambda self: self.root.name == "embeddings", "root is the embeddings dir")
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

    def _read(self, name: str) -> tuple[EmbeddingInfo, int]:
        path = self._dir(name) / META
        if not path.exists():
            raise NotFoundError(f"embedding set {name!r} not found in context {self.context!r}")
        return info_of(read_checked(path), path)

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
        self, name: str, info: EmbeddingInfo, shard: ShardInfo, mmap: bool
    ) -> npz.ShardArrays:
        return npz.open_shard(
            self._dir(name) / shard.file,
            count=shard.count,
            dim=info.dim,
            dtype=info.dtype,
            mmap=mmap,
        )

    def _forget(self, name: str) -> None:
        self._cache.forget(self._dir(name))

    @staticmethod
    def _cleanup(set_dir: Path, keep: set[str]) -> None:
        """Remove shards not listed and temp files of interrupted writes (lock held)."""
        for path in set_dir.iterdir():
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
        set_dir = self._dir(name)
        with self._lock.hold():
            old: EmbeddingInfo | None = None
            next_shard = 1
            if (set_dir / META).exists():
                try:
                    old, next_shard = self._read(name)
                except IntegrityError:
                    if mode == "append":
                        raise
            if set_dir.exists():
                used = [
                    int(m.group(1))
                    for p in set_dir.iterdir()
                    if (m := SHARD_FILE.fullmatch(p.name))
                ]
                next_shard = max([next_shard, *[u + 1 for u in used]])
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
        set_dir = self._dir(name)
        with self._lock.hold():
            if not (set_dir / META).exists():
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
    @ensure(
        lambda result: (
            result.info is not None
            and len(result.ids) == result.vectors.shape[0] == result.info.count
        ),
        "one id per row, as recorded",
    )
    def load(self, name: str, *, mmap: bool = True) -> EmbeddingSet:
        """The set's ids, vectors and metadata. ``mmap=True`` maps the arrays read-only in
        place (nothing is read); a set that ``append`` left in several shards is first merged
        into one (``compact``, once) so that it can be mapped."""
        if mmap and len(self.info(name).shards) > 1:
            self.compact(name)

        def read(info: EmbeddingInfo) -> EmbeddingSet:
            parts = [self._open(name, info, s, mmap) for s in info.shards]
            if len(parts) == 1:
                ids, vectors = parts[0].ids, parts[0].vectors
            else:
                ids = np.concatenate([p.ids for p in parts])
                vectors = np.concatenate([p.vectors for p in parts])
            return EmbeddingSet(ids=IdList(ids), vectors=vectors, metadata=info.metadata, info=info)

        return self._snapshot(name, read)

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @ensure(lambda result: len(result.shards) == 1, "one shard left")
    def compact(self, name: str) -> EmbeddingInfo:
        """Merge the set's shards into one (rows, ids and metadata unchanged). Reads the whole
        set once; ``load(mmap=True)`` calls it for sets ``append`` left in several shards."""
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

    @ensure(lambda result: result == sorted(result), "names are sorted")
    def names(self) -> builtins.list[str]:
        """Names of the context's embedding sets, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if is_valid_name(p.name) and (p / META).exists()
        )

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @ensure(lambda name, result: result.name == name, "the info names the set")
    def info(self, name: str) -> EmbeddingInfo:
        """What the store records about the set; ``NotFoundError`` if absent."""
        return self._read(name)[0]

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    def exists(self, name: str) -> bool:
        return (self._dir(name) / META).exists()

    # -- maintenance --------------------------------------------------------------------

    def verify(self) -> builtins.list[str]:
        """Check every set: metadata checksum, shard presence, size and SHA-256. Returns the
        problems found, each naming its file; never raises for damage."""
        problems: builtins.list[str] = []
        if not self.root.is_dir():
            return problems
        for set_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            meta = set_dir / META
            if not is_valid_name(set_dir.name) or not meta.exists():
                if any(SHARD_FILE.fullmatch(p.name) for p in set_dir.iterdir()):
                    problems.append(f"{meta}: missing (shards without metadata)")
                continue
            try:
                info, _ = info_of(read_checked(meta), meta)
            except StorageError as exc:
                if environmental(exc) is not None:  # I/O, EMFILE...: not damage
                    raise
                problems.append(str(exc))
                continue
            for shard in info.shards:
                problems += self._verify_shard(set_dir / shard.file, shard)
        return problems

    @staticmethod
    def _verify_shard(path: Path, shard: ShardInfo) -> builtins.list[str]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return [f"{path}: shard file is missing"]
        except OSError as exc:  # an I/O failure, not damage: typed, keeping the errno
            raise io_error("reading", path, exc) from exc
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
