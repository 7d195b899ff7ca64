"""``ModelStore`` (``ctx.models``): versioned models of one context (docs/api.md, "Models").

A version is a file ``<name>/vNNNN.<format>`` (written by the format's codec) in the part's
``FileStore`` and a checksummed record ``<name>/vNNNN.json`` (``app.formats.modelrecord``) in
its ``MetaStore`` (``app.backends``; the embedded backend keeps both in ``models/<name>/``).
The record is the commit point: a save puts the file (durable first), then (formats whose
reading runs code) writes the trust mark signed with the trust key, then the record, each
atomically. Every file is opened without following a link and its SHA-256 checked on that
descriptor before it is decoded (the codec reads ``FileStore.local_path``); which formats need
trust is the codec's ``runs_code`` (see ``trust``). ``trust`` signs the mark of a version the
caller vouches for; ``trust_existing`` re-signs the unsigned marks version 1 wrote.
"""

from __future__ import annotations

import builtins
import contextlib
from pathlib import Path
from typing import Any

import icontract

from app.backends.local import LocalFileStore, LocalMetaStore
from app.backends.protocols import FileDigest, FileStore, MetaStore
from app.core import trustkey
from app.core.artifacts import ModelInfo
from app.core.atomic import write_atomic
from app.core.clock import utc_iso
from app.core.contracts import ensure, ensure_full, invariant, require
from app.core.errors import (
    IntegrityError,
    InvalidInput,
    NotFoundError,
    StorageError,
    environmental,
)
from app.core.layout import MODEL_FILE_PATTERN, MODEL_RECORD_PATTERN, model_file
from app.core.locks import Lock
from app.core.names import child, is_valid_name
from app.core.nofollow import check_chain, part_problems
from app.core.rules import Flag, Metadata, ModelName, Version, checked
from app.formats import modelcodecs, modelrecord
from app.formats.hashio import chunk_digests, plain_json
from app.formats.modelcodecs import Codec, Written
from app.managers.models import folder, trust
from app.managers.models.folder import file_key, record_key


def _into_ok(into: object) -> bool:
    return into is None or callable(getattr(into, "load_state_dict", None))


def _format_ok(format: object) -> bool:
    return format is None or modelcodecs.is_format(format)


@invariant(
    lambda self: (
        getattr(self._lock, "path", None) is None or self._lock.path.parent == self.root.parent
    ),
    "model writes serialise on their context's writer lock (a file lock: the context's own)",
)
class ModelStore(icontract.DBC):
    """Versioned models of one context: save / load / list / versions / delete."""

    def __init__(
        self,
        root: Path,
        lock: Lock,
        context: str,
        trust_dir: Path,
        *,
        files: FileStore | None = None,
        meta: MetaStore | None = None,
    ) -> None:
        """The models of ``context`` in its part folder ``root``; ``files`` and ``meta`` are
        the backend's stores for this part (default: the embedded ones over ``root``)."""
        self.root = root
        self.context = context
        self.trust_dir = trust_dir
        self._lock = lock
        self._files: FileStore = files or LocalFileStore(
            root, MODEL_FILE_PATTERN, "model", documents=MODEL_RECORD_PATTERN
        )
        self._meta: MetaStore = meta or LocalMetaStore(root, MODEL_RECORD_PATTERN)

    def __repr__(self) -> str:
        return f"ModelStore({self.context!r})"

    # -- internals ----------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return child(self.root, name, "name")

    def _checked_dir(self, name: str) -> Path:
        """The model's folder, after checking (``lstat``) that the context folder, the
        ``models`` folder and the model's folder are real directories where they exist."""
        return check_chain(self.root.parent, self.root.name, self._dir(name).name, last="dir")

    def _numbers(self, name: str) -> builtins.list[int]:
        return folder.record_numbers(self._meta, self._dir(name).name)

    def _record(self, name: str, version: int) -> modelrecord.VersionRecord:
        record = folder.read_record(self._meta, self._dir(name).name, version)
        if record is None:  # missing, or deleted meanwhile
            raise NotFoundError(
                f"model {name!r} version {version} not found in context {self.context!r}"
            )
        return record

    def _info(self, name: str, version: int) -> ModelInfo:
        return self._record(name, version).info

    def _latest(self, name: str) -> ModelInfo:
        numbers = self._numbers(name)
        if not numbers:
            raise NotFoundError(f"model {name!r} not found in context {self.context!r}")
        return self._info(name, numbers[-1])

    @checked
    def path_of(self, name: ModelName, version: Version) -> Path:
        """The artefact file of a recorded version (for export and merge)."""
        return self._files.local_path(file_key(name, self._info(name, version).file))

    @require(lambda sha256: isinstance(sha256, str), "sha256", "must be a string")
    def is_trusted(self, sha256: str) -> bool:
        """True when a file with this digest whose reading runs code (a pickle) carries a
        trust mark signed with this user's trust key (written by this store's own ``save``
        or by ``trust``): such a file loads without ``trusted=True``."""
        return trust.is_marked(self.trust_dir, sha256)

    @require(lambda format: isinstance(format, str), "format", "must be a string")
    def runs_code(self, format: str) -> bool:
        """True when reading a model file of ``format`` may run code from it (a pickle,
        which loads only when trusted); False for weights-only formats. ``InvalidInput``
        for an unknown format."""
        return modelcodecs.runs_code(format)

    # -- writing ------------------------------------------------------------------------

    @checked
    @require(lambda model: model is not None, "model", "must not be None")
    @require(
        lambda format: _format_ok(format),
        "format",
        f"must be None or one of {', '.join(modelcodecs.formats())}",
    )
    @ensure(
        lambda name, result: (
            result.name == name and result.version >= 1 and len(result.sha256) == 64
        ),
        "a new checksummed version of the named model",
    )
    @ensure(
        lambda format, result: format is None or result.format == format,
        "saved in the format asked for",
    )
    def save(
        self,
        name: ModelName,
        model: Any,
        *,
        metadata: Metadata | None = None,
        format: str | None = None,
    ) -> ModelInfo:
        """Save ``model`` as a new version (1, 2, ...) in ``format`` (``None``: a torch
        Module as its ``state_dict`` and a mapping of tensors in ``.pth``, anything else
        picklable in ``.joblib``)."""
        codec = self._codec_to_save(model, format)
        user_meta = plain_json(metadata, "metadata")
        if codec.runs_code:
            trustkey.trust_key()  # a missing or unsafe key fails before anything is written
        with self._lock.hold():
            version = self._next_version(name)  # refuses a link in the model's folder
            file = model_file(version, codec.suffix)
            wrote: builtins.list[Written] = []

            def write(path: Path) -> FileDigest:
                wrote.append(codec.write(path, model))
                return FileDigest(wrote[0].sha256, wrote[0].size_bytes)

            self._files.put(file_key(name, file), write)  # durable before the record
            written = wrote[0]
            trust.mark(self.trust_dir, codec, written.sha256)
            info = ModelInfo(
                name=name,
                version=version,
                format=codec.suffix,
                file=file,
                sha256=written.sha256,
                size_bytes=written.size_bytes,
                created_at=utc_iso(),
                metadata=user_meta,
                class_path=written.class_path,
                parameter_count=written.parameter_count,
                library_versions=written.library_versions,
            )
            self._commit(info, written.chunks)
            return info

    @staticmethod
    def _codec_to_save(model: Any, format: str | None) -> Codec:
        if format is None:
            return modelcodecs.pick(model)
        codec = modelcodecs.codec_for(format)
        if not codec.can_save(model):
            raise InvalidInput(
                f"format: {format!r} cannot hold a {type(model).__qualname__}",
                argument="format",
            )
        return codec

    def _next_version(self, name: str) -> int:
        """One more than any version recorded, with a file left by a crash, or deleted (the
        high-water mark); lock held. Refuses a link or special file in the model's folder."""
        used = self._numbers(name) + folder.file_numbers(self._files, name)
        mark = folder.high_water(self._checked_dir(name))
        return max([*used, *([] if mark is None else [mark])], default=0) + 1

    def _commit(self, info: ModelInfo, chunks: builtins.list[str] | None = None) -> None:
        document = modelrecord.dump(info, chunks, modelcodecs.CHUNK)
        self._meta.write(record_key(info.name, info.version), document)  # the commit point

    @checked
    @ensure(
        lambda self, name, version: (
            not self._numbers(name) if version is None else version not in self._numbers(name)
        ),
        "the deleted versions are gone",
    )
    def delete(self, name: ModelName, *, version: Version | None = None) -> None:
        """Delete one version, or every version (``version=None``) of the model."""
        with self._lock.hold():
            model_dir = self._checked_dir(name)
            numbers = self._numbers(name)
            if not numbers or (version is not None and version not in numbers):
                what = f"model {name!r}" + ("" if version is None else f" version {version}")
                raise NotFoundError(f"{what} not found in context {self.context!r}")
            doomed = numbers if version is None else [version]
            try:
                if version is not None:  # a version number is never given out twice
                    write_atomic(model_dir / folder.HIGH_WATER, str(max(numbers)).encode())
            except OSError as exc:
                raise StorageError(
                    f"deleting in {model_dir} failed: {exc}", errno=exc.errno
                ) from exc
            for number in doomed:  # records first: once gone, the version is gone
                self._meta.delete(record_key(name, number))
            for number in doomed:
                for suffix in modelcodecs.formats():
                    self._files.delete(file_key(name, model_file(number, suffix)))
            if version is None:
                with contextlib.suppress(OSError):
                    (model_dir / folder.HIGH_WATER).unlink()
                self._sweep(name)

    def _sweep(self, name: str) -> None:
        """After deleting every version: remove leftovers of interrupted writes and the
        model's folder if nothing is left. Files without a record (a save interrupted before
        its commit point) are kept, as are links (``verify`` reports them)."""
        with contextlib.suppress(IntegrityError):  # a link in the folder: sweep nothing
            self._files.retain(name, set(self._files.list(name)))

    @checked
    @require(lambda info: isinstance(info, ModelInfo), "info", "must be a ModelInfo")
    @ensure(lambda name, result: result.name == name, "a new version of the named model")
    def add_untrusted_version(self, name: ModelName, source: Path, info: ModelInfo) -> ModelInfo:
        """Add the artefact file ``source`` (e.g. from an imported archive) as a new version.

        Its size and SHA-256 must match ``info``; no trust mark is created, so a file whose
        reading runs code (``.joblib``) added this way loads only with ``trusted=True``.
        """
        codec = modelcodecs.codec_for(info.format)
        data = modelcodecs.read_verified(Path(source), info.sha256, info.size_bytes)
        with self._lock.hold():
            version = self._next_version(name)  # refuses a link in the model's folder
            file = model_file(version, codec.suffix)

            def write(path: Path) -> FileDigest:
                write_atomic(path, data)
                return FileDigest(info.sha256, len(data))

            self._files.put(file_key(name, file), write)  # durable before the record
            added = info.model_copy(
                update={"name": name, "version": version, "file": file, "created_at": utc_iso()}
            )
            chunks = chunk_digests(data, modelcodecs.CHUNK) if codec.chunked else []
            self._commit(added, chunks)
            return added

    # -- trust --------------------------------------------------------------------------

    @checked
    @ensure(
        lambda name, version, result: (
            result.name == name and (version is None or result.version == version)
        ),
        "the version asked for",
    )
    @ensure(
        lambda self, result: not self.runs_code(result.format) or self.is_trusted(result.sha256),
        "a version whose reading runs code is trusted afterwards",
    )
    def trust(self, name: ModelName, *, version: Version | None = None) -> ModelInfo:
        """Vouch for one version (default: the latest) so it loads without ``trusted=True``:
        re-checks the file's size and SHA-256 against the record (``IntegrityError`` on any
        difference), then signs its trust mark with this user's trust key. A format whose
        reading runs no code needs no mark: nothing is written. Returns the version's record."""
        with self._lock.hold():
            self._checked_dir(name)  # refuses a link in the model's folder
            info = self._latest(name) if version is None else self._info(name, version)
            problem = self._files.check(file_key(name, info.file), info.size_bytes, info.sha256)
            if problem:
                raise IntegrityError(f"{problem}; not trusted")
            trust.mark(self.trust_dir, modelcodecs.codec_for(info.format), info.sha256)
            return info

    @checked
    @ensure(
        lambda self, dry_run, result: dry_run or all(self.is_trusted(i.sha256) for i in result),
        "every listed version is trusted afterwards (unless a dry run)",
    )
    @ensure(
        lambda result: all(modelcodecs.runs_code(i.format) for i in result),
        "only formats whose reading runs code are listed",
    )
    def trust_existing(self, *, dry_run: Flag = False) -> builtins.list[ModelInfo]:
        """Re-sign the trust marks version 1 wrote (empty files, which are not trusted) for
        this context's model versions whose reading runs code, and return those versions
        (``dry_run``: return them, sign nothing). Marks with other content (forged, or signed
        with another key) are never re-signed here: ``trust`` vouches for one version after
        checking its file. A v1 mark says only that some writer of the store made it, so look
        at the list (``dry_run``) before signing."""
        found: builtins.list[ModelInfo] = []
        with self._lock.hold():
            for name in self.names():
                for info in self.versions(name):
                    if not modelcodecs.runs_code(info.format):
                        continue
                    if trust.state(self.trust_dir, info.sha256) == "v1":
                        found.append(info)
            if not dry_run:
                for sha256 in dict.fromkeys(i.sha256 for i in found):
                    trust.sign(self.trust_dir, sha256)
        return found

    # -- reading ------------------------------------------------------------------------

    @checked
    @require(lambda into: _into_ok(into), "into", "must be None or a torch.nn.Module")
    @ensure(lambda into, result: into is None or result is into, "into is filled and returned")
    def load(
        self,
        name: ModelName,
        *,
        version: Version | None = None,
        into: Any = None,
        trusted: Flag = False,
    ) -> Any:
        """The model (latest version unless ``version``): tensors as their state dict, or
        loaded into ``into`` (returned); a pickled object as the unpickled object."""
        if version is None:
            numbers = self._numbers(name)
            if not numbers:
                raise NotFoundError(f"model {name!r} not found in context {self.context!r}")
            version = numbers[-1]
        record = self._record(name, version)
        info = record.info
        codec = modelcodecs.codec_for(info.format)
        path = self._files.local_path(file_key(name, info.file))

        def permit() -> None:
            trust.check(self.trust_dir, codec, path, info.sha256, trusted=trusted)

        return codec.read(path, record.recorded, into=into, permit=permit)

    @ensure(
        lambda result: [i.name for i in result] == sorted({i.name for i in result}),
        "one entry per model, sorted by name",
    )
    def list(self) -> builtins.list[ModelInfo]:
        """The latest version of every model, sorted by name."""
        return [self._latest(name) for name in self.names()]

    @ensure(lambda result: len(set(result)) == len(result), "each name is listed once")
    @ensure_full(lambda self, result: result == [i.name for i in self.list()], "names match list()")
    def names(self) -> builtins.list[str]:
        """Names of the models (``IntegrityError`` if the ``models`` folder is a link or a
        file; a damaged model folder is not listed: ``verify`` reports it)."""
        return [name for name in folder.model_names(self.root) if self._numbers(name)]

    @checked
    @ensure(
        lambda result: [i.version for i in result] == sorted({i.version for i in result}),
        "versions ascending",
    )
    def versions(self, name: ModelName) -> builtins.list[ModelInfo]:
        """Every version of the model, oldest first (empty if there is none)."""
        return [self._info(name, n) for n in self._numbers(name)]

    @checked
    def info(self, name: ModelName, *, version: Version | None = None) -> ModelInfo:
        """The record of one version (default: the latest)."""
        return self._latest(name) if version is None else self._info(name, version)

    # -- maintenance --------------------------------------------------------------------

    @ensure(
        lambda self, result: all(str(self.root.parent) in p for p in result),
        "problems name paths of the context",
    )
    def verify(self) -> builtins.list[str]:
        """Check every version: folders and files are what they should be (no link, no file
        where a folder belongs), record checksum, artefact presence, size and SHA-256.
        Returns problems naming the path; never raises for damage."""
        return part_problems(
            self.root,
            "a model folder",
            lambda folder: self._verify_model(folder) if is_valid_name(folder.name) else [],
        )

    def _verify_model(self, model_dir: Path) -> builtins.list[str]:
        problems: builtins.list[str] = []
        name = model_dir.name
        for number in self._numbers(name):
            try:
                record = folder.read_record(self._meta, name, number)
                if record is None:  # deleted meanwhile
                    continue
                info = record.info
            except IntegrityError as exc:
                problems.append(str(exc))
                continue
            except StorageError as exc:
                if environmental(exc) is not None:
                    raise  # an I/O failure, not damage
                problems.append(str(exc))
                continue
            problem = self._files.check(file_key(name, info.file), info.size_bytes, info.sha256)
            if problem:
                problems.append(problem)
        return problems
