"""``PgContexts``: the catalogue of contexts kept in PostgreSQL (first cut).

PERSISTENCE_LAYER_STRATEGY.md section 11: one database per store. What lives in the database:

- the store's marker: the ``ctxstore_meta`` row (``format_version``; the embedded
  ``ctxstore.json``). ``open(create=False)`` only reads; a database without it is no store.
- which contexts exist: one ``ctxstore_contexts`` row per context, with its initial catalog
  (the embedded ``context.json``). ``create``, ``drop`` and ``install`` are one transaction
  each, so a context is in the database whole or not at all.
- the writer locks: ``PgLock``, a session-level ``pg_advisory_lock`` held on a dedicated
  connection (the store's lock, and one per context via ``context_lock``), so writers on
  every host that shares the database are serialised; a dead process's lock goes with its
  connection.

What stays local (strategy 9.2, the seam stops there today): ``root`` is a local working
folder given to the constructor; ``folder(name)`` is the context's local cache folder
(``contexts/<name>`` under it, which the records of the context still live in until the
PostgreSQL records part lands); ``staging`` makes local private folders and ``install`` puts
a staged folder in place there (rename / atomic exchange) and records the context's row.

psycopg is imported lazily (the ``postgres`` extra is optional).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import orjson

from app.backends.local.contexts import copy_log_file
from app.backends.local.ctxfiles import layout_problems as folder_problems
from app.backends.local.records.catalog import Catalog
from app.backends.local.staging import holding, staging_folder, sweep
from app.backends.local.swap import fsync_tree, refuse_linked_target, swap_in
from app.backends.postgres.connect import Database
from app.backends.postgres.records import tables as records_tables
from app.backends.postgres.records.tables import forget_context
from app.backends.postgres.schema import ensure_schema, schema_version
from app.core import layout
from app.core.atomic import fsync_dir, write_atomic
from app.core.errors import (
    ConflictError,
    IntegrityError,
    InvalidInput,
    NotFoundError,
    SchemaVersionError,
    StorageError,
    io_error,
)
from app.core.locks import DEFAULT_TIMEOUT, ReentrantLock
from app.core.names import child, is_valid_name
from app.core.nofollow import exists_as, read_regular
from app.core.version import UPGRADE_COMMAND
from app.formats.sqlindex import check_index_version

if TYPE_CHECKING:
    import psycopg

    from app.backends.postgres.files import PgParts

FORMAT_VERSION = 1
"""The store format this version reads and writes: the ``catalog`` part's row in
``ctxstore_meta`` (``app.backends.postgres.schema``), the embedded ``ctxstore.json``."""

PART = "catalog"
CONTEXTS_TABLE = "ctxstore_contexts"

DDL = (
    "CREATE TABLE IF NOT EXISTS ctxstore_contexts ("
    " name text PRIMARY KEY,"
    " catalog bytea NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now())",
)
SQL_NAMES = 'SELECT name FROM ctxstore_contexts ORDER BY name COLLATE "C"'
SQL_EXISTS = "SELECT 1 FROM ctxstore_contexts WHERE name = %s"
SQL_INSERT = (
    "INSERT INTO ctxstore_contexts (name, catalog) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING"
)
SQL_REPLACE = "UPDATE ctxstore_contexts SET catalog = %s, created_at = now() WHERE name = %s"
SQL_DELETE = "DELETE FROM ctxstore_contexts WHERE name = %s"
SQL_XACT_LOCK = "SELECT pg_advisory_xact_lock(%s)"
SQL_LOCK = "SELECT pg_advisory_lock(%s)"
SQL_UNLOCK = "SELECT pg_advisory_unlock(%s)"
SQL_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, false)"


def lock_key(what: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``what`` (``store``, ``context:<name>``)."""
    digest = hashlib.sha256(f"ctxstore:{what}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _one(row: tuple[Any, ...] | None) -> Any:
    return None if row is None else row[0]


class PgLock(ReentrantLock):
    """A writer lock: ``pg_advisory_lock(key)`` held on a dedicated session connection while
    the outermost ``hold`` runs; re-entrant within a thread, shared by threads
    (``ReentrantLock``), across processes and hosts by the server. ``ConflictError`` on
    timeout; a dead process's lock goes with its connection.

    The lock's session is not the connection its writes commit on, so two rules make the
    lock cover those writes (PERSISTENCE_LAYER_STRATEGY.md 11.3):

    - taken inside an open ``Database.transaction()``, the lock is kept until that
      transaction ends (its writes are not visible before), not only until the block ends;
    - every transaction of the holding thread takes the lock's *fence* key shared
      (``Database.add_fence``), and a new holder waits for the fence exclusively before it
      returns: a killed holder's lock session may end while its last transaction is still
      committing on the server; the next holder then sees that transaction's outcome.
    """

    def __init__(self, db: Database, what: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(timeout)
        self._db = db
        self.what = what
        self.key = lock_key(what)
        self.fence = lock_key(f"{what}:commits")
        self._session: contextlib.ExitStack | None = None

    def __repr__(self) -> str:
        return f"PgLock({self._db.where()!r}, {self.what!r})"

    @contextlib.contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[None]:
        """``ReentrantLock.hold``; taken inside an open transaction, kept until it ends."""
        if not self.held and self._db.in_transaction:
            self._db.keep_until_end(super().hold(timeout))
        with super().hold(timeout):
            yield

    def _take(self, wait: float) -> None:
        stack = contextlib.ExitStack()
        conn = stack.enter_context(self._db.session())
        import psycopg

        try:
            # a blocking wait (the server queues waiters fairly), bounded by lock_timeout;
            # then the previous holder's last transaction has ended (committed or rolled back)
            ms = max(1, int(wait * 1000))
            conn.execute(SQL_LOCK_TIMEOUT, (f"{ms}ms",))
            conn.execute(SQL_LOCK, (self.key,))
            conn.execute(SQL_XACT_LOCK, (self.fence,))  # autocommit: released at once
        except psycopg.errors.LockNotAvailable:
            stack.close()
            raise self._timed_out(wait) from None
        except psycopg.OperationalError as exc:  # the server went away: retryable
            stack.close()
            raise self._db.lost(exc) from None
        except BaseException:
            stack.close()
            raise
        self._session = stack
        self._db.add_fence(self.fence)

    def _timed_out(self, wait: float) -> ConflictError:
        return ConflictError(
            f"timed out after {wait}s waiting for the writer lock {self.what} of {self._db.where()}"
        )

    def _drop(self) -> None:
        self._db.remove_fence(self.fence)
        stack, self._session = self._session, None
        if stack is None:
            return
        # Ending the session (its locks released, or it closed) releases the lock.
        with contextlib.suppress(Exception):
            stack.close()


class ContextRecords(Protocol):
    """What the catalogue does with a context's records when they live in the database
    (``app.backends.postgres.install.RecordsInDatabase``; given by the backend, so this module
    never imports the records part)."""

    def load(self, conn: Any, name: str, staged: Path) -> None:
        """Replace the context's records by the staged folder's logs (caller's transaction)."""
        ...

    def document(self, conn: Any, name: str, stored: bytes | None) -> bytes:
        """The context's catalogue as the embedded ``context.json``."""
        ...

    def copy_log(self, name: str, folder: Path, lock: Any, collection: str, fh: IO[bytes]) -> int:
        """The collection's whole log, byte-exact, written to ``fh``."""
        ...


SQL_CATALOG = "SELECT catalog FROM ctxstore_contexts WHERE name = %s"


class PgContexts:
    """The contexts of the store in the PostgreSQL database ``url``; ``root`` is the local
    working folder (context caches and staging folders)."""

    def __init__(
        self,
        database: Database | str,
        root: Path,
        *,
        parts: PgParts | None = None,
        records: ContextRecords | None = None,
    ) -> None:
        """``parts``: where the store keeps its part files and documents (the
        ``ctxstore_files`` / ``ctxstore_docs`` tables and the blobs of its files URL);
        ``records``: set when the records live in the database. Then ``install`` loads a
        staged context's parts and records into them and ``drop`` forgets them, in the same
        transaction as the context's row; otherwise they stay in the local folder."""
        self._db = database if isinstance(database, Database) else Database(database)
        self._parts = parts
        self._records = records
        self._root = root
        self._contexts_dir = layout.contexts_dir(root)
        self._lock = PgLock(self._db, "store")
        self._context_locks: dict[str, PgLock] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"PgContexts({self.where()!r}, {str(self._root)!r})"

    def where(self) -> str:
        """The database, as errors name it (password redacted)."""
        return self._db.where()

    def close(self) -> None:
        """Close the connections (reopened on next use)."""
        self._db.close()

    @property
    def root(self) -> Path:
        return self._root

    @property
    def contexts_dir(self) -> Path:
        return self._contexts_dir

    @property
    def writer_lock(self) -> PgLock:
        return self._lock

    def context_lock(self, name: str) -> PgLock:
        """The writer lock of context ``name`` (one object per name)."""
        with self._guard:
            found = self._context_locks.get(name)
            if found is None:
                found = self._context_locks[name] = PgLock(self._db, f"context:{name}")
            return found

    # -- the database -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a pooled connection (committed when the block ends)."""
        import psycopg

        try:
            with self._db.transaction() as conn:
                yield conn
        except psycopg.Error as exc:
            text = str(exc).strip() or type(exc).__name__
            raise StorageError(f"{doing} at {self.where()}: {text}") from None

    def _version(self, conn: psycopg.Connection[Any]) -> int | None:
        """The store's format version, or None when the database holds no store."""
        version = schema_version(conn, PART)
        if version is not None and version < FORMAT_VERSION:
            raise SchemaVersionError(
                f"{self.where()}: store format {version} is older than this ctxstore's "
                f"({FORMAT_VERSION}); run `{UPGRADE_COMMAND}` (opening never migrates)"
            )
        if version is not None and version != FORMAT_VERSION:
            raise SchemaVersionError(
                f"{self.where()}: store format {version} is unknown "
                f"(this ctxstore reads {FORMAT_VERSION})"
            )
        return version

    # -- the store ----------------------------------------------------------------------------

    def open(self, *, create: bool) -> None:
        root = self._root
        if root.exists() and not root.is_dir():
            raise InvalidInput(f"root: {root} exists and is not a directory")
        with self._transaction("opening the store") as conn:
            if self._version(conn) is None:
                if not create:
                    raise NotFoundError(f"no store at {self.where()}")
                ensure_schema(conn, PART, DDL, FORMAT_VERSION)
                # the record tables too: a read never has to create them (reads never write)
                ensure_schema(conn, records_tables.PART, records_tables.DDL, records_tables.VERSION)
        if create:  # open_store(create=False) never writes (docs/api.md, "Guarantees")
            try:
                self._contexts_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise io_error("creating store", root, exc) from exc

    def sweep(self) -> None:
        with contextlib.suppress(StorageError):  # leftovers of killed operations only
            if self._contexts_dir.is_dir():
                sweep(self._contexts_dir)

    def check(self) -> None:
        with self._transaction("checking the store") as conn:
            if self._version(conn) is None:
                raise IntegrityError(f"{self.where()}: the store description is missing")
        if self._contexts_dir.exists() or os.path.islink(self._contexts_dir):
            exists_as(self._contexts_dir, "dir")

    def check_versions(self) -> None:
        for name in self.names():
            check_index_version(self._contexts_dir / name / layout.index_name(name))

    # -- contexts ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        with self._transaction("listing contexts") as conn:
            if self._version(conn) is None:
                return []
            rows = conn.execute(SQL_NAMES).fetchall()
        return [str(row[0]) for row in rows if is_valid_name(str(row[0]))]

    def _path(self, name: str) -> Path:
        return child(self._contexts_dir, name, "name")

    def exists(self, name: str) -> bool:
        self._path(name)  # validates the name
        with self._transaction("reading the catalogue") as conn:
            if self._version(conn) is None:
                return False
            return conn.execute(SQL_EXISTS, (name,)).fetchone() is not None

    def present(self, name: str) -> bool:
        # One transaction per creation: no half-created context stands in the database.
        return self.exists(name)

    def folder(self, name: str) -> Path:
        """The context's folder in this host's working folder, made on first use here (a
        context created by another host has none yet; it holds only this host's caches)."""
        path = self._path(name)
        if path.is_symlink():  # never used through a link (nothing may be written there)
            raise IntegrityError(f"{path}: the context folder is a symbolic link")
        if not path.is_dir():
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise io_error("creating", path, exc) from exc
        return path

    def create(self, name: str) -> None:
        path = self._path(name)
        if self.present(name):
            return
        initial = Catalog.initial(name)
        if path.is_symlink():
            raise IntegrityError(f"{path}: the context folder is a symbolic link")
        if path.exists():  # a cache left by a drop killed after its commit: never reused
            self._discard(name, path)
        try:
            path.mkdir(parents=True)
            fsync_dir(self._contexts_dir)
        except OSError as exc:
            raise io_error("creating", path, exc) from exc
        write_atomic(layout.catalog(path), initial)
        with self._transaction(f"creating context {name!r}") as conn:
            conn.execute(SQL_INSERT, (name, initial))

    def drop(self, name: str, release: Callable[[], AbstractContextManager[None]]) -> None:
        path = self._path(name)
        if path.is_symlink():  # a planted link: removed, its target left alone
            try:
                path.unlink()
                fsync_dir(self._contexts_dir)
            except OSError as exc:
                raise io_error("dropping", path, exc) from exc
            return
        if not self.present(name):
            raise NotFoundError(f"context {name!r} not found in {self.where()}")
        with release():
            with self._transaction(f"dropping context {name!r}") as conn:
                conn.execute(SQL_DELETE, (name,))
                forget_context(conn, name)  # its batches and records go in the same commit
                if self._parts is not None:  # its blobs are gc's once unreferenced
                    from app.backends.postgres.files_install import forget_rows

                    forget_rows(conn, name)
            if path.is_dir():
                self._discard(name, path)

    def _discard(self, name: str, path: Path) -> None:
        """Remove a context's local cache folder: renamed aside under a swept name (a sweep
        removes it if this process is killed before the removal ends), then removed."""
        with holding(path):
            dropped = f"{layout.staging_prefix('dropped')}{name}-{os.urandom(4).hex()}"
            trash = self._contexts_dir / dropped
            try:
                os.replace(path, trash)
                fsync_dir(self._contexts_dir)
            except OSError as exc:
                raise io_error("dropping", path, exc) from exc
        shutil.rmtree(trash, ignore_errors=True)

    # -- whole contexts ---------------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self, purpose: str) -> Iterator[Path]:
        try:
            self._contexts_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise io_error("staging", self._contexts_dir, exc) from exc
        with staging_folder(self._contexts_dir, purpose) as path:
            yield path

    def install(
        self, name: str, staged: Path, *, replace: bool, forget: Callable[[], None]
    ) -> None:
        target = self._path(name)
        refuse_linked_target(target)  # never swap with, or merge into, a link
        catalog_file = layout.catalog(staged)
        try:
            catalog = catalog_file.read_bytes()
            orjson.loads(catalog)
        except (OSError, orjson.JSONDecodeError) as exc:
            raise IntegrityError(f"{catalog_file}: the staged context has no catalog") from exc
        uploaded = self._upload_parts(name, staged)
        try:
            fsync_tree(staged)
            with self._transaction(f"installing context {name!r}") as conn:
                conn.execute(SQL_XACT_LOCK, (lock_key(f"install:{name}"),))
                if uploaded is not None and self._parts is not None:
                    from app.backends.postgres.files_install import (
                        replace_rows,
                        share_local_marks,
                    )

                    replace_rows(conn, self._parts, name, uploaded)
                    share_local_marks(conn, layout.trust_dir(self._root), uploaded)
                if self._records is not None:
                    self._records.load(conn, name, staged)
                if not replace:
                    inserted = conn.execute(SQL_INSERT, (name, catalog)).rowcount
                    if inserted != 1:
                        raise ConflictError(f"context {name!r} already exists in {self.where()}")
                    if target.exists():  # a cache left by a killed drop: never merged into
                        self._discard(name, target)
                    if self._records is not None:  # the working folder holds spools only
                        target.mkdir()
                        return
                    os.rename(staged, target)
                    fsync_dir(self._contexts_dir)
                    return
                if conn.execute(SQL_REPLACE, (catalog, name)).rowcount != 1:
                    raise NotFoundError(f"context {name!r} not found in {self.where()}")
                forget()
                if self._records is not None:
                    target.mkdir(exist_ok=True)
                elif target.is_dir():
                    swap_in(staged, target, name)
                else:
                    os.rename(staged, target)
                    fsync_dir(self._contexts_dir)
        except OSError as exc:
            raise io_error("installing context", target, exc) from exc

    def catalog_document(self, name: str) -> bytes:
        if self._records is None:
            path = layout.catalog(self.folder(name))
            try:
                return read_regular(path)
            except FileNotFoundError:
                raise NotFoundError(f"{path}: context description missing") from None
        with self._transaction(f"reading the catalogue of {name!r}") as conn:
            row = conn.execute(SQL_CATALOG, (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"context {name!r} not found in {self.where()}")
            return self._records.document(conn, name, bytes(row[0]))

    def layout_problems(self, name: str) -> list[str]:
        if self._records is not None:
            return []  # the records are rows; the working folder holds spools only
        return folder_problems(self.folder(name), name)

    def copy_log(self, name: str, collection: str, fh: IO[bytes]) -> int:
        folder = self.folder(name)
        if self._records is not None:
            return self._records.copy_log(name, folder, self.context_lock(name), collection, fh)
        return copy_log_file(folder / layout.log_name(collection), fh)

    def _upload_parts(self, name: str, staged: Path) -> Any:
        """Upload the staged context's part files as blobs of ``name`` (durable before the
        install transaction records them) and take its part folders out of the local folder
        (the context's parts live in the database and the files URL, not in its working
        folder); None when the store keeps its parts locally."""
        if self._parts is None:
            return None
        from app.backends.local.backend import PARTS
        from app.backends.postgres.files_install import upload_staged

        uploaded = upload_staged(self._parts, name, staged)
        for part in PARTS:
            folder = staged / part
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)
        return uploaded


__all__ = ["FORMAT_VERSION", "ContextRecords", "PgContexts", "PgLock", "lock_key"]
