"""Scenario "symlinks" (issue 9, item 9; SPEC 22: nothing follows a symbolic link inside a
store). Links are planted at every level of a context -- each kind of file, each part folder
(``embeddings``, ``models``, a set's folder, a model's folder), the context folder itself --
both replacing the real item (moved outside the store: everything still "works" through the
link) and added next to real items (pointing at data outside the store).

Pass, for every planted link:
* ``verify`` reports it, naming the link;
* ``export_context`` refuses with ``IntegrityError`` and writes no archive;
* ``stats`` answers without following it and lists it under ``problems``;
* an ``overwrite`` or ``merge`` import into the context refuses with ``IntegrityError`` and
  leaves the link and the data outside untouched;
* embedding and model loads whose path crosses the link raise ``IntegrityError``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from relstats import tally

import app

CTX = "c"

# (site relative to the context folder, how the link is planted)
REPLACED = [
    ".",  # the context folder itself
    "items.jsonl",
    f"{CTX}.sqlite",
    "context.json",
    "embeddings",
    "models",
    "embeddings/e",
    "models/m",
    "embeddings/e/metadata.json",
    "embeddings/e/shard-000001.npz",
    "models/m/v0001.json",
    "models/m/v0001.joblib",
    "models/p/v0001.pth",
]
ADDED = {  # a new link -> a copy (outside the store) of a real item
    "embeddings/evil": "embeddings/e",
    "models/evil": "models/m",
    "embeddings/e/shard-000099.npz": "embeddings/e/shard-000001.npz",
    "models/p/v0002.pth": "models/p/v0001.pth",
    "extra.jsonl": "items.jsonl",
}


def _build(root: Path) -> Path:
    with app.open_store(root) as s:
        ctx = s.context(CTX)
        ctx.append("items", [{"id": f"r{i}", "v": i} for i in range(20)])
        ctx.embeddings.save("e", [f"w{i}" for i in range(30)], np.ones((30, 8), np.float32))
        ctx.models.save("m", {"k": list(range(50))})
        ctx.models.save("p", {"w": torch.arange(64, dtype=torch.float32)})
        archive = root.parent / "clean.tar.gz"
        s.export_context(CTX, archive)
    return archive


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("links") / "store"
    return root, _build(root)


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and not p.is_symlink()
        and not p.name.startswith(".")
        and "-wal" not in p.name
        and "-shm" not in p.name
    }


def _plant(root: Path, outside: Path, site: str) -> Path:
    """Plant the link for ``site``; returns the link's path."""
    ctxdir = root / "contexts" / CTX
    link = ctxdir if site == "." else ctxdir / site
    outside.mkdir(parents=True)
    if site in ADDED:
        src = ctxdir / ADDED[site]
        real = outside / Path(site).name
        if src.is_dir():
            shutil.copytree(src, real)
        else:
            shutil.copy2(src, real)
    else:
        real = outside / (Path(site).name if site != "." else "ctx")
        shutil.move(link, real)
    os.symlink(real, link, target_is_directory=real.is_dir())
    return link


def _named(problems: list[str], link: Path) -> bool:
    return any(str(link) in p for p in problems)


def _checks(root: Path, archive: Path, link: Path, site: str) -> dict[str, Callable[[], str]]:
    dest = root.parent / "out.tar.gz"

    def verify() -> str:
        with app.open_store(root) as s:
            report = s.verify()
        if report.ok or not _named(report.problems, link):
            return f"verify: ok={report.ok}, problems={report.problems[:3]}"
        return ""

    def export() -> str:
        with app.open_store(root) as s:
            try:
                s.export_context(CTX, dest)
            except app.IntegrityError:
                return "" if not dest.exists() else "export: refused but left an archive"
        return "export: wrote an archive through a link"

    def stats() -> str:
        with app.open_store(root) as s:
            data = s.stats()
        if not _named(data["problems"], link):
            return f"stats: link not listed ({data['problems'][:2]})"
        return ""

    def import_into(mode: str) -> Callable[[], str]:
        def run() -> str:
            with app.open_store(root) as s:
                try:
                    s.import_context(archive, name=CTX, on_conflict=mode)
                except app.IntegrityError:
                    pass
                else:
                    return f"import {mode}: went through"
            if not link.is_symlink():
                return f"import {mode}: the link was replaced"
            return ""

        return run

    def loads() -> str:
        with app.open_store(root) as s:
            try:
                ctx = s.context(CTX)
            except app.IntegrityError:  # a linked context folder is refused before any use
                return "" if site == "." else f"{site}: the context itself was refused"
            calls: list[tuple[str, Callable[[], object]]] = []
            if site == "." or site.startswith("embeddings"):
                name = "evil" if site == "embeddings/evil" else "e"
                calls += [
                    ("load", lambda: ctx.embeddings.load(name)),
                    ("search", lambda: ctx.embeddings.search(name, np.ones(8), k=1)),
                    ("save", lambda: ctx.embeddings.save(name, ["z"], np.ones((1, 8)))),
                ]
            if site == "." or site.startswith("models"):
                name = {"models/evil": "evil", "models/m": "m"}.get(site, "m")
                if "/p/" in site:
                    name = "p"
                calls += [
                    ("load", lambda: ctx.models.load(name, trusted=True)),
                    ("save", lambda: ctx.models.save(name, {"k": 0})),
                ]
            if site in ADDED and site not in ("embeddings/evil", "models/evil"):
                calls = []  # an added stray file is not on the path of any set or model
            for what, call in calls:
                try:
                    call()
                except app.IntegrityError:
                    continue
                except app.NotFoundError:
                    if site in ("embeddings/evil", "models/evil"):
                        continue  # a linked folder is not listed as a set or model
                    return f"{what}: NotFoundError"
                return f"{what}: went through the link"
        return ""

    return {
        "verify": verify,
        "export": export,
        "stats": stats,
        "import overwrite": import_into("overwrite"),
        "import merge": import_into("merge"),
        "load/save": loads,
    }


@pytest.mark.parametrize("site", REPLACED + list(ADDED))
def test_links_planted_in_a_context(tmp_path: Path, pristine: tuple[Path, Path], site: str) -> None:
    root0, archive = pristine
    failures: list[str] = []
    trials = 0
    for op in _checks(root0, archive, root0, site):  # each op on a fresh copy
        root = tmp_path / op.replace(" ", "-") / "store"
        shutil.copytree(root0, root)
        outside = tmp_path / op.replace(" ", "-") / "outside"
        link = _plant(root, outside, site)
        before = _digests(outside)
        check = _checks(root, archive, link, site)[op]
        trials += 1
        try:
            problem = check()
        except Exception as exc:
            problem = f"{op}: raised {type(exc).__name__}: {str(exc)[:200]}"
        if not problem and _digests(outside) != before:
            problem = f"{op}: changed data outside the store"
        if problem:
            failures.append(f"{site}: {problem}")
    tally("9 symlinks (export, import, verify, stats, load)", trials, len(failures))
    assert not failures, "\n".join(failures)
