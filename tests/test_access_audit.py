"""The audit log (``store.audit``): dense, chained under the trust key, appended atomically by
concurrent processes; tampering with the stored rows is found by ``verify``.

Tampering is done as a store writer would: plain SQL on ``access.sqlite``, without the key.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import app
from app.core import layout
from app.core.access_types import AuditEvent
from app.core.errors import IntegrityError, InvalidInput, StorageError
from app.formats.accessdb import AuditRow
from app.managers.access.audit import MAX_FIELD_CHARS, MAX_PROBLEMS, chain_mac

ROOT = Path(__file__).resolve().parents[1]
OTHER_KEY = "another-users-key-" + "fedcba9876543210" * 2


def event(i: int, *, token: str = "ci", outcome: int = 200) -> AuditEvent:
    return AuditEvent(
        token=token, action="append", target=f"ctx/coll{i}", outcome=outcome, request_id=f"r{i}"
    )


def sql(root: Path, statement: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(layout.access_file(root))
    try:
        conn.execute(statement, params)
        conn.commit()
    finally:
        conn.close()


def rows(root: Path) -> list[AuditRow]:
    conn = sqlite3.connect(layout.access_file(root))
    try:
        found = conn.execute(
            "SELECT seq, at, token, action, target, outcome, request_id, mac FROM audit "
            "ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    return [AuditRow(*r) for r in found]


@pytest.fixture
def logged(store: app.Store, store_root: Path) -> Iterator[app.Store]:
    """A store whose audit log holds 10 entries."""
    for i in range(1, 11):
        store.audit.record(event(i))
    yield store


def run(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctxstore", *args],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- appending and reading ---------------------------------------------------------------


def test_record_numbers_stamps_and_chains_entries(store: app.Store) -> None:
    first = store.audit.record(event(1, token="", outcome=401))
    second = store.audit.record(event(2))
    assert (first.seq, second.seq) == (1, 2)
    assert first.token == "" and first.outcome == 401 and first.request_id == "r1"
    assert first.at.endswith("+00:00") and first.at <= second.at
    key = os.environ["CTXSTORE_TRUST_KEY"].encode()
    assert first.mac == chain_mac("", first, key)
    assert second.mac == chain_mac(first.mac, second, key)
    assert store.audit.head() == second
    assert store.audit.verify() == []


def test_page_returns_entries_oldest_first_with_the_total(logged: app.Store) -> None:
    page = logged.audit.page()
    assert [e.seq for e in page.entries] == list(range(1, 11))
    assert (page.total, page.offset) == (10, 0)
    page = logged.audit.page(offset=3, limit=4)
    assert [e.seq for e in page.entries] == [4, 5, 6, 7]
    assert [e.target for e in page.entries] == [f"ctx/coll{i}" for i in (4, 5, 6, 7)]
    assert (page.total, page.offset) == (10, 3)
    assert logged.audit.page(offset=50).entries == []
    assert logged.audit.page(limit=0).entries == []


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"offset": -1}, "offset"),
        ({"limit": -1}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"offset": "3"}, "offset"),
        ({"limit": "3"}, "limit"),
        ({"limit": None}, "limit"),
    ],
)
def test_page_arguments_are_checked(
    store: app.Store, kwargs: dict[str, object], argument: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.audit.page(**kwargs)  # type: ignore[arg-type]
    assert caught.value.argument == argument


def test_record_takes_an_event_and_shortens_long_fields(store: app.Store) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.audit.record({"token": "x"})  # type: ignore[arg-type]
    assert caught.value.argument == "event"
    long = "t" * 100_000
    got = store.audit.record(
        AuditEvent(token="ci", action="append", target=long, outcome=200, request_id="r")
    )
    assert len(got.target) == MAX_FIELD_CHARS and got.target.endswith("...(100000 chars)")
    assert store.audit.verify() == []


def test_without_a_usable_key_nothing_is_recorded_and_verify_says_so(
    logged: app.Store, store_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    (config / "ctxstore").mkdir(parents=True)
    key_file = config / "ctxstore" / "trust.key"
    key_file.write_text("k" * 64)
    key_file.chmod(0o644)  # others may read it: refused
    monkeypatch.delenv("CTXSTORE_TRUST_KEY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    with pytest.raises(StorageError, match="chmod 600"):
        logged.audit.record(event(11))
    assert len(rows(store_root)) == 10
    report = logged.verify()
    assert not report.ok
    assert any("audit log cannot be verified" in p for p in report.problems)


# -- concurrent appenders ------------------------------------------------------------------

APPENDER = """
import os, sys, time
from pathlib import Path
import app
from app.core.access_types import AuditEvent

root, who, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
with app.open_store(root) as store:
    store.audit.page(limit=1)  # connected before the start
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    for i in range(n):
        store.audit.record(AuditEvent(
            token=who, action="append", target=f"c/{i}", outcome=200, request_id=f"{who}-{i}"))
print("done")
"""


def test_three_processes_appending_at_once_keep_one_dense_chain(
    store: app.Store, store_root: Path, tmp_path: Path
) -> None:
    store.audit.record(event(0))  # the file exists: every appender races on the same log
    go = tmp_path / "go"
    n = 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(store_root), f"p{k}", str(n), str(go)],
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(3)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stored = rows(store_root)
    assert [r.seq for r in stored] == list(range(1, 3 * n + 2))  # dense, nothing lost
    ids = [r.request_id for r in stored[1:]]
    assert sorted(ids) == sorted(f"p{k}-{i}" for k in range(3) for i in range(n))
    # each process's own entries keep their order
    for k in range(3):
        mine = [int(r.request_id.split("-")[1]) for r in stored if r.token == f"p{k}"]
        assert mine == list(range(n))
    # the appenders really interleaved (else this test proves nothing about concurrency)
    switches = sum(1 for a, b in itertools.pairwise(stored[1:]) if a.token != b.token)
    assert switches >= 2
    assert store.audit.verify() == []
    assert store.verify().ok


# -- tampering -----------------------------------------------------------------------------


def test_an_edited_entry_is_found(logged: app.Store, store_root: Path) -> None:
    sql(store_root, "UPDATE audit SET outcome = 200, token = 'someone' WHERE seq = 4")
    problems = logged.audit.verify()
    assert len(problems) == 1 and "entry 4 breaks the chain" in problems[0]
    assert str(layout.access_file(store_root)) in problems[0]
    report = logged.verify()
    assert not report.ok and problems[0] in report.problems


def test_an_edited_time_is_found(logged: app.Store, store_root: Path) -> None:
    sql(store_root, "UPDATE audit SET at = '2000-01-01T00:00:00+00:00' WHERE seq = 10")
    assert ["entry 10" in p for p in logged.audit.verify()] == [True]


def test_an_entry_deleted_in_the_middle_is_found(logged: app.Store, store_root: Path) -> None:
    sql(store_root, "DELETE FROM audit WHERE seq = 5")
    problems = logged.audit.verify()
    assert any("entries 5..5 are missing" in p for p in problems)
    assert any("entry 6 breaks the chain" in p for p in problems)


def test_the_first_entries_deleted_are_found(logged: app.Store, store_root: Path) -> None:
    sql(store_root, "DELETE FROM audit WHERE seq <= 2")
    problems = logged.audit.verify()
    assert any("entries 1..2 are missing" in p for p in problems)
    assert any("entry 3 breaks the chain" in p for p in problems)


def test_a_deleted_entry_hidden_by_renumbering_is_found(
    logged: app.Store, store_root: Path
) -> None:
    sql(store_root, "DELETE FROM audit WHERE seq = 5")
    sql(store_root, "UPDATE audit SET seq = seq - 1 WHERE seq > 5")
    problems = logged.audit.verify()
    assert problems and not any("missing" in p for p in problems)
    assert any("entry 5 breaks the chain" in p for p in problems)


def test_reordered_entries_are_found(logged: app.Store, store_root: Path) -> None:
    sql(store_root, "UPDATE audit SET seq = -1 WHERE seq = 3")
    sql(store_root, "UPDATE audit SET seq = 3 WHERE seq = 4")
    sql(store_root, "UPDATE audit SET seq = 4 WHERE seq = -1")
    problems = logged.audit.verify()
    assert any("entry 3 breaks" in p for p in problems)
    assert any("entry 4 breaks" in p for p in problems)


def test_a_forged_entry_signed_with_another_key_is_found(
    logged: app.Store, store_root: Path
) -> None:
    """The forger knows the format and the previous mac; only the key is missing."""
    last = rows(store_root)[-1]
    forged = AuditRow(11, last.at, "admin", "drop_context", "prod", 204, "x", "")
    forged = forged._replace(mac=chain_mac(last.mac, forged, OTHER_KEY.encode()))
    sql(store_root, "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)", tuple(forged))
    problems = logged.audit.verify()
    assert len(problems) == 1 and "entry 11 breaks the chain" in problems[0]
    # and one put in the middle, shifting the rest
    sql(store_root, "DELETE FROM audit WHERE seq = 11")
    sql(store_root, "UPDATE audit SET seq = seq + 100 WHERE seq > 5")
    sql(store_root, "UPDATE audit SET seq = seq - 99 WHERE seq > 100")
    middle = forged._replace(seq=6)
    middle = middle._replace(mac=chain_mac(rows(store_root)[4].mac, middle, OTHER_KEY.encode()))
    sql(store_root, "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)", tuple(middle))
    assert [r.seq for r in rows(store_root)] == list(range(1, 12))
    problems = logged.audit.verify()
    assert any("entry 6 breaks" in p for p in problems)
    assert any("entry 7 breaks" in p for p in problems)


def test_a_log_signed_with_another_key_fails_entirely_with_a_bounded_report(
    store: app.Store, store_root: Path
) -> None:
    for i in range(MAX_PROBLEMS + 30):
        store.audit.record(event(i))
    code = (
        "import sys, json, app\n"
        "with app.open_store(sys.argv[1], create=False) as s:\n"
        "    print(json.dumps([s.audit.verify(), s.verify().ok]))\n"
    )
    problems, ok = json.loads(run(code, str(store_root), env={"CTXSTORE_TRUST_KEY": OTHER_KEY}))
    assert not ok
    assert len(problems) == MAX_PROBLEMS + 1
    assert "entry 1 breaks" in problems[0]
    assert problems[-1].endswith("and 30 more problems")


def test_cutting_the_newest_entries_is_caught_only_against_a_remembered_head(
    logged: app.Store, store_root: Path
) -> None:
    head = logged.audit.head()
    assert head is not None and head.seq == 10
    assert logged.audit.verify(head=head) == []
    sql(store_root, "DELETE FROM audit WHERE seq >= 8")
    # the known limit: a shorter chain is a valid chain
    assert logged.audit.verify() == []
    problems = logged.audit.verify(head=head)
    assert len(problems) == 1 and "before the remembered head 10" in problems[0]
    # a head that does not match the entry at its seq
    seven = logged.audit.page(offset=6, limit=1).entries[0]
    problems = logged.audit.verify(head=seven.model_copy(update={"mac": head.mac}))
    assert len(problems) == 1 and "entry 7 differs from the remembered head" in problems[0]
    with pytest.raises(InvalidInput) as caught:
        logged.audit.verify(head="10:abc")  # type: ignore[arg-type]
    assert caught.value.argument == "head"


# -- command line ----------------------------------------------------------------------------


def test_cli_audit_shows_pages_and_verifies(logged: app.Store, store_root: Path) -> None:
    logged.close()
    done = cli("--root", str(store_root), "audit", "--offset", "2", "--limit", "3", "--json")
    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout)
    assert [e["seq"] for e in page["entries"]] == [3, 4, 5] and page["total"] == 10
    assert all(len(e["mac"]) == 64 for e in page["entries"])
    done = cli("--root", str(store_root), "audit")
    assert done.returncode == 0 and "ctx/coll10" in done.stdout
    done = cli("--root", str(store_root), "audit", "--verify", "--json")
    assert done.returncode == 0, done.stderr
    verdict = json.loads(done.stdout)
    assert verdict["ok"] and verdict["problems"] == [] and verdict["head"]["seq"] == 10
    head = f"{verdict['head']['seq']}:{verdict['head']['mac']}"
    done = cli("--root", str(store_root), "audit", "--verify")
    assert done.returncode == 0 and f"head {head}" in done.stdout

    sql(store_root, "DELETE FROM audit WHERE seq = 10")
    done = cli("--root", str(store_root), "audit", "--verify")
    assert done.returncode == 0  # the known limit, without a head
    done = cli("--root", str(store_root), "audit", "--verify", "--head", head)
    assert done.returncode == 1 and "BROKEN: 1 problem(s)" in done.stdout
    assert "before the remembered head 10" in done.stdout

    sql(store_root, "UPDATE audit SET target = 'elsewhere' WHERE seq = 2")
    done = cli("--root", str(store_root), "audit", "--verify", "--json")
    assert done.returncode == 1
    assert any("entry 2 breaks" in p for p in json.loads(done.stdout)["problems"])
    done = cli("--root", str(store_root), "verify")
    assert done.returncode == 1 and "entry 2 breaks" in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "--head", "1:" + "0" * 64],
        ["audit", "--verify", "--head", "x"],
        ["audit", "--verify", "--head", "0:" + "0" * 64],
        ["audit", "--limit", "10001"],
        ["audit", "--offset", "-1"],
    ],
)
def test_cli_audit_refuses_bad_options(store_root: Path, args: list[str]) -> None:
    app.open_store(store_root).close()
    done = cli("--root", str(store_root), *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("error:") and "Traceback" not in done.stderr


def test_cli_audit_on_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    done = cli("--root", str(tmp_path / "nowhere"), "audit")
    assert done.returncode == 1 and "no store" in done.stderr
    assert not (tmp_path / "nowhere").exists()


def test_an_entry_moved_before_the_first_is_found(logged: app.Store, store_root: Path) -> None:
    sql(store_root, "UPDATE audit SET seq = -3 WHERE seq = 4")
    problems = logged.audit.verify()
    assert any("entry -3 breaks" in p for p in problems)
    assert any("entries 4..4 are missing" in p for p in problems)
    # a log whose every entry was moved below 1 still takes new entries from seq 1
    sql(store_root, "UPDATE audit SET seq = seq - 100")
    head = logged.audit.head()
    assert head is not None and head.seq < 0
    assert logged.audit.record(event(11)).seq == 1


def test_a_link_where_the_access_file_belongs_is_damage(
    logged: app.Store, store_root: Path, tmp_path: Path
) -> None:
    logged.close()
    real = layout.access_file(store_root)
    moved = tmp_path / "elsewhere.sqlite"
    real.rename(moved)
    real.symlink_to(moved)
    with app.open_store(store_root, create=False) as store:
        with pytest.raises(IntegrityError, match="symbolic link"):
            store.tokens.list()
        with pytest.raises(IntegrityError, match="symbolic link"):
            store.audit.record(event(1))
        report = store.verify()
        assert not report.ok and any("symbolic link" in p for p in report.problems)
