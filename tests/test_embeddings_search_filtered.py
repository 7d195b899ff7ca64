"""Filtered embedding search (docs/api.md "Embeddings", "Filtered and approximate search"):
with ``collection`` + ``where`` only the ids whose CURRENT record matches are candidates, and
the result equals numpy brute force over exactly those rows. Runs on the backend matrix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import app

DIM = 12
Pred = Callable[[dict[str, Any]], bool]


def _records() -> list[dict[str, Any]]:
    langs = ["en", "fr", "de", "es"]
    return [
        {
            "id": f"r{i:03d}",
            "lang": langs[i % 4],
            "n": i,
            "meta": {"source": f"s{i % 3}"},
        }
        for i in range(240)
    ]


def _fill(ctx: app.Context) -> tuple[list[str], np.ndarray[Any, Any], dict[str, dict[str, Any]]]:
    """240 records (then one deleted, one changed); a set of 200 of them plus 20 ids no record
    has. Returns the set's ids, vectors and the current records by id."""
    records = _records()
    ctx.append("docs", records[:120])
    ctx.append("docs", records[120:])
    ctx.delete("docs", ["r004"])  # an "en" record that is no longer current
    ctx.append("docs", [{"id": "r001", "lang": "en", "n": 1, "meta": {"source": "s9"}}])
    current = {r["id"]: r for r in records if r["id"] != "r004"}
    current["r001"] = {"id": "r001", "lang": "en", "n": 1, "meta": {"source": "s9"}}
    ids = [f"r{i:03d}" for i in range(0, 200)] + [f"x{i}" for i in range(20)]
    vectors = np.random.default_rng(5).standard_normal((len(ids), DIM)).astype(np.float32)
    ctx.embeddings.save("vecs", ids[:150], vectors[:150])
    ctx.embeddings.save("vecs", ids[150:], vectors[150:], mode="append")  # two shards
    return ids, vectors, current


def _brute(
    ids: list[str], vectors: Any, rows: list[int], query: Any, metric: str, k: int
) -> list[tuple[str, float]]:
    sub = np.asarray(vectors, dtype=np.float64)[rows]
    q = np.asarray(query, dtype=np.float64)
    if metric == "dot":
        scores = sub @ q
    elif metric == "cosine":
        scores = (sub @ q) / (np.linalg.norm(sub, axis=1) * np.linalg.norm(q))
    else:
        scores = np.linalg.norm(sub - q, axis=1)
    order = np.argsort(scores if metric == "l2" else -scores, kind="stable")[:k]
    return [(ids[rows[i]], float(scores[i])) for i in order]


FILTERS: list[tuple[dict[str, Any] | None, Pred]] = [
    ({"lang": "en"}, lambda r: r["lang"] == "en"),
    ({"n": {"$gte": 50, "$lt": 170}}, lambda r: 50 <= r["n"] < 170),
    (
        {"$or": [{"lang": "fr"}, {"meta.source": "s9"}]},
        lambda r: r["lang"] == "fr" or r["meta"]["source"] == "s9",
    ),
    (
        {"lang": {"$in": ["de", "es"]}, "n": {"$ne": 3}},
        lambda r: r["lang"] in ("de", "es") and r["n"] != 3,
    ),
    (None, lambda r: True),
]


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
@pytest.mark.parametrize("case", range(len(FILTERS)))
def test_filtered_search_equals_brute_force_over_the_matching_rows(
    ctx: app.Context, metric: str, case: int
) -> None:
    ids, vectors, current = _fill(ctx)
    where, pred = FILTERS[case]
    rows = [i for i, rid in enumerate(ids) if rid in current and pred(current[rid])]
    assert rows  # every filter here matches something
    queries = np.random.default_rng(case).standard_normal((3, DIM)).astype(np.float32)
    for k in (1, 7, 500):
        got = ctx.embeddings.search(
            "vecs", queries, k=k, metric=metric, where=where, collection="docs"
        )
        assert isinstance(got, list) and len(got) == 3
        for qi, hits in enumerate(got):
            assert isinstance(hits, list)
            want = _brute(ids, vectors, rows, queries[qi], metric, k)
            assert [h.id for h in hits] == [w[0] for w in want]
            np.testing.assert_allclose(
                [h.score for h in hits], [w[1] for w in want], rtol=1e-4, atol=1e-5
            )
        one = ctx.embeddings.search(
            "vecs", queries[0], k=k, metric=metric, where=where, collection="docs"
        )
        assert [h.id for h in one] == [h.id for h in got[0]]


def test_only_current_records_are_candidates(ctx: app.Context) -> None:
    _ids, vectors, _current = _fill(ctx)
    query = vectors[4]  # the vector of r004, whose record was deleted
    hits = ctx.embeddings.search("vecs", query, k=300, where={"lang": "en"}, collection="docs")
    found = {h.id for h in hits}
    assert "r004" not in found  # deleted
    assert "r001" in found  # changed to "en" by its latest version
    assert not any(i.startswith("x") for i in found)  # ids without a record
    assert all(int(i[1:]) % 4 == 0 or i == "r001" for i in found)
    everything = ctx.embeddings.search("vecs", query, k=1)
    assert everything[0].id == "r004"  # unfiltered, the deleted record's row is still in the set


def test_no_match_and_unknown_collection_give_empty_results(ctx: app.Context) -> None:
    _fill(ctx)
    q1 = np.ones(DIM, dtype=np.float32)
    q2 = np.ones((2, DIM), dtype=np.float32)
    assert ctx.embeddings.search("vecs", q1, where={"lang": "zz"}, collection="docs") == []
    assert ctx.embeddings.search("vecs", q2, where={"lang": "zz"}, collection="docs") == [[], []]
    assert ctx.embeddings.search("vecs", q1, collection="nothing_here") == []
    ctx.append("other", [{"id": "y1"}, {"id": "y2"}])  # records whose ids the set lacks
    assert ctx.embeddings.search("vecs", q1, collection="other") == []


def test_where_without_collection_and_bad_filters_are_invalid_input(ctx: app.Context) -> None:
    _fill(ctx)
    q = np.ones(DIM, dtype=np.float32)
    with pytest.raises(app.InvalidInput) as err:
        ctx.embeddings.search("vecs", q, where={"lang": "en"})
    assert err.value.argument == "collection"
    assert "collection" in str(err.value)
    with pytest.raises(app.InvalidInput):
        ctx.embeddings.search("vecs", q, where={"lang": {"$regex": "e"}}, collection="docs")
    with pytest.raises(app.InvalidInput):
        ctx.embeddings.search("vecs", q, where={"lang": "en"}, collection="../docs")
    with pytest.raises(app.InvalidInput):
        ctx.embeddings.search("vecs", np.ones(DIM + 1), where={"lang": "en"}, collection="docs")


def test_a_filtered_search_is_exact_even_when_asked_approximate(ctx: app.Context) -> None:
    ids, vectors, current = _fill(ctx)
    rows = [i for i, rid in enumerate(ids) if rid in current and current[rid]["lang"] == "de"]
    q = np.random.default_rng(9).standard_normal(DIM)
    hits = ctx.embeddings.search(
        "vecs", q, k=5, where={"lang": "de"}, collection="docs", exact=False
    )
    assert [h.id for h in hits] == [w[0] for w in _brute(ids, vectors, rows, q, "cosine", 5)]


def test_matching_ids_lists_the_current_matches_in_commit_order(ctx: app.Context) -> None:
    _ids, _vectors, current = _fill(ctx)
    got = ctx.matching_ids("docs", {"lang": "en"})
    want = [r for r in (f"r{i:03d}" for i in range(240)) if r != "r001" and r in current]
    want = [r for r in want if current[r]["lang"] == "en"] + ["r001"]  # r001 re-committed last
    assert got == want
    assert ctx.matching_ids("nothing_here") == []
