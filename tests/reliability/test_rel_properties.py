"""Scenario 8: property-based tests with explicit Hypothesis strategies: a state machine of
append / upsert / delete / compact / rebuild_index / reopen against an in-memory model; random
records round-trip exactly."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from relstats import scale, tally

import app

KEYS = st.text(alphabet="abcdefgh_", min_size=1, max_size=6)
# every string v2 stores: any Unicode but NUL (refused at append since v2, SPEC 22)
CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(CHARS, max_size=20)
)
VALUES = st.recursive(
    SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(KEYS, c, max_size=3), max_leaves=8
)
IDS = st.sampled_from([f"r{i}" for i in range(12)])
RECORD = st.fixed_dictionaries(
    {"id": IDS, "g": st.integers(0, 3)}, optional={"v": VALUES, "s": st.text(CHARS, max_size=10)}
)
_STATS = {"steps": 0, "failures": 0}


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ctxsm-"))
        self.store = app.open_store(self.dir / "s")
        self.ctx = self.store.context("c")
        self.model: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []  # commit order of the latest versions

    def _put(self, rec: dict[str, Any]) -> None:
        if rec["id"] in self.model:
            self.order.remove(rec["id"])
        self.model[rec["id"]] = rec
        self.order.append(rec["id"])

    @rule(records=st.lists(RECORD, min_size=1, max_size=6, unique_by=lambda r: r["id"]))
    def append(self, records: list[dict[str, Any]]) -> None:
        self.ctx.append("items", records)
        for r in records:
            self._put(r)

    @rule(ids=st.lists(IDS, max_size=4, unique=True))
    def delete(self, ids: list[str]) -> None:
        n = self.ctx.delete("items", ids)
        assert n == sum(i in self.model for i in ids)
        for i in ids:
            if self.model.pop(i, None) is not None:
                self.order.remove(i)

    @rule(g=st.integers(0, 3))
    def delete_where(self, g: int) -> None:
        self.ctx.delete("items", where={"g": g})
        for i in [i for i, r in self.model.items() if r["g"] == g]:
            del self.model[i]
            self.order.remove(i)

    @precondition(lambda self: True)
    @rule()
    def compact(self) -> None:
        self.ctx.compact("items")

    @rule()
    def rebuild(self) -> None:
        self.ctx.rebuild_index()

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = app.open_store(self.dir / "s")
        self.ctx = self.store.context("c")

    @invariant()
    def agrees(self) -> None:
        _STATS["steps"] += 1
        got = self.ctx.query("items")
        assert got == [self.model[i] for i in self.order]
        assert self.ctx.count("items") == len(self.model)
        for g in range(4):
            want = [self.model[i] for i in self.order if self.model[i]["g"] == g]
            assert self.ctx.query("items", {"g": g}) == want
        for i in ("r0", "r5"):
            if i in self.model:
                assert self.ctx.get("items", i) == self.model[i]

    def teardown(self) -> None:
        assert self.ctx.verify().ok
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_state_machine() -> None:
    StoreMachine.TestCase.settings = settings(
        max_examples=scale(25, 300),
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    try:
        StoreMachine.TestCase().runTest()
    except Exception:
        tally("8 property: state machine (steps)", _STATS["steps"], 1)
        raise
    tally("8 property: state machine (steps)", _STATS["steps"], 0)


_RT = {"n": 0}


@settings(max_examples=scale(150, 1500), deadline=None, suppress_health_check=list(HealthCheck))
@given(
    records=st.lists(
        st.fixed_dictionaries(
            {"id": st.text(CHARS, min_size=1, max_size=40)}, optional={"v": VALUES, "w": VALUES}
        ),
        min_size=1,
        max_size=5,
        unique_by=lambda r: r["id"],
    )
)
def test_records_round_trip(records: list[dict[str, Any]]) -> None:
    _RT["n"] += 1
    with tempfile.TemporaryDirectory() as d, app.open_store(Path(d) / "s") as s:
        ctx = s.context("c")
        ctx.append("rt", records)
        for r in records:
            assert ctx.get("rt", r["id"]) == r
        assert ctx.query("rt") == records
        with app.open_store(Path(d) / "s") as s2:
            assert s2.context("c").query("rt") == records


def test_round_trip_tally() -> None:
    tally("8 property: records round-trip", _RT["n"], 0)
    assert _RT["n"] > 0
