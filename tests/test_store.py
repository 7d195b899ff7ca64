"""SPEC sections 1-3 (opening, ctxstore.json, contexts, names), 9 (errors) and 10 (protocols).

Everything goes through the public API (``app.open_store``, ``Store``, ``Context``); the only
file internals used are the ones SPEC names: ``ctxstore.json`` at the root and the
``contexts/<context>/<context>.sqlite`` index of the recommended layout.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import orjson
import pytest

import app
from app.protocols import PersistenceProtocol, RecordStoreProtocol

# --------------------------------------------------------------------------- helpers ----


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file and directory under ``root`` with size, mtime and content."""
    out: dict[str, tuple[int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            data = p.read_bytes() if p.is_file() else b""
            out[str(p.relative_to(root))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns, data)
    return out


def _index_path(root: Path, context: str) -> Path:
    return root / "contexts" / context / f"{context}.sqlite"


BAD_NAMES: list[object] = [
    "../x",
    "a/b",
    "",
    "x" * 65,
    ".",
    "..",
    "/abs",
    "-lead",
    "_lead",
    ".hidden",
    "sp ace",
    "tab\tname",
    "nul\x00",
    "é",
    "a\\b",
    5,
    None,
    b"bytes",
    ["list"],
]
GOOD_NAMES = ["a", "A9", "x" * 64, "a.b-c_d", "9lives", "v1.2.3"]


# --------------------------------------------------------------------------- opening ----


def test_open_store_creates_root_and_marker(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "store"
    with app.open_store(root) as store:
        assert isinstance(store, app.Store)
    meta = orjson.loads((root / "ctxstore.json").read_bytes())
    assert isinstance(meta, dict)
    assert isinstance(meta["format_version"], int)
    assert not isinstance(meta["format_version"], bool)
    assert meta["format_version"] >= 1


def test_open_store_accepts_str_and_pathlike(tmp_path: Path) -> None:
    with app.open_store(str(tmp_path / "s1")) as s1:
        s1.context("c")
    with app.open_store(tmp_path / "s1") as s2:
        assert s2.contexts() == ["c"]


def test_default_root_is_cwd_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CTXSTORE_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    with app.open_store() as store:
        store.context("here").append("things", [{"id": "x", "v": 1}])
    assert (tmp_path / "storage" / "ctxstore.json").is_file()
    assert (tmp_path / "storage" / "contexts" / "here").is_dir()
    # a second open with no argument finds the same data
    with app.open_store() as store:
        assert store.contexts() == ["here"]
        assert store.context("here").get("things", "x") == {"id": "x", "v": 1}


def test_default_root_is_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_root = tmp_path / "from_env"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CTXSTORE_ROOT", str(env_root))
    with app.open_store() as store:
        store.context("e")
    assert (env_root / "ctxstore.json").is_file()
    assert not (tmp_path / "storage").exists()
    # an explicit root wins over the variable
    explicit = tmp_path / "explicit"
    with app.open_store(explicit) as store:
        assert store.contexts() == []
    assert (explicit / "ctxstore.json").is_file()


def test_create_false_on_missing_store_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(app.StorageError):
        app.open_store(missing, create=False)
    assert not missing.exists()


def test_create_false_on_existing_store_opens(store_root: Path) -> None:
    with app.open_store(store_root) as s:
        s.context("c").append("x", [{"id": "1"}])
    with app.open_store(store_root, create=False) as s:
        assert s.context("c").get("x", "1") == {"id": "1"}


def test_newer_store_format_raises_schema_version_error(store_root: Path) -> None:
    app.open_store(store_root).close()
    marker = store_root / "ctxstore.json"
    meta = orjson.loads(marker.read_bytes())
    meta["format_version"] = meta["format_version"] + 1
    marker.write_bytes(orjson.dumps(meta))
    before = snapshot(store_root)
    with pytest.raises(app.SchemaVersionError):
        app.open_store(store_root)
    with pytest.raises(app.SchemaVersionError):
        app.open_store(store_root, create=False)
    # never silently migrated
    assert orjson.loads(marker.read_bytes())["format_version"] == meta["format_version"]
    assert snapshot(store_root) == before


def test_very_new_store_format_raises_schema_version_error(store_root: Path) -> None:
    app.open_store(store_root).close()
    (store_root / "ctxstore.json").write_bytes(orjson.dumps({"format_version": 10**6}))
    with pytest.raises(app.SchemaVersionError):
        app.open_store(store_root)


def test_unknown_index_user_version_raises_schema_version_error(store_root: Path) -> None:
    with app.open_store(store_root) as s:
        ctx = s.context("c")
        ctx.append("notes", [{"id": "n1", "t": "x"}])
    idx = _index_path(store_root, "c")
    assert idx.is_file()
    conn = sqlite3.connect(idx)
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    conn.execute(f"PRAGMA user_version={current + 41}")
    conn.commit()
    conn.close()
    with pytest.raises(app.SchemaVersionError), app.open_store(store_root) as s:
        # opening the context or its first read must refuse the unknown index version
        s.context("c").count("notes")
    conn = sqlite3.connect(idx)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == current + 41  # not migrated
    conn.close()


# --------------------------------------------------------------------------- contexts ---


def test_contexts_create_list_sorted_drop(store: app.Store) -> None:
    assert store.contexts() == []
    names = ["zeta", "Alpha", "beta", "0first", "mid.dle", "a-b_c"]
    for n in names:
        ctx = store.context(n)
        assert isinstance(ctx, app.Context)
    assert store.contexts() == sorted(names)
    store.drop_context("beta")
    assert store.contexts() == sorted(n for n in names if n != "beta")
    assert not (store.root / "contexts" / "beta").exists()


def test_context_default_name(store: app.Store) -> None:
    ctx = store.context()
    ctx.append("x", [{"id": "1"}])
    assert store.contexts() == ["default"]
    assert store.context("default").get("x", "1") == {"id": "1"}


def test_context_create_false_missing_raises_not_found(store: app.Store) -> None:
    before = snapshot(store.root)
    with pytest.raises(app.NotFoundError):
        store.context("ghost", create=False)
    assert store.contexts() == []
    assert snapshot(store.root) == before


def test_drop_missing_context_raises_not_found(store: app.Store) -> None:
    store.context("keep")
    with pytest.raises(app.NotFoundError):
        store.drop_context("ghost")
    assert store.contexts() == ["keep"]


def test_drop_context_removes_data_and_recreate_is_empty(store: app.Store) -> None:
    ctx = store.context("c")
    ctx.append("notes", [{"id": str(i)} for i in range(10)])
    store.drop_context("c")
    assert store.contexts() == []
    with pytest.raises(app.NotFoundError):
        store.context("c", create=False)
    fresh = store.context("c")
    assert fresh.count("notes") == 0
    assert fresh.collections() == []


def test_contexts_persist_across_reopen_and_isolated(store_root: Path) -> None:
    with app.open_store(store_root) as s:
        s.context("one").append("x", [{"id": "a", "v": 1}])
        s.context("two").append("x", [{"id": "a", "v": 2}])
    with app.open_store(store_root) as s:
        assert s.contexts() == ["one", "two"]
        assert s.context("one").get("x", "a")["v"] == 1
        assert s.context("two").get("x", "a")["v"] == 2


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_valid_names_accepted(store: app.Store, name: str) -> None:
    ctx = store.context(name)
    ctx.append(name, [{"id": "1"}])
    assert name in store.contexts()
    assert ctx.collections() == [name]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_context_names_rejected_before_touching_files(store: app.Store, name: object) -> None:
    store.context("existing").append("x", [{"id": "1"}])
    before = snapshot(store.root)
    with pytest.raises(app.InvalidInput):
        store.context(name)  # type: ignore[arg-type]
    with pytest.raises(app.InvalidInput):
        store.context(name, create=False)  # type: ignore[arg-type]
    with pytest.raises(app.InvalidInput):
        store.drop_context(name)  # type: ignore[arg-type]
    assert snapshot(store.root) == before
    assert store.contexts() == ["existing"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_collection_names_rejected_before_touching_files(
    store: app.Store, name: object
) -> None:
    ctx = store.context("c")
    ctx.append("x", [{"id": "1"}])
    before = snapshot(store.root)
    bad: object = name
    calls = [
        lambda: ctx.append(bad, [{"id": "2"}]),  # type: ignore[arg-type]
        lambda: ctx.get(bad, "1"),  # type: ignore[arg-type]
        lambda: ctx.query(bad),  # type: ignore[arg-type]
        lambda: list(ctx.iter(bad)),  # type: ignore[arg-type]
        lambda: ctx.count(bad),  # type: ignore[arg-type]
        lambda: ctx.delete(bad, ["1"]),  # type: ignore[arg-type]
        lambda: ctx.history(bad, "1"),  # type: ignore[arg-type]
        lambda: ctx.compact(bad),  # type: ignore[arg-type]
        lambda: ctx.define_collection(bad),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(app.InvalidInput):
            call()
    assert snapshot(store.root) == before
    assert ctx.collections() == ["x"]


def test_name_check_cannot_be_disabled(tmp_path: Path) -> None:
    """With CTXSTORE_CONTRACTS=off (read at import) names are still checked, in a new process."""
    import subprocess
    import sys

    code = (
        "import app, sys\n"
        "s = app.open_store(sys.argv[1])\n"
        "for bad in ['../x', 'a/b', '', 'x'*65, '.', '..']:\n"
        "    try:\n"
        "        s.context(bad)\n"
        "    except app.InvalidInput:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit('accepted ' + repr(bad))\n"
        "    try:\n"
        "        s.context('ok').append(bad, [{'id': '1'}])\n"
        "    except app.InvalidInput:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit('accepted collection ' + repr(bad))\n"
        "print('checked')\n"
    )
    env = {**os.environ, "CTXSTORE_CONTRACTS": "off"}
    env.pop("CTXSTORE_ROOT", None)
    root = tmp_path / "s"
    res = subprocess.run(
        [sys.executable, "-c", code, str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr + res.stdout
    assert res.stdout.strip() == "checked"
    assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in (root / "contexts").iterdir() if not p.name.startswith(".")) == [
        "ok"
    ]


# --------------------------------------------------------------------------- misc -------


def test_version_is_str() -> None:
    assert isinstance(app.__version__, str)
    assert app.__version__


def test_store_is_context_manager_and_close(store_root: Path) -> None:
    with app.open_store(store_root) as s:
        assert isinstance(s, app.Store)
        s.context("c").append("x", [{"id": "1"}])
    # after close, a new store object sees the data; close is idempotent
    s.close()
    s2 = app.open_store(store_root)
    try:
        assert s2.context("c").get("x", "1") == {"id": "1"}
    finally:
        s2.close()


def test_exception_hierarchy() -> None:
    assert issubclass(app.InvalidInput, app.StorageError)
    assert issubclass(app.InvalidInput, ValueError)
    assert issubclass(app.NotFoundError, app.StorageError)
    assert issubclass(app.NotFoundError, KeyError)
    for cls in (
        app.ConflictError,
        app.IntegrityError,
        app.SchemaVersionError,
        app.UntrustedArtifactError,
    ):
        assert issubclass(cls, app.StorageError)
    assert issubclass(app.StorageError, Exception)


def test_protocols_are_runtime_checkable_and_met(store: app.Store) -> None:
    assert isinstance(store, PersistenceProtocol)
    ctx = store.context("c")
    assert isinstance(ctx, RecordStoreProtocol)
    # runtime_checkable protocols reject things that do not meet them
    assert not isinstance(object(), PersistenceProtocol)
    assert not isinstance(object(), RecordStoreProtocol)
    assert not isinstance(store, RecordStoreProtocol)


def test_protocol_module_exports_all_protocols() -> None:
    import app.protocols as p

    for name in (
        "PersistenceProtocol",
        "BatchPersistenceProtocol",
        "RecordStoreProtocol",
        "EmbeddingStoreProtocol",
        "ModelStoreProtocol",
    ):
        proto = getattr(p, name)
        assert getattr(proto, "_is_runtime_protocol", False), name


def test_root_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"not a dir")
    with pytest.raises(app.StorageError):
        app.open_store(f)
    assert f.read_bytes() == b"not a dir"
