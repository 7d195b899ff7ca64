"""``ModelStore`` (``ctx.models``): versioned models of one context (SPEC 6).

Layout: ``models/<name>/v0001.pth`` or ``v0001.joblib`` (the artefact) and ``v0001.json``
(checksummed record: ``ModelInfo``). The record is the commit point: a save writes the
artefact, then (``.joblib`` only) the trust marker, then the record, each atomically.

Trust policy for pickles: ``save`` of a ``.joblib`` creates the empty file
``<store>/trust/<sha256>`` (outside every context, so an imported archive cannot bring its
own). ``load`` refuses a ``.joblib`` whose digest has no marker with
``UntrustedArtifactError`` unless ``trusted=True``. ``.pth`` files are only ever read with
``torch.load(weights_only=True)``. Every artefact's SHA-256 is checked before it is read.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import icontract
from pydantic import ValidationError

from app.core.artifacts import ModelInfo
from app.core.atomic import fsync_dir, write_atomic
from app.core.contracts import ensure, ensure_full, invariant, is_positive_int, require, valid_name
from app.core.errors import (
    IntegrityError,
    InvalidInput,
    NotFoundError,
    StorageError,
    UntrustedArtifactError,
    environmental,
)
from app.core.locks import WriterLock
from app.core.names import child, is_valid_name
from app.core.nofollow import (
    check_chain,
    entries,
    exists_as,
    lstat_as,
    part_problems,
    read_regular,
    refuse_links,
)
from app.formats import modelfile
from app.formats.hashio import (
    check_document,
    chunk_digests,
    dump_checked,
    parse_checked,
    plain_json,
)

FORMAT = "ctxstore.model"
FORMAT_VERSION = 1
HIGH_WATER = "high-water"  # the highest version ever given out, kept when versions are deleted
RECORD = re.compile(r"v(\d{4,})\.json")
ARTEFACT = re.compile(r"v(\d{4,})\.(pth|joblib)")
SHA256 = re.compile(r"[0-9a-f]{64}")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _stem(version: int) -> str:
    return f"v{version:04d}"


def _metadata_ok(metadata: object) -> bool:
    plain_json(metadata, "metadata")
    return True


def _into_ok(into: object) -> bool:
    return into is None or callable(getattr(into, "load_state_dict", None))


def _chunks(doc: dict[str, Any], path: Path) -> tuple[list[str], int]:
    """The per-piece SHA-256 digests a record may carry (``.pth``; see ``read_pth``)."""
    chunks, chunk_bytes = doc.get("chunk_sha256", []), doc.get("chunk_bytes", 0)
    ok = (
        isinstance(chunks, list)
        and all(isinstance(c, str) and SHA256.fullmatch(c) for c in chunks)
        and isinstance(chunk_bytes, int)
        and chunk_bytes >= 0
    )
    if not ok:
        raise IntegrityError(f"{path}: damaged chunk digests")
    return chunks, chunk_bytes


def _parse(doc: dict[str, Any], path: Path, name: str) -> ModelInfo:
    check_document(doc, path, FORMAT, FORMAT_VERSION)
    fields = {k: v for k, v in doc.items() if k in ModelInfo.model_fields}
    try:
        info = ModelInfo.model_validate(fields)
    except ValidationError as exc:
        raise IntegrityError(f"{path}: damaged model record ({str(exc)[:160]})") from None
    expected = f"{_stem(info.version)}.{info.format}"
    if (
        info.name != name
        or path.name != f"{_stem(info.version)}.json"
        or info.file != expected
        or SHA256.fullmatch(info.sha256) is None
        or info.size_bytes < 0
    ):
        raise IntegrityError(f"{path}: inconsistent model record")
    return info


@invariant(
    lambda self: self._lock.path.parent == self.root.parent,
    "model writes serialise on their context's writer lock",
)
class ModelStore(icontract.DBC):
    """Versioned models of one context: save / load / list / versions / delete."""

    def __init__(self, root: Path, lock: WriterLock, context: str, trust_dir: Path) -> None:
        self.root = root
        self.context = context
        self.trust_dir = trust_dir
        self._lock = lock

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
        model_dir = self._checked_dir(name)
        return sorted(
            int(m.group(1)) for p in entries(model_dir) if (m := RECORD.fullmatch(p.name))
        )

    def _record(self, name: str, version: int) -> tuple[ModelInfo, list[str], int]:
        path = self._checked_dir(name) / f"{_stem(version)}.json"
        try:
            if exists_as(path, "file"):
                doc = _read_doc(path)
                return (_parse(doc, path, name), *_chunks(doc, path))
        except FileNotFoundError:  # deleted meanwhile
            pass
        raise NotFoundError(
            f"model {name!r} version {version} not found in context {self.context!r}"
        )

    def _info(self, name: str, version: int) -> ModelInfo:
        return self._record(name, version)[0]

    def _latest(self, name: str) -> ModelInfo:
        numbers = self._numbers(name)
        if not numbers:
            raise NotFoundError(f"model {name!r} not found in context {self.context!r}")
        return self._info(name, numbers[-1])

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @require(lambda version: is_positive_int(version), "version", "must be an int >= 1")
    def path_of(self, name: str, version: int) -> Path:
        """The artefact file of a recorded version (for export and merge)."""
        return self._dir(name) / self._info(name, version).file

    @require(lambda sha256: isinstance(sha256, str), "sha256", "must be a string")
    def is_trusted(self, sha256: str) -> bool:
        """True when this store's own ``save`` wrote a ``.joblib`` with this digest."""
        if SHA256.fullmatch(sha256) is None:
            return False
        try:  # a link is never a trust mark
            return lstat_as(self.trust_dir / sha256, "file") is not None
        except IntegrityError:
            return False

    # -- writing ------------------------------------------------------------------------

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @require(lambda model: model is not None, "model", "must not be None")
    @require(lambda metadata: _metadata_ok(metadata), "metadata", "must be a JSON object")
    @ensure(
        lambda name, result: (
            result.name == name and result.version >= 1 and len(result.sha256) == 64
        ),
        "a new checksummed version of the named model",
    )
    def save(
        self, name: str, model: Any, *, metadata: Mapping[str, Any] | None = None
    ) -> ModelInfo:
        """Save ``model`` as a new version (1, 2, ...): a torch Module as its ``state_dict``
        and a mapping of tensors in ``.pth``, anything else picklable in ``.joblib``."""
        kind = modelfile.classify(model)
        user_meta = plain_json(metadata, "metadata")
        with self._lock.hold():
            model_dir = self._checked_dir(name)
            refuse_links(model_dir)  # a link in the model's folder is damage
            version = self._next_version(name)
            file = f"{_stem(version)}.{kind}"
            if kind == "pth":
                written = modelfile.write_pth(model_dir / file, model)
            else:
                written = modelfile.write_joblib(model_dir / file, model)
                write_atomic(self.trust_dir / written.sha256, b"")
            info = ModelInfo(
                name=name,
                version=version,
                format=kind,
                file=file,
                sha256=written.sha256,
                size_bytes=written.size_bytes,
                created_at=_now(),
                metadata=user_meta,
                class_path=written.class_path,
                parameter_count=written.parameter_count,
                library_versions=written.library_versions,
            )
            self._commit(info, written.chunks)
            return info

    def _next_version(self, name: str) -> int:
        """One more than any version recorded or with an artefact left by a crash (lock held)."""
        used = self._numbers(name)
        model_dir = self._checked_dir(name)
        if exists_as(model_dir, "dir"):
            used += [
                int(m.group(1)) for p in entries(model_dir) if (m := ARTEFACT.fullmatch(p.name))
            ]
            with contextlib.suppress(FileNotFoundError, ValueError):
                used.append(int(read_regular(model_dir / HIGH_WATER)))
        return max(used, default=0) + 1

    def _commit(self, info: ModelInfo, chunks: builtins.list[str] | None = None) -> None:
        doc = {"document": FORMAT, "format_version": FORMAT_VERSION, **info.model_dump()}
        if chunks:
            doc |= {"chunk_sha256": chunks, "chunk_bytes": modelfile.CHUNK}
        write_atomic(self._dir(info.name) / f"{_stem(info.version)}.json", dump_checked(doc))

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @require(
        lambda version: version is None or is_positive_int(version),
        "version",
        "must be None or an int >= 1",
    )
    @ensure(
        lambda self, name, version: (
            not self._numbers(name) if version is None else version not in self._numbers(name)
        ),
        "the deleted versions are gone",
    )
    def delete(self, name: str, *, version: int | None = None) -> None:
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
                    write_atomic(model_dir / HIGH_WATER, str(max(numbers)).encode())
                for number in doomed:  # records first: once gone, the version is gone
                    (model_dir / f"{_stem(number)}.json").unlink()
                fsync_dir(model_dir)
                for path in [Path(e.path) for e in entries(model_dir)]:
                    match = ARTEFACT.fullmatch(path.name)
                    if match and int(match.group(1)) in doomed:
                        path.unlink()
            except OSError as exc:
                raise StorageError(
                    f"deleting in {model_dir} failed: {exc}", errno=exc.errno
                ) from exc
            if version is None:
                with contextlib.suppress(OSError):
                    for path in [Path(e.path) for e in entries(model_dir)]:
                        if path.name == HIGH_WATER or (
                            path.name.startswith(".") and path.name.endswith(".tmp")
                        ):
                            path.unlink()
                    model_dir.rmdir()

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @require(lambda info: isinstance(info, ModelInfo), "info", "must be a ModelInfo")
    @ensure(lambda name, result: result.name == name, "a new version of the named model")
    def add_untrusted_version(self, name: str, source: Path, info: ModelInfo) -> ModelInfo:
        """Add the artefact file ``source`` (e.g. from an imported archive) as a new version.

        Its size and SHA-256 must match ``info``; no trust marker is created, so a
        ``.joblib`` added this way loads only with ``trusted=True``.
        """
        data = modelfile.read_verified(Path(source), info.sha256, info.size_bytes)
        with self._lock.hold():
            model_dir = self._checked_dir(name)
            refuse_links(model_dir)
            version = self._next_version(name)
            file = f"{_stem(version)}.{info.format}"
            write_atomic(model_dir / file, data)
            added = info.model_copy(
                update={"name": name, "version": version, "file": file, "created_at": _now()}
            )
            chunks = chunk_digests(data, modelfile.CHUNK) if info.format == "pth" else []
            self._commit(added, chunks)
            return added

    # -- reading ------------------------------------------------------------------------

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @require(
        lambda version: version is None or is_positive_int(version),
        "version",
        "must be None or an int >= 1",
    )
    @require(lambda into: _into_ok(into), "into", "must be None or a torch.nn.Module")
    @require(lambda trusted: isinstance(trusted, bool), "trusted", "must be a bool")
    @ensure(lambda into, result: into is None or result is into, "into is filled and returned")
    def load(
        self, name: str, *, version: int | None = None, into: Any = None, trusted: bool = False
    ) -> Any:
        """The model (latest version unless ``version``): a ``.pth`` as its state dict, or
        loaded into ``into`` (returned); a ``.joblib`` as the unpickled object."""
        if version is None:
            numbers = self._numbers(name)
            if not numbers:
                raise NotFoundError(f"model {name!r} not found in context {self.context!r}")
            version = numbers[-1]
        info, chunks, chunk_bytes = self._record(name, version)
        path = self._checked_dir(name) / info.file
        if info.format == "pth":
            state = modelfile.read_pth(path, info.sha256, info.size_bytes, chunks, chunk_bytes)
            if into is None:
                return state
            try:
                into.load_state_dict(state)
            except (RuntimeError, KeyError, TypeError, ValueError) as exc:
                raise InvalidInput(f"into: weights do not fit ({str(exc)[:200]})") from None
            return into
        if into is not None:
            raise InvalidInput(f"into: model {name!r} is a .joblib object, not torch weights")
        data = modelfile.read_verified(path, info.sha256, info.size_bytes)
        if not trusted and not self.is_trusted(info.sha256):
            raise UntrustedArtifactError(
                f"{path}: this .joblib did not come from this store's own save; "
                "pass trusted=True only if you trust its origin (unpickling runs code)"
            )
        return modelfile.load_joblib(data, path)

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
        check_chain(self.root.parent, self.root.name, last="dir")
        return sorted(
            e.name
            for e in entries(self.root)
            if is_valid_name(e.name) and e.is_dir(follow_symlinks=False) and self._numbers(e.name)
        )

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @ensure(
        lambda result: [i.version for i in result] == sorted({i.version for i in result}),
        "versions ascending",
    )
    def versions(self, name: str) -> builtins.list[ModelInfo]:
        """Every version of the model, oldest first (empty if there is none)."""
        return [self._info(name, n) for n in self._numbers(name)]

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @require(
        lambda version: version is None or is_positive_int(version),
        "version",
        "must be None or an int >= 1",
    )
    def info(self, name: str, *, version: int | None = None) -> ModelInfo:
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
        for number in self._numbers(model_dir.name):
            record = model_dir / f"{_stem(number)}.json"
            try:
                if not exists_as(record, "file"):
                    continue
                info = _parse(_read_doc(record), record, model_dir.name)
            except IntegrityError as exc:
                problems.append(str(exc))
                continue
            except StorageError as exc:
                if environmental(exc) is not None:
                    raise  # an I/O failure, not damage
                problems.append(str(exc))
                continue
            problem = modelfile.verify_file(model_dir / info.file, info.sha256, info.size_bytes)
            if problem:
                problems.append(problem)
        return problems


def _read_doc(path: Path) -> dict[str, Any]:
    """A model record, read without following a link."""
    return parse_checked(read_regular(path), path)


def recorded_files(root: Path) -> dict[str, tuple[int, str]]:
    """``(size, sha256)`` on record for every model file below the ``models`` folder
    ``root``, keyed by ``<model>/<file>`` (for export's check of what it packs). A damaged
    record raises ``IntegrityError`` naming it."""
    out: dict[str, tuple[int, str]] = {}
    for entry in entries(root):
        if not (is_valid_name(entry.name) and entry.is_dir(follow_symlinks=False)):
            continue
        for record in entries(Path(entry.path)):
            if RECORD.fullmatch(record.name) and exists_as(Path(record.path), "file"):
                path = Path(record.path)
                info = _parse(_read_doc(path), path, entry.name)
                out[f"{entry.name}/{info.file}"] = (info.size_bytes, info.sha256)
    return out
