"""``EmbeddingStore`` (``ctx.embeddings``): named embedding sets of one context (docs/api.md
"Embeddings").

A set is a document ``<set>/metadata.json`` (``app.formats.setmeta``: checksummed, lists the
set's shards in order) in the part's ``MetaStore`` and immutable shard files
``<set>/shard-NNNNNN.npz`` (``app.formats.npz``) in its ``FileStore`` (``app.backends``; the
embedded backend keeps both in ``embeddings/<set>/``). The document is the commit point: a
save puts its shard (durable first), then replaces the document atomically, then removes the
shards no longer listed. Shard numbers are never reused, so a reader holding an older
document never opens a different file under a known name.

Writers hold the context's writer lock; readers take no lock (they retry once if a
concurrent overwrite removed a shard between reading the document and opening it). Reads
never write: a set that ``append`` left in several shards is read shard by shard
(``compact`` merges them, explicitly).

Every path is checked on the way without following links (``app.core.nofollow``): a link, or
a file where the set's folder belongs (or the reverse), is damage (``IntegrityError`` naming
it; ``verify`` reports it). Each shard's SHA-256 is checked the first time this process opens
that file identity (``app.formats.filecheck``), for ``load`` with or without ``mmap`` and
for ``search``; ``load(verify=False)`` skips that check explicitly.
"""

from __future__ import annotations

import builtins
import copy
import itertools
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import icontract
import numpy as np
import numpy.typing as npt

from app.backends.local import LocalFileStore, LocalMetaStore
from app.backends.protocols import FileDigest, FileStore, MetaStore
from app.core.artifacts import EmbeddingInfo, EmbeddingSet, Hit, IdList, ShardInfo
from app.core.clock import utc_iso
from app.core.contracts import ensure, ensure_full, invariant, require
from app.core.errors import (
    IntegrityError,
    InvalidInput,
    NotFoundError,
    StorageError,
    environmental,
)
from app.core.layout import (
    ANN_DIR,
    ANN_FILE_PATTERN,
    ANN_META_PATTERN,
    SET_META,
    SET_META_PATTERN,
    SHARD_PATTERN,
    shard_name,
)
from app.core.locks import Lock
from app.core.names import is_valid_name
from app.core.nofollow import entries, link_problems, part_problems
from app.core.rules import (
    CollectionName,
    Count,
    Flag,
    Metadata,
    Metric,
    SaveMode,
    SetName,
    checked,
)
from app.core.similarity import TopK, compute_dtype, row_norms
from app.formats import annindex, npz, setmeta
from app.formats.hashio import plain_json
from app.managers.embeddings.ann import CACHE_GRAPHS, AnnIndexes, is_current
from app.managers.embeddings.checks import (
    as_ids,
    as_matrix,
    as_queries,
    check_query,
    check_rows,
)
from app.managers.embeddings.search import (
    CACHE_SHARDS,
    CachedShard,
    Hits,
    RowMaps,
    ShardCache,
    ann_hit_lists,
    ann_top,
    candidate_rows,
    hit_lists,
    search_result_ok,
    subset_top,
)

Candidates = Callable[[str, Mapping[str, Any] | None], builtins.list[str]]
"""``(collection, where) -> ids`` of the current records of ``collection`` matching ``where``
(``Context.matching_ids``): the candidates of a filtered search."""

T = TypeVar("T")


def meta_key(name: str) -> str:
    """The set's document key in the part's ``MetaStore``."""
    return f"{name}/{SET_META}"


def shard_key(name: str, file: str) -> str:
    """A shard's key in the part's ``FileStore``."""
    return f"{name}/{file}"


def _number(key: str) -> int:
    found = SHARD_PATTERN.fullmatch(key.rpartition("/")[2])
    assert found is not None  # FileStore.list returns shard keys only
    return int(found.group(1))


@invariant(lambda self: len(self._cache) <= CACHE_SHARDS, "the search cache stays bounded")
@invariant(lambda self: len(self._ann) <= CACHE_GRAPHS, "the ANN graph cache stays bounded")
class EmbeddingStore(icontract.DBC):
    """Embedding sets of one context: save / load / search / list / info / delete."""

    def __init__(
        self,
        root: Path,
        lock: Lock,
        context: str,
        *,
        files: FileStore | None = None,
        meta: MetaStore | None = None,
        ann_files: FileStore | None = None,
        ann_meta: MetaStore | None = None,
        candidates: Candidates | None = None,
    ) -> None:
        """The sets of ``context`` in its part folder ``root``; ``files`` and ``meta`` are
        the backend's stores for this part (default: the embedded ones over ``root``),
        ``ann_files`` and ``ann_meta`` those of the sets' ANN indexes (default: the embedded
        ones over the context's ``ann`` folder); ``candidates`` finds the ids a filtered
        search may return (without it, ``search(where=...)`` raises ``InvalidInput``)."""
        self.root = root
        self.context = context
        self._lock = lock
        self._files: FileStore = files or LocalFileStore(root, SHARD_PATTERN, "shard")
        self._meta: MetaStore = meta or LocalMetaStore(root, SET_META_PATTERN)
        ann_root = root.parent / ANN_DIR
        self._ann = AnnIndexes(
            ann_files or LocalFileStore(ann_root, ANN_FILE_PATTERN, "ANN index"),
            ann_meta or LocalMetaStore(ann_root, ANN_META_PATTERN),
        )
        self._candidates = candidates
        self._cache = ShardCache()
        self._row_maps = RowMaps()

    def __repr__(self) -> str:
        return f"EmbeddingStore({self.context!r})"

    # -- internals ----------------------------------------------------------------------

    def _missing(self, name: str) -> NotFoundError:
        return NotFoundError(f"embedding set {name!r} not found in context {self.context!r}")

    def _read(self, name: str) -> tuple[EmbeddingInfo, int]:
        key = meta_key(name)
        data = self._meta.read(key)
        if data is None:  # missing, or deleted meanwhile
            raise self._missing(name)
        return setmeta.parse(data, self._meta.where(key))

    def _snapshot(self, name: str, fn: Callable[[EmbeddingInfo], T]) -> T:
        """Run ``fn`` on the set's current info; retry when a concurrent writer replaced the
        set between reading its document and opening a shard (a replaced shard reads as
        damaged on a local folder, as gone on an object store)."""
        info, _ = self._read(name)
        for _attempt in range(3):
            try:
                return fn(info)
            except (IntegrityError, NotFoundError):
                again, _ = self._read(name)
                if again.shards == info.shards:
                    raise
                info = again
        return fn(info)

    def _open(
        self, name: str, info: EmbeddingInfo, shard: ShardInfo, mmap: bool, verify: bool
    ) -> npz.ShardArrays:
        return npz.open_shard(
            self._files.local_path(shard_key(name, shard.file)),
            count=shard.count,
            dim=info.dim,
            dtype=info.dtype,
            mmap=mmap,
            sha256=shard.sha256 if verify else None,
            size=shard.size_bytes,
        )

    def _cached(self, name: str, shard: ShardInfo, info: EmbeddingInfo) -> CachedShard:
        key = shard_key(name, shard.file)
        return self._cache.get(key, self._files.local_path(key), shard, info)

    def _existing_ids(self, name: str, info: EmbeddingInfo) -> Any:
        arrays = [
            npz.read_ids(self._files.local_path(shard_key(name, s.file)), s.count)
            for s in info.shards
        ]
        return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]

    # -- writing ------------------------------------------------------------------------

    @checked
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
        name: SetName,
        ids: Sequence[str],
        vectors: Any,
        *,
        metadata: Metadata | None = None,
        mode: SaveMode = "overwrite",
    ) -> EmbeddingInfo:
        """Save rows ``vectors`` with ``ids``: ``overwrite`` replaces the set, ``append`` adds
        a shard (same dimension, new ids). Durable when it returns."""
        matrix = as_matrix(vectors, check=False)
        id_array = as_ids(ids, matrix.shape[0])
        user_meta = plain_json(metadata, "metadata")
        with self._lock.hold():
            key = meta_key(name)
            used = [_number(k) for k in self._files.list(name)]  # refuses links in the set
            old: EmbeddingInfo | None = None
            next_shard = 1
            data = self._meta.read(key)
            if data is not None:
                try:
                    old, next_shard = setmeta.parse(data, self._meta.where(key))
                except IntegrityError:
                    if mode == "append":
                        raise
            next_shard = max([next_shard, *[u + 1 for u in used]])
            if mode == "append" and old is None and used:  # shards whose record is gone
                raise IntegrityError(
                    f"{self._meta.where(key)}: missing (shards without metadata); appending "
                    "would drop the set's rows: restore the file or save with "
                    'mode="overwrite"'
                )
            now = utc_iso()
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
            file = shard_name(next_shard)
            stored = self._files.put(
                shard_key(name, file),
                lambda path: FileDigest(*npz.write_shard(path, id_array, matrix, norms)),
            )
            shards.append(
                ShardInfo(
                    file=file,
                    count=matrix.shape[0],
                    sha256=stored.sha256,
                    size_bytes=stored.size,
                    created_at=now,
                )
            )
            fields |= {
                "name": name,
                "dim": matrix.shape[1],
                "dtype": matrix.dtype.name,
                "updated_at": now,
            }
            doc = setmeta.make_doc(fields, shards, next_shard + 1)
            self._meta.write(key, setmeta.dump(doc))  # the commit point
            self._files.retain(name, {shard_key(name, s.file) for s in shards})
            self._cache.forget(name)
            saved = setmeta.info_of(doc, self._meta.where(key))[0]
            self._index_changed(name, saved)
            return saved

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

    @checked
    @ensure(lambda self, name: not self._meta.exists(meta_key(name)), "the set is gone")
    def delete(self, name: SetName) -> None:
        """Delete the set and its files; ``NotFoundError`` if it does not exist."""
        with self._lock.hold():
            if not self._meta.delete(meta_key(name)):  # the commit point
                raise self._missing(name)
            self._files.retain(name, set())
            self._cache.forget(name)
            self._index_changed(name, None)

    # -- reading ------------------------------------------------------------------------

    @checked
    @ensure(
        lambda result: (
            result.info is not None
            and len(result.ids) == result.vectors.shape[0] == result.info.count
        ),
        "one id per row, as recorded",
    )
    def load(self, name: SetName, *, mmap: Flag = True, verify: Flag = True) -> EmbeddingSet:
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

    @checked
    @ensure(lambda result: len(result.shards) == 1, "one shard left")
    def compact(self, name: SetName) -> EmbeddingInfo:
        """Merge the set's shards into one (rows, ids and metadata unchanged): a write, under
        the writer lock, reading the whole set once. Makes a set that ``append`` left in
        several shards mappable by ``load(mmap=True)`` again."""
        with self._lock.hold():
            info = self.info(name)
            if len(info.shards) == 1:
                return info
            whole = self.load(name, mmap=False)
            return self.save(name, whole.ids, np.asarray(whole.vectors), metadata=info.metadata)

    @checked
    @require(lambda query: check_query(query), "query", "invalid")
    @require(
        lambda where, collection: where is None or collection is not None,
        "collection",
        "a where filter needs the collection whose records it selects",
    )
    @ensure(
        lambda query, k, metric, result: search_result_ok(result, query, k, metric),
        "at most k hits per query, best first",
    )
    def search(
        self,
        name: SetName,
        query: Any,
        *,
        k: Count = 10,
        metric: Metric = "cosine",
        where: Mapping[str, Any] | None = None,
        collection: CollectionName | None = None,
        exact: Flag = True,
    ) -> Hits:
        """Top-``k`` search. A 1-D ``query`` gives ``list[Hit]``; a 2-D one gives one list per
        row. ``l2`` scores are distances (smaller first).

        With ``collection`` (and optionally ``where``), only the ids whose current record in
        ``collection`` matches ``where`` are candidates, and the result is exact over exactly
        those rows. ``exact=False`` (no filter) uses the set's index from ``build_index``
        when it is current and built for ``metric`` (candidates re-scored exactly, so scores
        are exact; recall is approximate); otherwise the search is exact."""
        queries = as_queries(query)
        wanted = None
        if collection is not None:
            if self._candidates is None:
                raise InvalidInput("collection: this store cannot filter by records")
            wanted = self._candidates(collection, where)

        def run(info: EmbeddingInfo) -> builtins.list[builtins.list[Hit]]:
            if queries.shape[1] != info.dim:
                raise InvalidInput(
                    f"query: dimension {queries.shape[1]} differs from the set's {info.dim}"
                )
            q = queries.astype(compute_dtype(np.dtype(info.dtype)), copy=False)
            shards = [self._cached(name, s, info) for s in info.shards]
            starts = [0, *itertools.accumulate(s.count for s in info.shards)]
            if wanted is not None:
                rows = candidate_rows(self._row_maps.get(name, info, shards), wanted)
                scores, picked = subset_top(shards, starts, rows, q, metric, k)
                return hit_lists(shards, starts, scores, picked, queries, metric)
            if not exact:
                current = self._ann.current(name, info, metric)
                if current is not None:
                    found = ann_top(*current, shards, starts, queries, metric, k)
                    return ann_hit_lists(shards, starts, found)
            top = TopK(q, metric, k)
            for entry, start in zip(shards, starts, strict=False):
                top.add(entry.arrays.vectors, entry.term(metric), start)
            scores, rows = top.result()
            return hit_lists(shards, starts, scores, rows, queries, metric)

        result = self._snapshot(name, run)
        return result[0] if np.ndim(query) == 1 else result

    @checked
    @require(lambda kind: kind in annindex.KINDS, "kind", f"must be one of {annindex.KINDS}")
    @ensure(lambda self, name: self.index_info(name) is not None, "the set has a current index")
    def build_index(self, name: SetName, *, kind: str = "hnsw", **params: Any) -> None:
        """Build (or rebuild) the set's approximate-search index (optional extra ``ann``;
        ``StorageError`` naming it when missing). ``params``: ``metric`` ("cosine", the
        metric ``search(exact=False)`` must ask for), ``connectivity``, ``expansion_add``,
        ``expansion_search``, ``dtype`` ("f16", "f32" or "i8": how the graph stores rows)
        and ``oversample`` (candidates re-scored per hit). Takes the writer lock while it
        builds; the index is rebuilt after each later save of the set and dropped with it."""
        full = _checked_params(params)
        annindex.engine()
        with self._lock.hold():
            info = self.info(name)
            self._build(name, info, kind, full)

    def _build(self, name: str, info: EmbeddingInfo, kind: str, params: dict[str, Any]) -> None:
        shards = [self._cached(name, s, info) for s in info.shards]
        self._ann.build(name, info, [e.arrays.vectors for e in shards], kind, params)

    @checked
    @ensure(
        lambda result: result is None or {"kind", "params", "count", "sha256"} <= set(result),
        "what the current index records",
    )
    def index_info(self, name: SetName) -> dict[str, Any] | None:
        """The document of the set's current approximate-search index (kind, params, count,
        file, size and SHA-256, built_at), or None when it has none or it is stale."""
        info = self.info(name)
        doc = self._ann.document(name)
        return copy.deepcopy(doc) if doc is not None and is_current(doc, info) else None

    def _index_changed(self, name: str, info: EmbeddingInfo | None) -> None:
        """After the set changed (``info``; None: deleted), under the writer lock: rebuild
        its index with the same parameters, or drop it. The set is committed already, so a
        failure only leaves the index stale (searches are then exact) and warns."""
        try:
            doc = self._ann.document(name)
            if doc is None:
                return
            if info is None:
                self._ann.drop(name)
            elif not is_current(doc, info) and annindex.available():
                self._build(name, info, str(doc["kind"]), dict(doc["params"]))
        except StorageError as exc:
            warnings.warn(
                f"the ANN index of embedding set {name!r} was not updated ({exc}); "
                "search(exact=False) is exact until build_index runs again",
                RuntimeWarning,
                stacklevel=3,
            )

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
        return self._meta.holders(SET_META)

    @checked
    @ensure(lambda name, result: result.name == name, "the info names the set")
    def info(self, name: SetName) -> EmbeddingInfo:
        """What the store records about the set; ``NotFoundError`` if absent."""
        return self._read(name)[0]

    @checked
    def exists(self, name: SetName) -> bool:
        return self._meta.exists(meta_key(name))

    # -- maintenance --------------------------------------------------------------------

    @ensure(
        lambda self, result: all(str(self.root.parent) in p or self.context in p for p in result),
        "problems name paths of the context (or, on a server backend, the context)",
    )
    def verify(self) -> builtins.list[str]:
        """Check every set: the folders and files are what they should be (no link, no file
        where a folder belongs), metadata checksum, shard presence, size and SHA-256 (always
        re-hashed: finds damage made after a first check). Returns the problems found, each
        naming its path; never raises for damage."""
        walked: set[str] = set()

        def one(set_dir: Path) -> builtins.list[str]:
            walked.add(set_dir.name)
            return self._verify_set(set_dir)

        problems = part_problems(self.root, "an embedding set folder", one)
        try:  # sets whose documents are not in the local folder (a server backend)
            others = [n for n in self._meta.items() if n not in walked]
        except IntegrityError:  # the part folder is damaged: part_problems reported it
            others = []
        for name in others:
            problems += self._verify_set(self.root / name)
        ann = self._ann.verify(self.exists)
        links = link_problems(self.root.parent / ANN_DIR)  # the embedded ann folder, if any
        return problems + ann + [p for p in links if not any(p.split(":")[0] in a for a in ann)]

    def _verify_set(self, set_dir: Path) -> builtins.list[str]:
        name = set_dir.name
        if not is_valid_name(name):  # no key names it: only its shards can be reported
            return _unnamed_set(set_dir)
        key = meta_key(name)
        try:
            data = self._meta.read(key)
            if data is None:
                return self._without_metadata(name)
            info, _ = setmeta.parse(data, self._meta.where(key))
        except IntegrityError as exc:
            return [str(exc)]
        except StorageError as exc:
            if environmental(exc) is not None:
                raise  # an I/O failure, not damage
            return [str(exc)]
        problems: builtins.list[str] = []
        for shard in info.shards:
            problem = self._files.check(shard_key(name, shard.file), shard.size_bytes, shard.sha256)
            if problem is not None:
                problems.append(problem)
        return problems

    def _without_metadata(self, name: str) -> builtins.list[str]:
        """The problem of a set folder holding shards but no ``metadata.json`` (a save
        interrupted before its first commit, or a lost document), else nothing. A link in
        the folder makes ``FileStore.list`` refuse it: ``verify`` reports the link itself."""
        try:
            shards = self._files.list(name)
        except IntegrityError:
            return []
        if shards:
            return [f"{self._meta.where(meta_key(name))}: missing (shards without metadata)"]
        return []


def _unnamed_set(set_dir: Path) -> list[str]:
    """A folder whose name is no set name (no store key can name it) holding shards."""
    if any(SHARD_PATTERN.fullmatch(e.name) for e in entries(set_dir)):
        return [f"{set_dir / SET_META}: missing (shards without metadata)"]
    return []


def recorded_files(root: Path) -> dict[str, tuple[int, str]]:
    """``(size, sha256)`` on record for every shard of every set below the ``embeddings``
    folder ``root``, keyed by ``<set>/<shard file>`` (for export's check of what it packs),
    read through the embedded ``MetaStore`` over ``root`` (export packs a local folder). A
    damaged ``metadata.json`` raises ``IntegrityError`` naming it."""
    meta = LocalMetaStore(root, SET_META_PATTERN)
    out: dict[str, tuple[int, str]] = {}
    for name in meta.holders(SET_META):
        key = meta_key(name)
        data = meta.read(key)
        if data is None:  # deleted meanwhile
            continue
        info, _ = setmeta.parse(data, meta.where(key))
        for shard in info.shards:
            out[shard_key(name, shard.file)] = (shard.size_bytes, shard.sha256)
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


def _checked_params(params: dict[str, Any]) -> dict[str, Any]:
    """``build_index``'s parameters with the defaults filled in (``InvalidInput`` naming
    ``params`` for a bad one: keyword arguments cannot be bound by a precondition)."""
    try:
        return annindex.check_params(params)
    except ValueError as exc:
        raise InvalidInput(f"params: {exc}", argument="params") from None
