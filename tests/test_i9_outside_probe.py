"""Found by an outside probe of the issue-9 build: user input that reached the store through
the CLI or HTTP, or odd arguments, leaked raw errors or changed values silently."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import app
from app.service import create_app


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_refuses_integers_beyond_int64_instead_of_storing_floats(tmp_path: Path) -> None:
    data = tmp_path / "big.jsonl"
    data.write_text('{"id":"m","a":-9223372036854775809}\n{"id":"b","a":99999999999999999999999}\n')
    done = _cli(tmp_path / "s", "append", "c", "x", str(data))
    assert done.returncode != 0 and "64-bit" in done.stderr, done
    assert "Traceback" not in done.stderr
    with app.open_store(tmp_path / "s") as store:
        assert store.context("c").count("x") == 0  # nothing written, nothing turned into 1e+23


def test_cli_and_http_filters_refuse_integers_beyond_int64(tmp_path: Path) -> None:
    with app.open_store(tmp_path / "s") as store:
        store.context("c").append("x", [{"id": "min", "a": -(2**63)}, {"id": "zero", "a": 0}])
    done = _cli(tmp_path / "s", "query", "c", "x", "--where", '{"a": -9223372036854775809}')
    assert done.returncode != 0 and "64-bit" in done.stderr, done
    with app.open_store(tmp_path / "s") as store:
        client = TestClient(create_app(store))
        for where in ('{"a":-9223372036854775809}', '{"a":{"$nin":[-9223372036854775809]}}'):
            r = client.get("/contexts/c/collections/x/records", params={"where": where})
            assert r.status_code == 422, (where, r.status_code, r.text)


def test_http_invalid_body_with_nan_is_422_not_500(store: app.Store) -> None:
    client = TestClient(create_app(store))
    store.context("c").append("x", [{"id": "a"}])
    for url, body in (
        ("/contexts", b'{"name":NaN}'),
        ("/contexts/c/collections/x/query", b'{"limit":1e999}'),
    ):
        r = client.post(url, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (url, r.status_code, r.text)
        assert r.json()["detail"]


def test_batch_id_with_a_lone_surrogate_is_invalid_input(ctx: app.Context) -> None:
    with pytest.raises(app.InvalidInput, match="batch_id"):
        ctx.append("x", [{"a": 1}], batch_id="b\ud800")
    with pytest.raises(app.InvalidInput, match="batch_id"):
        ctx.delete("x", ["q"], batch_id="\udc00")
    assert ctx.count("x") == 0


def test_datetimes_outside_utc_range_are_invalid_input(ctx: app.Context) -> None:
    for value in (
        dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=5))),
    ):
        with pytest.raises(app.InvalidInput, match="UTC"):
            ctx.append("x", [{"t": value}])
    assert ctx.count("x") == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"flush_interval": float("inf")},
        {"flush_interval": 1e300},
        {"flush_interval": "1"},
        {"flush_interval": float("nan")},
        {"max_pending": 1.5},
        {"flush_every": 0},
    ],
)
def test_buffer_arguments_are_checked(ctx: app.Context, kwargs: dict[str, object]) -> None:
    with pytest.raises(app.InvalidInput, match=next(iter(kwargs))):
        ctx.buffer("b", **kwargs)  # type: ignore[arg-type]


def test_paths_with_nul_are_invalid_input(store: app.Store, tmp_path: Path) -> None:
    with pytest.raises(app.InvalidInput, match="root"):
        app.open_store(str(tmp_path / "a\x00b"))
    store.context("c").append("x", [{"id": "a"}])
    with pytest.raises(app.InvalidInput, match="dest"):
        store.export_context("c", str(tmp_path / "a\x00.tar.gz"))
    with pytest.raises(app.InvalidInput, match="src"):
        store.import_context(str(tmp_path / "a\x00.tar.gz"))


def test_a_closed_store_says_so_and_never_fails_a_workflow(store_root: Path) -> None:
    store = app.open_store(store_root)
    wf = store.workflows.submit(
        "append", context="c", items=[{"id": "a"}], params={"collection": "x"}
    )
    store.close()
    with pytest.raises(app.StorageError, match="closed"):
        store.context("c")
    with pytest.raises(app.StorageError, match="closed"):
        store.workflows.process(wf.workflow_id)
    with app.open_store(store_root) as again:
        assert again.workflows.get(wf.workflow_id).status == app.WorkflowStatus.PENDING
        assert again.workflows.process(wf.workflow_id).status == app.WorkflowStatus.COMPLETED
