"""docs/api.md stays in sync with the code.

Every name of ``ctxstore.__all__`` and every public method (or property) of the managers is
mentioned in docs/api.md; every call written there as ``store.x(``, ``ctx.x(``,
``ctx.embeddings.x(``, ``ctx.models.x(``, ``store.workflows.x(``, ``buf.x(`` or
``ctxstore.x(`` exists. The README and the docs index point to docs/api.md.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import ctxstore
from app.managers.embeddings import EmbeddingStore
from app.managers.models import ModelStore

REPO = Path(__file__).resolve().parent.parent
API = REPO / "docs" / "api.md"

# how docs/api.md names an object of each class when it calls a method on it
RECEIVERS: dict[str, type] = {
    "store.workflows": ctxstore.WorkflowManager,
    "ctx.embeddings": EmbeddingStore,
    "ctx.models": ModelStore,
    "store": ctxstore.Store,
    "ctx": ctxstore.Context,
    "buf": ctxstore.AppendBuffer,
}
CALL = re.compile(
    r"(?<![\w.])(" + "|".join(re.escape(r) for r in RECEIVERS) + r"|ctxstore)\.(\w+)\("
)


def public_members(cls: type) -> list[str]:
    """Public methods and properties ``cls`` defines itself or inherits from ``app``."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("app."):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            if inspect.isfunction(value) or isinstance(value, property | classmethod):
                names.add(name)
    return sorted(names)


def text() -> str:
    return API.read_text()


@pytest.mark.parametrize("name", sorted(ctxstore.__all__))
def test_every_exported_name_is_documented(name: str) -> None:
    assert re.search(rf"`[^`]*\b{re.escape(name)}\b[^`]*`", text()), (
        f"ctxstore.{name} is not mentioned in docs/api.md"
    )


@pytest.mark.parametrize(
    ("receiver", "cls"), list(RECEIVERS.items()), ids=[c.__name__ for c in RECEIVERS.values()]
)
def test_every_public_method_is_documented(receiver: str, cls: type) -> None:
    doc = text()
    missing = [name for name in public_members(cls) if not re.search(rf"\.{name}\b", doc)]
    assert not missing, f"{cls.__name__} methods not in docs/api.md: {missing}"


def test_every_documented_call_exists() -> None:
    calls = CALL.findall(text())
    assert len(calls) > 50  # the parser still finds the calls
    wrong = []
    for receiver, name in calls:
        if receiver == "ctxstore":
            ok = name in ctxstore.__all__
        else:
            ok = name in public_members(RECEIVERS[receiver])
        if not ok:
            wrong.append(f"{receiver}.{name}(")
    assert not wrong, f"docs/api.md calls methods that do not exist: {sorted(set(wrong))}"


def test_docs_use_the_public_package_name() -> None:
    for path in [API, REPO / "docs" / "README.md", REPO / "README.md"]:
        body = path.read_text()
        assert not re.search(r"^\s*(import app\b|from app\b)", body, re.M), path
        assert "SPEC" not in body, f"{path} points to SPEC, which users never see"


def test_readme_and_index_point_to_the_reference() -> None:
    assert "docs/api.md" in (REPO / "README.md").read_text()
    assert "api.md" in (REPO / "docs" / "README.md").read_text()


DOC_REF = re.compile(r'docs/api\.md,?\s+"([^"]+)"')


def test_docstrings_point_to_existing_sections_and_never_to_spec() -> None:
    """Docstrings cite docs/api.md by section title (``docs/api.md, "Models"``); every cited
    title is the start of a heading there, and no docstring cites SPEC, which users never see."""
    headings = [h.strip() for h in re.findall(r"^#{2,3} (.+)$", text(), re.M)]
    wrong, spec = [], []
    for path in sorted((REPO / "app").rglob("*.py")) + sorted((REPO / "ctxstore").rglob("*.py")):
        body = path.read_text()
        rel = path.relative_to(REPO)
        wrong += [
            f"{rel}: {title!r}"
            for title in DOC_REF.findall(body)
            if not any(h.startswith(title) for h in headings)
        ]
        spec += [f"{rel}:{n}" for n, line in enumerate(body.splitlines(), 1) if "SPEC" in line]
    assert not wrong, f"docstrings cite sections docs/api.md does not have: {wrong}"
    assert not spec, f"docstrings cite SPEC: {spec}"
