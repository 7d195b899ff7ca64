"""A context is its records plus the parts registered in ``app.managers.parts``: the registry
is the only list of parts.

The proof: a fake part (``tables``: one text file per item plus a record of its SHA-256),
registered by a fixture and removed afterwards, is saved and loaded, exported, imported,
merged, counted by ``stats`` and verified, without any other edit. That is what "adding a part
touches one module" means: a new module like ``FakeTables`` + one ``register`` line.
"""

from __future__ import annotations

import ast
import hashlib
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

import app
from app.core.atomic import write_atomic
from app.core.errors import ConflictError, IntegrityError, InvalidInput
from app.core.nofollow import entries, part_problems
from app.managers import parts as registry
from app.managers.parts import PartContext

ROOT = Path(__file__).resolve().parents[1]
DATA, RECORD = "data.txt", "record.json"


class Tables:
    """The fake part's handle: ``<context>/tables/<name>/{data.txt,record.json}``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, name: str, text: str) -> None:
        data = text.encode()
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / DATA, data)
        record = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        write_atomic(folder / RECORD, orjson.dumps(record))

    def get(self, name: str) -> str:
        return (self.root / name / DATA).read_text()

    def names(self) -> list[str]:
        return sorted(e.name for e in entries(self.root) if (Path(e.path) / RECORD).is_file())

    def record(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = orjson.loads((self.root / name / RECORD).read_bytes())
        return doc


class FakeTables:
    """A part in one class, as a new part module would hold it."""

    name = "tables"
    folder = "tables"

    def open(self, ctx: PartContext) -> Tables:
        return Tables(ctx.path / self.folder)

    def recorded_files(self, folder: Path) -> dict[str, tuple[int, str]]:
        tables = Tables(folder)
        return {
            f"{n}/{DATA}": (tables.record(n)["size"], tables.record(n)["sha256"])
            for n in tables.names()
        }

    def incomplete(self, folder: Path) -> list[str]:
        def check(item: Path) -> list[str]:
            gone = (item / DATA).is_file() and not (item / RECORD).is_file()
            return [f"{item / RECORD}: missing"] if gone else []

        return part_problems(folder, "a table folder", check)

    def summary(self, ctx: PartContext) -> dict[str, Any]:
        tables = ctx.part(self)
        return {n: {"size": tables.record(n)["size"]} for n in tables.names()}

    def verify(self, ctx: PartContext) -> list[str]:
        tables, problems = ctx.part(self), []
        for n in tables.names():
            data = (tables.root / n / DATA).read_bytes()
            if hashlib.sha256(data).hexdigest() != tables.record(n)["sha256"]:
                problems.append(f"{tables.root / n / DATA}: SHA-256 differs from its record")
        return problems

    def stats(self, ctx: PartContext) -> dict[str, Any]:
        tables = ctx.part(self)
        return {n: {"size": tables.record(n)["size"]} for n in tables.names()}

    def load_state(self, ctx: PartContext) -> dict[str, Any]:
        tables = ctx.part(self)
        return {n: tables.get(n) for n in tables.names()}

    def save_state(self, ctx: PartContext, items: Mapping[str, Any]) -> None:
        for n, text in items.items():
            if not isinstance(text, str):
                raise InvalidInput(f"state.tables: {n!r} must be a str")
            ctx.part(self).put(n, text)

    def merge(
        self, target: PartContext, source: PartContext, names: Iterable[str], mode: str
    ) -> None:
        mine = target.part(self)
        for n in names:
            if mode == "skip" and n in mine.names():
                continue
            mine.put(n, source.part(self).get(n))


@pytest.fixture
def tables_part() -> Iterator[FakeTables]:
    part = FakeTables()
    registry.register(part)
    try:
        yield part
    finally:
        registry.unregister(part.name)


def _tables(ctx: app.Context, part: FakeTables) -> Tables:
    return ctx.part(part)


def test_the_registry_lists_the_parts_once_in_order() -> None:
    assert [p.name for p in registry.parts()] == ["embeddings", "models"]
    with pytest.raises(ValueError, match="registered"):
        registry.register(registry.parts()[0])
    reserved = FakeTables()
    reserved.name = "collections"
    with pytest.raises(ValueError, match="not usable"):
        registry.register(reserved)
    assert [p.name for p in registry.parts()] == ["embeddings", "models"]


def test_save_load_round_trip_of_a_new_part(store: app.Store, tables_part: FakeTables) -> None:
    state = {"collections": {"t": [{"id": "a"}]}, "tables": {"x": "hello", "y": "world"}}
    manifest = store.save_context("c", state)
    assert (manifest.model_extra or {})["tables"] == {"x": {"size": 5}, "y": {"size": 5}}
    assert {f.path for f in manifest.files} >= {"tables/x/data.txt", "tables/y/data.txt"}
    loaded = store.load_context("c")
    assert (loaded.model_extra or {})["tables"] == {"x": "hello", "y": "world"}
    assert loaded.collections == {"t": [{"id": "a"}]}
    with pytest.raises(InvalidInput, match=r"state\.tables"):
        store.save_context("c", {"tables": {"../x": "no"}})
    with pytest.raises(InvalidInput, match="must be a str"):
        store.save_context("c", {"tables": {"z": 3}})
    assert (store.load_context("c").model_extra or {})["tables"] == {"x": "hello", "y": "world"}


def test_export_import_merge_skip_of_a_new_part(
    store: app.Store, tables_part: FakeTables, tmp_path: Path
) -> None:
    src = store.context("src")
    src.append("t", [{"id": "a"}])
    _tables(src, tables_part).put("x", "from the archive")
    _tables(src, tables_part).put("y", "new")
    archive = tmp_path / "src.tar.gz"
    manifest = store.export_context("src", archive)
    assert (manifest.model_extra or {})["tables"] == {"x": {"size": 16}, "y": {"size": 3}}
    with tarfile.open(archive) as tf:
        names = set(tf.getnames())
        on_disk = orjson.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert {"tables/x/data.txt", "tables/x/record.json"} <= names
    assert on_disk["tables"] == {"x": {"size": 16}, "y": {"size": 3}}

    store.import_context(archive, name="copy")
    copy = store.context("copy")
    assert _tables(copy, tables_part).names() == ["x", "y"]
    assert copy.verify().ok

    for mode, expected in (("skip", "mine"), ("merge", "from the archive")):
        name = f"live-{mode}"
        live = store.context(name)
        _tables(live, tables_part).put("x", "mine")
        store.import_context(archive, name=name, on_conflict=mode)
        live = store.context(name)
        assert _tables(live, tables_part).get("x") == expected
        assert _tables(live, tables_part).get("y") == "new"
        assert live.count("t") == 1


def test_stats_and_verify_cover_a_new_part(store: app.Store, tables_part: FakeTables) -> None:
    ctx = store.context("c")
    _tables(ctx, tables_part).put("x", "hello")
    stats = store.stats()["contexts"]["c"]
    assert stats["tables"] == {"x": {"size": 5}}
    assert stats["tables_bytes"] > 5
    assert store.verify().ok
    (ctx.path / "tables" / "x" / DATA).write_text("HELLO")  # damage: SHA-256 differs
    report = ctx.verify()
    assert not report.ok and any("tables/x/data.txt" in p for p in report.problems)
    assert str(ctx.path / "tables") in report.checked
    assert not store.verify().ok
    with pytest.raises(IntegrityError, match=r"data\.txt"):
        store.export_context("c", store.root.parent / "c.tar.gz")


def test_export_refuses_what_a_new_part_calls_incomplete(
    store: app.Store, tables_part: FakeTables, tmp_path: Path
) -> None:
    ctx = store.context("c")
    _tables(ctx, tables_part).put("x", "hello")
    (ctx.path / "tables" / "x" / RECORD).unlink()
    with pytest.raises(IntegrityError, match=r"export refused.*record\.json: missing"):
        store.export_context("c", tmp_path / "c.tar.gz")


def test_an_archive_naming_an_unknown_part_is_refused(
    store: app.Store, tables_part: FakeTables, tmp_path: Path
) -> None:
    ctx = store.context("c")
    _tables(ctx, tables_part).put("x", "hello")
    archive = tmp_path / "c.tar.gz"
    store.export_context("c", archive)
    registry.unregister(tables_part.name)  # this version knows no "tables" part
    try:
        with pytest.raises(IntegrityError):
            store.import_context(archive, name="other")
        assert "other" not in store.contexts()
    finally:
        registry.register(tables_part)


def test_a_part_merge_conflict_leaves_the_live_context(
    store: app.Store, tables_part: FakeTables, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = store.context("src")
    _tables(src, tables_part).put("x", "theirs")
    archive = tmp_path / "src.tar.gz"
    store.export_context("src", archive)
    live = store.context("live")
    _tables(live, tables_part).put("x", "mine")

    def refuse(*_: object) -> None:
        raise ConflictError("table 'x' cannot be merged")

    monkeypatch.setattr(tables_part, "merge", refuse)
    with pytest.raises(ConflictError):
        store.import_context(archive, name="live", on_conflict="merge")
    assert _tables(store.context("live"), tables_part).get("x") == "mine"


PART_FREE = [
    "app/managers/transfer/export.py",
    "app/managers/transfer/importing.py",
    "app/managers/transfer/merge.py",
    "app/managers/transfer/state.py",
    "app/managers/transfer/manifest.py",
    "app/managers/transfer/fs.py",
    "app/managers/stats.py",
    "app/managers/store.py",
]


@pytest.mark.parametrize("path", PART_FREE)
def test_whole_context_operations_never_name_a_part(path: str) -> None:
    """No string ``"embeddings"``/``"models"`` and no ``.embeddings``/``.models`` attribute in
    the modules that iterate over the parts (docstrings and comments aside)."""
    tree = ast.parse((ROOT / path).read_text())
    names = {"embeddings", "models"}
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if (
            isinstance(node, ast.Constant)
            and id(node) not in docstrings
            and isinstance(node.value, str)
            and node.value in names
        )
        or (isinstance(node, ast.Attribute) and node.attr in names)
    ]
    assert found == []
