"""Scenario 7: hostile input: the archive corpus (plus link chains, setuid listed files,
10,000 members, a gzip bomb), pickle payloads in .pth / .joblib arriving by import (a
sentinel file must never appear), JSON bombs, hostile names and filter field paths."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import joblib
import orjson
import torch
from relstats import tally
from test_archive_hostile import CATALOG, GOOD, add, build, cases, manifest, snapshot

import app


class Payload:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.sentinel),))


def _refused(store: app.Store, archive: Path, outside: Path, **kw: Any) -> bool:
    before = snapshot(store.root)
    try:
        store.import_context(archive, **kw)
    except app.IntegrityError:
        pass
    else:
        return False
    return snapshot(store.root) == before and not list(outside.iterdir())


def test_hostile_archives(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    esc = str(outside / "escaped")
    reg = {"type": tarfile.REGTYPE}
    corpus = dict(cases(outside))

    def chain(tf: tarfile.TarFile) -> None:  # a -> b -> c -> outside
        add(tf, "manifest.json", manifest({**GOOD, "a.jsonl": b""}))
        add(tf, "context.json", CATALOG)
        add(tf, "c", b"", type=tarfile.SYMTYPE, linkname=esc)
        add(tf, "b", b"", type=tarfile.SYMTYPE, linkname="c")
        add(tf, "a.jsonl", b"", type=tarfile.LNKTYPE, linkname="b")

    def setuid_listed(tf: tarfile.TarFile) -> None:
        add(tf, "manifest.json", manifest({**GOOD, "x.jsonl": b""}))
        add(tf, "context.json", CATALOG)
        add(tf, "x.jsonl", b"", mode=0o6755, **reg)

    def many(tf: tarfile.TarFile) -> None:
        names = {f"n{i}.jsonl": b"" for i in range(10_000)}
        add(tf, "manifest.json", manifest({**GOOD, **names}))
        add(tf, "context.json", CATALOG)
        for n in names:
            add(tf, n, b"")

    size = 64 << 20
    doc = orjson.loads(manifest(GOOD))
    doc["files"].append(
        {"path": "bomb.jsonl", "size": size, "sha256": hashlib.sha256(bytes(size)).hexdigest()}
    )

    def bomb(tf: tarfile.TarFile) -> None:
        add(tf, "manifest.json", orjson.dumps(doc))
        add(tf, "context.json", CATALOG)
        info = tarfile.TarInfo("bomb.jsonl")
        info.size = size
        tf.addfile(info, io.BytesIO(bytes(size)))

    corpus |= {
        "link-chain": chain,
        "setuid-listed": setuid_listed,
        "10000-members": many,
        "gzip-bomb": bomb,
    }
    failures = []
    with app.open_store(tmp_path / "s") as store:
        store.context("keep").append("notes", [{"id": "1"}])
        for name, fill in corpus.items():
            archive = build(
                tmp_path / f"{name}.tar.gz", fill, level=9 if name == "gzip-bomb" else 1
            )
            for kw in ({"name": "keep", "on_conflict": "overwrite"}, {"name": "fresh"}):
                if not _refused(store, archive, outside, **kw):
                    failures.append(f"{name} {kw}")
    tally("7 hostile: archive corpus", 2 * len(corpus), len(failures))
    assert not failures, failures


def test_pickle_payloads_by_import(tmp_path: Path) -> None:
    """A crafted archive whose manifest hashes hostile .pth / .joblib files: the import
    succeeds (checksums agree) but loading never runs the payload."""
    sentinel = tmp_path / "pwned"
    with app.open_store(tmp_path / "src") as src:
        ctx = src.context("c")
        ctx.models.save("p", {"w": torch.ones(2)})
        ctx.models.save("j", {"k": 1})
        mdir = Path(ctx.path) / "models"
    raw_pth = io.BytesIO()
    torch.save({"w": torch.ones(2), "evil": Payload(sentinel)}, raw_pth)
    raw_job = tmp_path / "h.joblib"
    joblib.dump({"evil": Payload(sentinel)}, raw_job)
    payloads = {
        ("p", "pth"): [raw_pth.getvalue(), pickle.dumps(Payload(sentinel))],
        ("j", "joblib"): [raw_job.read_bytes(), pickle.dumps(Payload(sentinel))],
    }
    trials = failures = 0
    for (name, kind), bodies in payloads.items():
        for body in bodies:
            path = mdir / name / f"v0001.{kind}"
            path.write_bytes(body)
            rec = mdir / name / "v0001.json"
            doc = orjson.loads(rec.read_bytes())
            doc["sha256"], doc["size_bytes"] = hashlib.sha256(body).hexdigest(), len(body)
            if doc.get("chunk_bytes"):
                step = doc["chunk_bytes"]
                doc["chunk_sha256"] = [
                    hashlib.sha256(body[i : i + step]).hexdigest()
                    for i in range(0, len(body), step)
                ]
            from app.formats.hashio import dump_checked  # the record's own checksum

            rec.write_bytes(dump_checked({k: v for k, v in doc.items() if k != "checksum"}))
            with app.open_store(tmp_path / "src") as src:
                archive = tmp_path / "evil.tar.gz"
                src.export_context("c", archive)
            with app.open_store(tmp_path / f"dst{trials}") as dst:
                try:
                    dst.import_context(archive, name="c")
                except app.IntegrityError:
                    pass
                else:
                    for kw in ({}, {"trusted": False}):
                        trials += 1
                        try:
                            dst.context("c").models.load(name, **kw)
                            failures += 1
                        except (app.UntrustedArtifactError, app.IntegrityError):
                            pass
                failures += sentinel.exists()
    tally("7 hostile: pickle payloads (.pth/.joblib)", trials, failures)
    assert failures == 0 and not sentinel.exists()


def test_json_bombs_and_hostile_names(tmp_path: Path) -> None:
    trials = failures = 0
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    bombs = [
        {"id": "d", "x": deep},
        {"id": "n", "x": 10**5000 - 1},
        {"id": "nan", "x": float("nan")},
        {"id": "inf", "x": float("inf")},
        {"id": "big", "x": 10**20},
    ]
    names = [
        "..",
        ".",
        "/etc",
        "a/b",
        "a\\b",
        "\x00",
        "x" * 65,
        "",
        " ",
        "-x",
        "é",
        "a\nb",
        "../c",
        "c;DROP TABLE batches",
    ]
    paths = [
        "a') OR 1=1 --",
        'a"]',
        "$.a",
        "a..b",
        "a.",
        "x' OR '1'='1",
        "a[0]",
        "*",
        "a;DROP TABLE batches",
        "",
    ]
    with app.open_store(tmp_path / "s") as s:
        ctx = s.context("c")
        ctx.append("items", [{"id": "1", "a": 1}, {"id": "2", "a": "x' OR '1'='1"}])
        for rec in bombs:
            trials += 1
            try:
                ctx.append("items", [rec])
                failures += 1
            except app.InvalidInput:
                pass
        for raw in (
            b'{"id":"x","v":' + b"[" * 5000 + b"]" * 5000 + b"}",
            b'{"id":"x","v":NaN}',
            b'{"id":"x","v":1e999}',
            b'{"id":"x","v":' + b"7" * 5000 + b"}",
        ):
            trials += 1  # the same bombs inside a stored file: metadata.json of a set
            meta = Path(ctx.path) / "embeddings" / "bomb" / "metadata.json"
            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_bytes(raw)
            try:
                ctx.embeddings.load("bomb")
                failures += 1
            except (app.IntegrityError, app.SchemaVersionError):
                pass
        import shutil

        shutil.rmtree(Path(ctx.path) / "embeddings" / "bomb")  # planted above: remove it
        for name in names:
            for fn in (
                lambda n: s.context(n),
                lambda n: ctx.append(n, [{"id": "1"}]),
                lambda n: ctx.models.save(n, {"k": 1}),
                lambda n: ctx.embeddings.load(n),
            ):
                trials += 1
                try:
                    fn(name)
                    failures += 1
                except app.InvalidInput:
                    pass
        for path in paths:
            trials += 1
            try:
                got = ctx.query("items", {path: 1})
                failures += got != []
            except app.InvalidInput:
                pass
        trials += 1  # injection in a value is a bound parameter: exact match only
        failures += ctx.query("items", {"a": "x' OR '1'='1"}) != [{"id": "2", "a": "x' OR '1'='1"}]
        failures += ctx.count("items") != 2 or not s.verify().ok
    tally("7 hostile: JSON bombs, names, field paths", trials, failures)
    assert failures == 0
