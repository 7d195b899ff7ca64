"""The backend seam: what a storage backend provides to the managers.

- ``Records``: a context's committed-batch log and query index (the truth for records);
- ``WorkflowTracker``: the store's batch-workflow tracker (rows, claims, journal, staged items);
- ``FileStore``: immutable files (embedding shards, model files, staged workflow items);
- ``MetaStore``: small documents that are commit points (an embedding set's
  ``metadata.json``, a model version's ``vNNNN.json``; later aliases, tags, lineage, tokens,
  audit);
- ``ContextCatalog``: the store's catalogue of contexts (marker, list, create, drop, install);
- ``Access``: the store's service tokens and its chained audit log.

``Backend`` bundles them; ``app.backends.registry.backend_for`` picks one by the store's root
(a directory: ``app.backends.local.LocalBackend``). The full contract (what is atomic, what
survives a crash, what a PostgreSQL + object-storage backend must do for each call) is in
PERSISTENCE_LAYER_STRATEGY.md, section "The backend seam"; docs/api.md covers the public API
built on it. Nothing here touches the disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol, runtime_checkable

from pydantic import BaseModel

from app.core.clock import Stamp
from app.core.errors import IntegrityError
from app.core.indexes import Indexes
from app.core.locks import Lock
from app.core.schemas import CompactionReport, LatestCommit, RecordVersion
from app.core.spool import SizedIterable
from app.core.workflow_types import WorkflowStatus
from app.formats.accessdb import AuditMaker, AuditRow, TokenRow
from app.formats.staged_items import ChunkIndex, StagedItems

# -- files -------------------------------------------------------------------------------------


class FileDigest(NamedTuple):
    """What a file writer reports about the bytes it wrote."""

    sha256: str
    size: int


class StoredFile(NamedTuple):
    """A file the store holds: its key, size and SHA-256 (what the commit-point document
    records, and what a reader checks)."""

    key: str
    size: int
    sha256: str


FileWriter = Callable[[Path], FileDigest]
"""Writes the complete file at the given local path, atomically and durably (a temporary file
fsync'd and renamed into place, as ``app.core.atomic.atomic_file`` and
``app.formats.npz.write_shard`` do), and returns its digest."""


@runtime_checkable
class FileStore(Protocol):
    """Immutable files under keys ``"<item>/<file name>"`` (e.g. ``"my-set/shard-000001.npz"``).

    A file is written once and never changed: ``put`` of a key that exists is refused. A file
    *counts* only once a ``MetaStore`` document that names it commits; until then (or after
    the document stops naming it) it is garbage that ``retain`` (or a backend's gc) removes.
    """

    def put(self, key: str, write: FileWriter) -> StoredFile:
        """Store a new file under ``key`` whose bytes ``write`` produces.

        Atomic: on return the whole file is durable and readable under ``key``; on any
        failure (or a crash) nothing is readable under ``key`` and at most an unreferenced
        partial file is left for ``retain``/gc. ``ConflictError`` if ``key`` exists."""
        ...

    def local_path(self, key: str) -> Path:
        """A local path holding the key's bytes, to open without following links and to
        memory-map: the file itself (local store) or a copy in a local cache (object store;
        fetched and checked against the recorded SHA-256 first). Never checks anything the
        caller then checks on the opened descriptor."""
        ...

    def open(self, key: str) -> int:
        """A read-only descriptor of the file, opened without following a link (a link, a
        folder or a device where the file belongs is ``IntegrityError``); ``NotFoundError``
        if it is missing. The caller closes it."""
        ...

    def check(self, key: str, size: int, sha256: str) -> str | None:
        """The problem with the stored file (missing, not a regular file, size or SHA-256
        differing from the recorded ones) as text naming it, or None. Always reads every
        byte. Raises only for I/O errors (they are not damage)."""
        ...

    def list(self, item: str) -> list[str]:
        """The keys of the item's files, sorted; ``[]`` for an unknown item. Refuses
        (``IntegrityError`` naming it) a link or special file anywhere in the item."""
        ...

    def delete(self, key: str) -> bool:
        """Remove the file; returns whether it existed. Durable on return."""
        ...

    def retain(self, item: str, keep: set[str]) -> None:
        """Remove the item's files whose key is not in ``keep`` and the leftovers of
        interrupted ``put`` calls (best effort: what cannot be removed now is removed by a
        later call). The caller holds the item's writer lock and has committed the document
        that names ``keep``."""
        ...


# -- documents -----------------------------------------------------------------------------


@runtime_checkable
class MetaStore(Protocol):
    """Small documents under keys ``"<item>/<document name>"`` (e.g.
    ``"my-set/metadata.json"``, ``"my-model/v0001.json"``): the commit points of the parts.

    Each ``write`` and ``delete`` is one atomic, durable transaction: a reader sees the old
    document or the new one, never a mix, and a crash leaves one of the two.
    """

    def where(self, key: str) -> Path:
        """How errors and ``verify`` name the document (a file's path; a URL without its
        password on a database backend)."""
        ...

    def exists(self, key: str) -> bool:
        """Whether the document exists (``IntegrityError`` as for ``read``)."""
        ...

    def read(self, key: str) -> bytes | None:
        """The document's bytes, or None if it does not exist. A link or a folder where the
        document (or its item folder) belongs is ``IntegrityError`` naming it."""
        ...

    def write(self, key: str, data: bytes) -> None:
        """Create or replace the document atomically; durable on return."""
        ...

    def delete(self, key: str) -> bool:
        """Remove the document; returns whether it existed. Durable on return."""
        ...

    def names(self, item: str) -> list[str]:
        """The names of the item's documents, sorted (``[]`` for an unknown item)."""
        ...

    def holders(self, name: str) -> list[str]:
        """The items holding a document called ``name``, sorted (a damaged item, e.g. a link
        where its folder belongs, is not listed: ``verify`` reports it)."""
        ...

    def items(self) -> list[str]:
        """The items holding at least one document (embedded: every real item folder of the
        part), sorted; ``[]`` for a part that holds nothing. ``IntegrityError`` if the part
        itself is damaged (a link or a file where its folder belongs); a damaged item is not
        listed (``verify`` reports it)."""
        ...


# -- records -------------------------------------------------------------------------------


class CommittedBatch(Protocol):
    """A committed batch as the records backend reports it (named fields; the embedded
    backend's row also carries the batch's byte range in the log)."""

    @property
    def batch_id(self) -> str: ...
    @property
    def collection(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def count(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def committed_at(self) -> str: ...


class CompiledQuery(Protocol):
    """A filter and an order compiled by a records backend (opaque to the managers, which
    cache it) with the backend-independent predicate that re-checks each returned record."""

    @property
    def check(self) -> Callable[[Mapping[str, Any]], bool] | None: ...


OtherChecks = Callable[[], tuple[list[str], list[str]]]
"""The checks of a context's other parts, run by ``Records.verify`` under the same writer
lock: returns ``(problems, what was checked)``."""


class Records(Protocol):
    """One context's record collections: the committed-batch log (the truth) and the query
    index derived from it.

    The managers (``app.managers.context.Context``) validate, encode (``app.core.codec``:
    canonical JSON bytes per record), decide idempotency, build receipts and re-check
    filters; a ``Records`` implementation only stores and finds. Writers are serialised by
    ``writing()`` (one writer per context at a time, across processes and, on a server
    backend, machines); readers never wait and never see a partial batch. Every read of the
    index is preceded by ``ready()``.

    Changes from the first cut of this seam (each needed by today's behaviour): ``commit``
    became ``append`` / ``delete`` (a batch carries encoded records or ids, never log-line
    syntax: the log format is the backend's business); ``get_many`` became ``get`` (one
    lookup, what the API reads); added ``writer_lock``, ``is_ready``, ``ready_if_idle``,
    ``has``, ``damaged``, ``missing_logs``; ``verify`` takes the other parts' checks, run
    under the same lock; ``current_records`` returns a list read under the writer lock.
    """

    @property
    def writer_lock(self) -> Lock:
        """The context's writer lock (re-entrant within a thread; across processes and, on a
        server backend, machines). The context's other parts and whole-context operations
        hold it too."""
        ...

    @property
    def is_ready(self) -> bool:
        """True once ``ready`` (or ``ready_if_idle``, ``rebuild``) brought the index up to the
        log in this process, until ``close``."""
        ...

    def ready(self) -> None:
        """Bring the index up to the log (cut a torn tail, apply committed batches the index
        misses), taking the writer lock only when something is behind; follows an index
        another process replaced. Idempotent, cheap when nothing is behind. ``IntegrityError``
        for damaged context files; a ``StorageError`` naming the fix when the index is behind
        and cannot be written here."""
        ...

    def ready_if_idle(self) -> bool:
        """``ready`` if no writer holds the lock now; returns whether the index is ready."""
        ...

    def writing(self) -> AbstractContextManager[None]:
        """Hold the context's writer lock (re-entrant in a thread) for a sequence of reads
        and one commit that must see no other writer; follows an index another process
        replaced before the block runs."""
        ...

    def spool_folder(self) -> AbstractContextManager[Path]:
        """A private local folder for the spool of a batch too large to hold in memory,
        locked while in use and removed afterwards (also after a kill: swept when the store
        next opens); never listed as a context."""
        ...

    def schema(self, collection: str) -> type[BaseModel] | None:
        """The collection's pydantic schema from the catalog (None: schemaless)."""
        ...

    def define(self, collection: str, schema: type[BaseModel] | None, indexes: Indexes) -> None:
        """Record the collection in the catalog, create its log and its indexes (normalised
        by ``app.core.indexes``); the caller holds ``writing()``."""
        ...

    def collections(self) -> list[str]:
        """The collections that have a log, sorted."""
        ...

    def has(self, collection: str) -> bool:
        """Whether the collection has a log (cuts its torn tail first; caller holds
        ``writing()``)."""
        ...

    def append(
        self,
        collection: str,
        batch_id: str,
        ids: SizedIterable[str],
        records: SizedIterable[bytes],
        digest: str | None,
    ) -> CommittedBatch:
        """Commit one batch of record versions (``records``: each record's canonical JSON,
        ``ids`` their ids in the same order) atomically and durably: on return every record
        is in the log and the index; a crash before the commit point leaves none of them
        visible, after it all of them. ``digest`` (the request digest) is stored with the
        batch. Creates the collection's log if needed. The caller holds ``writing()`` and has
        checked ``batch`` first (idempotency by batch id).

        ``ids`` and ``records`` are sized and re-iterable, not necessarily lists: a large
        batch arrives as views over a spool on disk (``app.core.spool``), so an
        implementation streams them (iterating each as often as it needs, never holding the
        whole batch) and may not index into them."""
        ...

    def delete(
        self, collection: str, batch_id: str, ids: Sequence[str], digest: str | None
    ) -> CommittedBatch:
        """Commit one batch of deletions of ``ids`` (all existing), as ``append`` does; an
        empty ``ids`` commits an empty batch (its id is then taken)."""
        ...

    def batch(self, batch_id: str) -> CommittedBatch | None:
        """The committed batch with this id (in any collection), or None."""
        ...

    def request_digest(self, batch: Any) -> str | None:
        """The request digest stored with ``batch`` (a ``CommittedBatch`` this backend
        returned, typed ``Any`` so each backend takes its own row type; None for batches
        written before digests existed): what tells a repeat from a different payload."""
        ...

    def get(self, collection: str, record_id: str) -> str | None:
        """The current encoded version of the record (None if absent or deleted)."""
        ...

    def existing(self, collection: str, ids: Sequence[str]) -> list[str]:
        """Those of ``ids`` that currently exist, in the given order."""
        ...

    def compile(self, where: Mapping[str, Any] | None, order_by: Any) -> CompiledQuery:
        """Compile a filter and an order (``InvalidInput`` for a bad one)."""
        ...

    def query(
        self, collection: str, plan: Any, limit: int | None, offset: int
    ) -> list[dict[str, Any]]:
        """Current records matching ``plan`` (from ``compile``), in its order (ties: commit
        order), from one snapshot."""
        ...

    def stream(self, collection: str, plan: Any) -> Iterator[dict[str, Any]]:
        """``query`` without a limit, with flat memory, from one snapshot."""
        ...

    def count(self, collection: str, plan: Any) -> int: ...

    def select_ids(self, collection: str, plan: Any) -> list[str]:
        """Ids of the current records matching ``plan`` (the targets of a delete)."""
        ...

    def damaged(self, collection: str) -> IntegrityError:
        """The error naming the collection's index when a returned record fails a re-check
        (raised by the caller)."""
        ...

    def history(self, collection: str, ids: Iterable[str]) -> dict[str, list[RecordVersion]]:
        """Every version and deletion of ``ids`` still in the log, oldest first."""
        ...

    def latest_commits(self, collection: str, ids: Iterable[str]) -> dict[str, LatestCommit]:
        """``(commit time, deleted)`` of each id's latest log entry, read from the log under
        the writer lock."""
        ...

    def current_records(self, collection: str) -> list[dict[str, Any]]:
        """Every current record in commit order, read from the log (the truth) under the
        writer lock."""
        ...

    def compact(self, collection: str) -> CompactionReport:
        """Drop superseded versions and tombstones from the log, atomically (caller holds
        ``writing()``)."""
        ...

    def write_compacted(self, collection: str, fh: IO[bytes]) -> int:
        """Write a compacted copy of the collection's log (batch-log format) to ``fh``; the
        live log is untouched. Returns the records written; ``NotFoundError`` for a
        collection without a log. The caller holds ``writing()``."""
        ...

    def write_log(self, collection: str, fh: IO[bytes]) -> int:
        """Write the collection's log to ``fh`` in batch-log format (``app.formats.batchlog``:
        a header, then every committed batch byte-exact as committed, in commit order);
        returns the bytes written. ``NotFoundError`` for a collection without a log. The
        caller holds ``writing()`` (whole-context transfer)."""
        ...

    def ingest_log(self, collection: str, fh: IO[bytes]) -> int:
        """Read a batch-log stream (what ``write_log`` writes) from ``fh``, verify every batch
        (``IntegrityError`` naming the damage, nothing written) and insert its batches, byte
        for byte, into the collection, which must be empty (``ConflictError`` if it holds a
        batch, or a batch id is taken in the context); the index follows. Returns the batches
        inserted. The caller holds ``writing()``."""
        ...

    def missing_logs(self) -> list[str]:
        """A problem for every collection the index holds whose log is gone."""
        ...

    def verify(self, others: OtherChecks) -> tuple[list[str], list[str]]:
        """``(problems, checked)`` over the context's files, the log of every collection, the
        index and, under the same writer lock, ``others``. Reports damage, never raises for
        it (I/O and permission errors are raised)."""
        ...

    def rebuild(self) -> None:
        """Re-derive the index from the logs (repairs any damage to the index)."""
        ...

    def release(self) -> bool:
        """Close idle connections (reopened on next use); whether none is left open."""
        ...

    def close(self) -> None:
        """Close every connection; the next use calls ``ready`` again."""
        ...


# -- the workflow tracker ------------------------------------------------------------------

Row = dict[str, Any]


class JournalNote(Protocol):
    """One noted record-store call of a workflow chunk."""

    @property
    def chunk_no(self) -> int: ...
    @property
    def call_no(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def collection(self) -> str: ...
    @property
    def batch_id(self) -> str: ...
    @property
    def ids(self) -> list[str]: ...
    @property
    def existed(self) -> list[str]: ...
    @property
    def committed(self) -> bool: ...


class WorkflowTracker(Protocol):
    """The store's workflow rows, their claims, the write journal and the staged items.

    Every state change is one transaction checked against the state machine
    (``app.core.workflow_types``); calls taking ``owner`` change nothing (None / False) once
    the workflow is no longer processing under that owner token.
    """

    @property
    def path(self) -> Path:
        """How errors name the tracker (a file; a URL without password on a server)."""
        ...

    def stage_items(self, workflow_id: str, lines: Iterable[bytes], chunk_size: int) -> StagedItems:
        """Write the encoded items durably, unreferenced until ``insert``/``plan`` names them."""
        ...

    def read_chunk(self, items_file: str, index: ChunkIndex, chunk_no: int) -> list[bytes]:
        """One chunk's encoded items, CRC-checked (``IntegrityError`` naming the file)."""
        ...

    def discard_items(self, items_file: str | None) -> None: ...

    def insert(self, row: Row, index: ChunkIndex) -> None:
        """Insert a new workflow row; ``ConflictError`` if the id is taken."""
        ...

    def exists(self, workflow_id: str) -> bool: ...

    def get(self, workflow_id: str) -> Row:
        """The workflow's summary row; ``NotFoundError`` if unknown."""
        ...

    def chunk_index(self, workflow_id: str) -> ChunkIndex: ...

    def list_rows(
        self,
        *,
        status: str | None,
        workflow_type: str | None,
        context: str | None,
        limit: int,
        offset: int,
    ) -> list[Row]:
        """Summary rows, newest first."""
        ...

    def batch_ids(self, workflow_id: str) -> list[str]:
        """Batch ids of the record-store calls the workflow committed, in order."""
        ...

    def move(
        self,
        workflow_id: str,
        new: WorkflowStatus | None,
        *,
        if_owner: str | None = None,
        expect: Iterable[WorkflowStatus] | None = None,
        errors: Sequence[str] = (),
        extra_errors: int = 0,
        **fields: Any,
    ) -> Row | None:
        """Change a workflow in one transaction, checking the state machine."""
        ...

    def claim(
        self,
        workflow_id: str | None,
        owner: str,
        worker: str,
        now: Stamp,
        types: Sequence[str] = (),
    ) -> Row | None:
        """Atomically move one pending workflow to processing under ``owner``."""
        ...

    def cancel(self, workflow_id: str, now: float) -> Row: ...

    def recover_stale(self, stale_after: float, now: Stamp) -> list[str]:
        """Hand workflows whose heartbeat is stale back to pending (or cancelled)."""
        ...

    def heartbeat(self, workflow_id: str, owner: str, now: Stamp) -> bool: ...

    def plan(
        self, workflow_id: str, owner: str, staged: StagedItems, chunk_size: int, now: Stamp
    ) -> bool:
        """Attach items resolved at the first processing (a delete's targets)."""
        ...

    def chunk_done(
        self, workflow_id: str, owner: str, chunk_no: int, items: int, now: Stamp
    ) -> Row | None:
        """Record a committed chunk: progress, heartbeat and its journal notes, together."""
        ...

    def attempt_failed(
        self, workflow_id: str, owner: str, error: str, retry_in: float | None, now: float
    ) -> Row | None:
        """Record a failed chunk attempt (``attempts``, ``chunk_failures``, ``errors``): with
        ``retry_in`` the workflow goes back to pending, unowned, claimable ``retry_in`` seconds
        later; without, it fails (``finished_at`` = ``now``). None if no longer ours."""
        ...

    def pending_types(self) -> dict[str, int]:
        """How many pending workflows each workflow type has."""
        ...

    def journal_add(
        self,
        workflow_id: str,
        chunk_no: int,
        call_no: int,
        kind: str,
        collection: str,
        batch_id: str,
        ids: Sequence[str],
        existed: Sequence[str],
    ) -> None:
        """Note a record-store call before it is made (the first note of a call wins)."""
        ...

    def journal(self, workflow_id: str) -> Iterator[JournalNote]: ...

    def purge(self, statuses: Iterable[WorkflowStatus], before: float) -> list[str | None]:
        """Delete finished workflows; returns their items files (removed by the caller)."""
        ...

    def orphans(self, older_than: float) -> list[Path]:
        """Staged items no workflow names, older than ``older_than`` (epoch seconds)."""
        ...

    def aggregates(self) -> dict[str, Any]: ...

    def check(self) -> list[str]:
        """Problems in the tracker and its staged items; never raises for damage."""
        ...

    def close(self) -> None: ...


# -- the catalogue of contexts -------------------------------------------------------------


class ContextCatalog(Protocol):
    """The store's catalogue of contexts: the store's format marker, which contexts exist,
    creating and dropping them, the leftovers of killed operations, and putting a whole staged
    context in place (docs/api.md "Opening a store", "Contexts", "Whole contexts").

    ``app.managers.store.Store`` keeps the logic: contracts and errors of the public API, the
    open ``Context`` objects and their LRU, and the lock order (the store's ``writer_lock``,
    then a context's writer lock). It calls this for everything that touches where contexts
    live; the caller holds ``writer_lock`` around ``create``, ``drop`` and ``install``.

    Where this stops (chosen, not forgotten): a staged copy of a whole context (import,
    merge, ``save_context``, export snapshots) is a **local folder** on every backend --
    ``staging`` makes one, the store opens it with ``LocalBackend.at`` -- and ``install``
    takes such a folder. The embedded backend renames it into ``contexts/`` or exchanges it
    atomically with the live folder (``renameat2``); a server backend copies its records and
    part files into the server under one transaction per context, and ``forget`` runs before
    the live context changes (PostgreSQL: part files uploaded as blobs first, then one
    transaction swaps the context's row, its part rows and its record tables). The reverse,
    materialising a live context into a staged folder (export, merge), reads through
    ``catalog_document``, ``copy_log`` and the parts' stores, so an archive is the same on
    every backend. ``root``, ``contexts_dir`` and ``folder`` are local folders:
    the embedded store directory and its context folders; for a server backend, its local
    working folder (trust marks, append buffers, staging) and per-context cache.
    """

    @property
    def root(self) -> Path:
        """The store's local folder (embedded: the store directory)."""
        ...

    @property
    def contexts_dir(self) -> Path:
        """The local folder that holds the contexts' folders and the staging folders."""
        ...

    @property
    def writer_lock(self) -> Lock:
        """The store's writer lock (create, drop and install hold it; re-entrant)."""
        ...

    def open(self, *, create: bool) -> None:
        """Check the store's marker (format version), creating the store first when it does
        not exist and ``create``: ``NotFoundError`` (no store, not ``create``),
        ``InvalidInput`` (the root is not a store location), ``IntegrityError`` (damaged
        marker), ``SchemaVersionError`` (a format this version does not read). Without
        ``create`` nothing is written."""
        ...

    def sweep(self) -> None:
        """Remove what killed operations left (staging folders, half-dropped contexts), never
        what a running operation holds; best effort, never raises for it."""
        ...

    def check(self) -> None:
        """``IntegrityError`` if the catalogue itself is damaged (e.g. a link or a file where
        the contexts folder belongs)."""
        ...

    def check_versions(self) -> None:
        """``SchemaVersionError`` if a context's index was written by an unknown version;
        opens nothing for good."""
        ...

    def names(self) -> list[str]:
        """The contexts, sorted, damaged ones and unfinished creations included."""
        ...

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists complete (its catalog was written)."""
        ...

    def present(self, name: str) -> bool:
        """Whether something stands where ``name`` belongs (a complete context, a damaged one,
        a creation that never finished): it is opened, never silently re-created empty."""
        ...

    def folder(self, name: str) -> Path:
        """The local folder a ``Context`` of ``name`` works in; ``IntegrityError`` if it is a
        symbolic link (never used through one)."""
        ...

    def create(self, name: str) -> None:
        """Create ``name`` with its initial catalog, durably; nothing if ``present``."""
        ...

    def drop(self, name: str, release: Callable[[], AbstractContextManager[None]]) -> None:
        """Remove ``name`` and everything in it (a link where it belongs: the link only, its
        target untouched, ``release`` not called); ``NotFoundError`` if not ``present``.
        The removal runs inside ``release()``: the store holds the context's writer lock and
        closes it there. Atomic: a crash leaves the context whole or gone (a leftover
        removed by ``sweep``)."""
        ...

    def staging(self, purpose: str) -> AbstractContextManager[Path]:
        """A fresh private local folder, locked while in use and removed afterwards unless it
        was installed (``purpose`` in ``layout.STAGING_PURPOSES``); never listed by
        ``names``."""
        ...

    def catalog_document(self, name: str) -> bytes:
        """The collection catalogue of context ``name`` as the embedded ``context.json``
        bytes (what an export packs); ``NotFoundError`` when it has none. The caller holds the
        context's writer lock."""
        ...

    def layout_problems(self, name: str) -> list[str]:
        """Cheap checks of the context's own files before a whole-context copy (embedded: a
        link, a missing ``context.json``, a log or index that is not a regular file);
        ``[]`` where the records are not files (a server backend)."""
        ...

    def copy_log(self, name: str, collection: str, fh: IO[bytes]) -> int:
        """Write the collection's whole log (every committed batch byte-exact, in the
        batch-log format) to ``fh``; returns the bytes written. The caller holds the
        context's writer lock (a merge copies the live context this way)."""
        ...

    def install(
        self, name: str, staged: Path, *, replace: bool, forget: Callable[[], None]
    ) -> None:
        """Make the staged folder ``staged`` the context ``name``, durably and atomically:
        new (``replace`` False) or replacing the live one (``NotFoundError`` if there is
        none; ``forget()`` is called first so the store drops its open ``Context``). Readers
        see the old content or the new, never a mix. Never installs into or over a link."""
        ...


# -- service access: tokens and the audit log -----------------------------------------------


class Access(Protocol):
    """The store's service tokens and its audit log (docs/api.md, "Service security").

    Rows only: the managers (``app.managers.access``) make the token hashes and the audit
    chain under the trust key, which never reaches a backend. Tokens are ``TokenRow`` keyed by
    their public id (one indexed read per lookup), names unique; audit entries are
    ``AuditRow`` with a dense ``seq`` from 1.

    Reads of a store where nothing was ever written answer empty (no tokens, no entries) and
    create nothing, so a read-only store lists. Each write is one atomic, durable transaction.
    Embedded: ``access.sqlite`` at the store's root (``app.formats.accessdb``). PostgreSQL:
    two tables in the store's database; ``append_audit`` locks the log (``LOCK TABLE ... IN
    EXCLUSIVE MODE`` or an advisory lock) in the transaction that reads the newest entry and
    inserts the next.
    """

    def where(self) -> str:
        """How errors and ``verify`` name the access data (a file; a URL without password)."""
        ...

    def add_token(self, row: TokenRow) -> None:
        """Store a new token; ``ConflictError`` if its name (or id) is taken."""
        ...

    def token(self, token_id: str) -> TokenRow | None:
        """The token with this public id, or None (one indexed read)."""
        ...

    def tokens(self) -> list[TokenRow]:
        """Every token, sorted by name."""
        ...

    def remove_token(self, name: str) -> bool:
        """Delete the token named ``name``; returns whether it existed."""
        ...

    def append_audit(self, make: AuditMaker) -> AuditRow:
        """Append ``make(newest entry or None)`` in one transaction that holds the log against
        every other appender (threads, processes, machines) from reading the newest entry to
        committing the new one: the chain stays dense and linear. Returns the stored row."""
        ...

    def audit_rows(self, offset: int = 0, limit: int | None = None) -> list[AuditRow]:
        """Entries in ``seq`` order, from the ``offset``-th, at most ``limit`` of them."""
        ...

    def audit_after(self, seq: int, limit: int) -> list[AuditRow]:
        """At most ``limit`` entries with a ``seq`` above ``seq``, in order (an indexed range
        read: how ``verify`` walks a long log)."""
        ...

    def audit_count(self) -> int:
        """How many entries the log holds."""
        ...

    def audit_last(self) -> AuditRow | None:
        """The newest entry, or None."""
        ...

    def close(self) -> None:
        """Close every connection (reopened on next use)."""
        ...


# -- the bundle ----------------------------------------------------------------------------


class Backend(Protocol):
    """Where a store keeps everything: one instance per open store."""

    @property
    def url(self) -> str:
        """The store's root as shown to people (a URL's password redacted)."""
        ...

    def records(self, context: str) -> Records:
        """The record collections of ``context``."""
        ...

    def tracker(self) -> WorkflowTracker:
        """The store's workflow tracker."""
        ...

    def files(self, context: str, part: str) -> FileStore:
        """The immutable files of one part (``"embeddings"``, ``"models"``) of a context."""
        ...

    def meta(self, context: str, part: str) -> MetaStore:
        """The commit-point documents of one part of a context."""
        ...

    def catalog(self) -> ContextCatalog:
        """The store's catalogue of contexts (the same object on every call)."""
        ...

    def access(self) -> Access:
        """The store's service tokens and audit log."""
        ...

    def atomic(self) -> AbstractContextManager[None]:
        """One unit of work: on a server backend every records and tracker write made in the
        block by this thread commits together when the block ends (or none of them, on an
        exception); a workflow chunk's record writes and its completion run in one. The
        embedded backend commits each write on its own (exactly-once comes from its journal
        and batch ids): there the block changes nothing."""
        ...

    def close(self) -> None:
        """Close the backend's shared connections (reopened on next use)."""
        ...
