"""Service tokens (``store.tokens``): created once, kept only as keyed hashes, looked up by id.

Real stores in tmp folders, real SQLite, real subprocesses for the CLI and the key checks; the
trust key comes from tests/conftest.py (never the real home).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from test_i9_read_only import read_only_view

import app
from app.core import layout
from app.core.access_types import TokenInfo
from app.core.errors import ConflictError, InvalidInput, NotFoundError, StorageError
from app.core.trustkey import sign
from app.managers.access import AuditLog, TokenManager
from app.managers.access.tokens import TOKEN_PATTERN, token_mac

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api.md"


def access_rows(root: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """Write into the store's access database directly, as a store writer without the key."""
    conn = sqlite3.connect(layout.access_file(root))
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def test_create_returns_a_token_of_the_documented_form_shown_once(
    store: app.Store, store_root: Path
) -> None:
    token = store.tokens.create("ci", scope="write")
    found = TOKEN_PATTERN.fullmatch(token)
    assert found is not None
    token_id, secret = found.group(1), found.group(2)
    assert len(bytes.fromhex(token_id)) == 8
    assert len(secret) >= 22  # >= 128 bits of urlsafe base64
    # the store keeps neither the token nor the secret
    body = layout.access_file(store_root).read_bytes()
    wal = Path(f"{layout.access_file(store_root)}-wal")
    body += wal.read_bytes() if wal.exists() else b""
    assert secret.encode() not in body and token.encode() not in body
    assert token_id.encode() in body


def test_authenticate_list_and_revoke(store: app.Store) -> None:
    admin = store.tokens.create("ops", scope="admin")
    reader = store.tokens.create("dash", scope="read", contexts=["b", "a", "a"])
    got = store.tokens.authenticate(admin)
    assert got is not None and got.name == "ops" and got.scope == "admin"
    assert got.contexts is None and got.allows("read") and got.sees("anything")
    got = store.tokens.authenticate(reader)
    assert got is not None and got.contexts == ("a", "b")
    assert got.sees("a") and not got.sees("c") and not got.allows("write")
    listed = store.tokens.list()
    assert [t.name for t in listed] == ["dash", "ops"]
    assert all(isinstance(t, TokenInfo) for t in listed)
    assert listed[1].created_at.endswith("+00:00")  # UTC
    store.tokens.revoke("dash")
    assert store.tokens.authenticate(reader) is None
    assert store.tokens.authenticate(admin) is not None
    assert [t.name for t in store.tokens.list()] == ["ops"]
    with pytest.raises(NotFoundError, match="dash"):
        store.tokens.revoke("dash")
    # a revoked name may be used again; the old token stays dead
    again = store.tokens.create("dash", scope="write")
    assert store.tokens.authenticate(reader) is None
    info = store.tokens.authenticate(again)
    assert info is not None and info.scope == "write"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ctx",
        "ctx__",
        "Bearer ctx_0011223344556677_abcdefghijklmnopqrstuvwxyz",
        "ctx_0011223344556677_short",
        "ctx_00112233445566zz_abcdefghijklmnopqrstuvwxyz",
        "ctx_0011223344556677_abcdefghijklmnopqrstuvwxyz",  # well formed, unknown
        "ctx_" + "0" * 16 + "_" + "a" * 10_000,
        "x" * 1_000_000,
        "ctx_0011223344556677_abc\x00defghijklmnopqrstuvwxyz",
        "ctx_0011223344556677_ábcdefghijklmnopqrstuvwxyz",
        None,
        b"ctx_0011223344556677_abcdefghijklmnopqrstuvwxyz",
        42,
        ["ctx"],
    ],
)
def test_authenticate_answers_none_for_anything_malformed_or_unknown(
    store: app.Store, bad: object
) -> None:
    store.tokens.create("one", scope="admin")
    assert store.tokens.authenticate(bad) is None  # type: ignore[arg-type]


def test_a_token_with_its_secret_changed_does_not_authenticate(store: app.Store) -> None:
    token = store.tokens.create("one", scope="admin")
    last = token[-1]
    other = token[:-1] + ("A" if last != "A" else "B")
    assert store.tokens.authenticate(other) is None
    assert store.tokens.authenticate(token[:-1]) is None
    assert store.tokens.authenticate(token) is not None


def test_names_scopes_and_contexts_are_validated(store: app.Store) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"name": "../x", "scope": "read"}, "name"),
        ({"name": "", "scope": "read"}, "name"),
        ({"name": "x" * 65, "scope": "read"}, "name"),
        ({"name": "ok", "scope": "root"}, "scope"),
        ({"name": "ok", "scope": "READ"}, "scope"),
        ({"name": "ok", "scope": "read", "contexts": []}, "contexts"),
        ({"name": "ok", "scope": "read", "contexts": ["good", "../bad"]}, "contexts"),
        ({"name": "ok", "scope": "read", "contexts": "single"}, "contexts"),
    ]
    for kwargs, argument in cases:
        with pytest.raises(InvalidInput) as caught:
            store.tokens.create(**kwargs)  # type: ignore[arg-type]
        assert caught.value.argument == argument, kwargs
    with pytest.raises(InvalidInput) as caught:
        store.tokens.revoke("../x")
    assert caught.value.argument == "name"
    assert store.tokens.list() == []


def test_a_duplicate_name_is_a_conflict(store: app.Store) -> None:
    first = store.tokens.create("ci", scope="read")
    with pytest.raises(ConflictError, match="ci"):
        store.tokens.create("ci", scope="admin")
    info = store.tokens.authenticate(first)
    assert info is not None and info.scope == "read"
    assert len(store.tokens.list()) == 1


def test_a_row_written_without_the_key_never_authenticates(
    store: app.Store, store_root: Path
) -> None:
    """A store writer mints a token: a row with a hash made under another key (or any key
    they can guess) does not authenticate."""
    store.tokens.create("real", scope="read")
    token_id, secret, at = "00112233445566ff", "A" * 43, "2026-01-01T00:00:00+00:00"
    data = orjson.dumps(
        {
            "id": token_id,
            "secret": secret,
            "name": "evil",
            "scope": "admin",
            "contexts": None,
            "created_at": at,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    # the forger knows the format exactly: only the key is missing
    assert sign("token", data) == token_mac(token_id, secret, "evil", "admin", None, at)
    wrong_key = b"someone-else-" + b"0123456789abcdef" * 2
    access_rows(
        store_root,
        "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?)",
        (token_id, "evil", "admin", None, at, sign("token", data, key=wrong_key)),
    )
    minted = f"ctx_{token_id}_{secret}"
    assert store.tokens.authenticate(minted) is None
    # a plain SHA-256 (an unkeyed hash) is refused too
    access_rows(
        store_root,
        "UPDATE tokens SET mac = ? WHERE name = 'evil'",
        (hashlib.sha256(data).hexdigest(),),
    )
    assert store.tokens.authenticate(minted) is None
    assert "evil" in [t.name for t in store.tokens.list()]  # listed: an operator sees it


def test_raising_a_tokens_scope_in_the_store_breaks_it(store: app.Store, store_root: Path) -> None:
    token = store.tokens.create("viewer", scope="read", contexts=["a"])
    access_rows(store_root, "UPDATE tokens SET scope = 'admin' WHERE name = 'viewer'")
    assert store.tokens.authenticate(token) is None
    access_rows(store_root, "UPDATE tokens SET scope = 'read', contexts = NULL")
    assert store.tokens.authenticate(token) is None
    access_rows(store_root, """UPDATE tokens SET contexts = '["a"]'""")
    info = store.tokens.authenticate(token)
    assert info is not None and info.scope == "read" and info.contexts == ("a",)


def test_another_trust_key_rejects_every_token(store_root: Path) -> None:
    with app.open_store(store_root) as store:
        token = store.tokens.create("ci", scope="admin")
    code = (
        "import sys, app\n"
        "with app.open_store(sys.argv[1]) as s:\n"
        "    print(s.tokens.authenticate(sys.argv[2]), [t.name for t in s.tokens.list()])\n"
    )
    for key, expected in (
        (os.environ["CTXSTORE_TRUST_KEY"], "name='ci'"),
        ("another-key-" + "fedcba9876543210" * 2, "None ['ci']"),
    ):
        env = dict(os.environ, CTXSTORE_TRUST_KEY=key, PYTHONPATH=str(ROOT))
        done = subprocess.run(
            [sys.executable, "-c", code, str(store_root), token],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert expected in done.stdout


def test_reads_create_nothing_and_work_on_a_read_only_store(
    store: app.Store, store_root: Path, tmp_path: Path
) -> None:
    assert store.tokens.list() == []
    assert store.tokens.authenticate("ctx_0011223344556677_" + "a" * 43) is None
    assert store.audit.page().entries == [] and store.audit.head() is None
    assert store.audit.verify() == [] and store.verify().ok
    assert not layout.access_file(store_root).exists()
    with pytest.raises(NotFoundError):
        store.tokens.revoke("nobody")
    assert not layout.access_file(store_root).exists()
    token = store.tokens.create("ci", scope="read")
    assert layout.access_file(store_root).is_file()
    store.close()
    with (
        read_only_view(store_root, tmp_path / "ro") as mnt,
        app.open_store(mnt, create=False) as ro,
    ):
        assert [t.name for t in ro.tokens.list()] == ["ci"]
        assert ro.tokens.authenticate(token) is not None
        with pytest.raises(StorageError):
            ro.tokens.create("more", scope="read")


CONTRACTS = """
import inspect, json
from app.managers.access import AuditLog, TokenManager
print(json.dumps([
    f"{cls.__name__}.{name}"
    for cls in (TokenManager, AuditLog)
    for name, fn in vars(cls).items()
    if not name.startswith("_") and inspect.isfunction(fn)
    and not (getattr(fn, "__preconditions__", None) or getattr(fn, "__postconditions__", None))
]))
"""


def test_every_public_method_has_a_contract_at_the_default_level() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CTXSTORE_CONTRACTS"}
    done = subprocess.run(
        [sys.executable, "-c", CONTRACTS],
        env=dict(env, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert orjson.loads(done.stdout) == []


def test_every_public_method_is_documented() -> None:
    doc = API.read_text()
    section = doc[doc.index("## Service security") :]
    for cls, receiver in ((TokenManager, "store.tokens"), (AuditLog, "store.audit")):
        names = [n for n, f in vars(cls).items() if not n.startswith("_") and inspect.isfunction(f)]
        assert len(names) == 4
        for name in names:
            assert re.search(rf"{re.escape(receiver)}\.{name}\(", section), (
                f"{receiver}.{name} is not in docs/api.md, 'Service security'"
            )


# -- the backend seam: ``Access`` rows ---------------------------------------------------------


@pytest.mark.parametrize("backend_kind", ["local", "postgres"])
def test_the_access_rows_keep_the_protocols_promises(
    tmp_path: Path, backend_kind: str, request: pytest.FixtureRequest
) -> None:
    """``Access`` (embedded ``AccessDB``; ``PgAccess`` on a real PostgreSQL) against its
    contract: unique names, lookups by id, removal, and one dense chain of audit rows with
    many threads appending at once."""
    from concurrent.futures import ThreadPoolExecutor

    from app.backends.local import LocalBackend
    from app.backends.protocols import Access
    from app.formats.accessdb import AuditRow, TokenRow

    access: Access
    if backend_kind == "postgres":
        from app.backends.postgres.access import PgAccess

        url = request.getfixturevalue("pg_url")
        access = PgAccess(url)
        assert access.where() == url  # the test server's URL has no password
    else:
        access = LocalBackend(tmp_path / "s").access()
        assert access.where() == str(layout.access_file(tmp_path / "s"))
    assert access.tokens() == [] and access.token("00" * 8) is None
    assert access.audit_rows() == [] and access.audit_count() == 0
    assert access.audit_last() is None and not access.remove_token("x")
    if backend_kind == "postgres":
        from app.backends.postgres.schema import schema_version

        with access.db.connection() as conn:  # type: ignore[attr-defined]
            assert schema_version(conn, "access") is None  # reads create nothing
    else:
        assert not layout.access_file(tmp_path / "s").exists()  # reads create nothing
        (tmp_path / "s").mkdir()
    row = TokenRow("aa" * 8, "b", "read", ("c1", "c2"), "t0", "m" * 64)
    access.add_token(row)
    access.add_token(TokenRow("bb" * 8, "a", "admin", None, "t1", "n" * 64))
    with pytest.raises(ConflictError):
        access.add_token(row._replace(token_id="cc" * 8))
    with pytest.raises(ConflictError):
        access.add_token(row._replace(name="other"))
    assert access.token("aa" * 8) == row
    assert [t.name for t in access.tokens()] == ["a", "b"]
    assert access.remove_token("b") and access.token("aa" * 8) is None

    def make(last: AuditRow | None) -> AuditRow:
        seq = 1 if last is None else last.seq + 1
        return AuditRow(
            seq, "t", "", "a", "", 200, str(seq), "" if last is None else last.mac + "x"
        )

    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(lambda _: access.append_audit(make), range(200)))
    assert sorted(r.seq for r in done) == list(range(1, 201))
    stored = access.audit_rows()
    assert [r.seq for r in stored] == list(range(1, 201))
    assert all(len(r.mac) == r.seq - 1 for r in stored)  # each made from its predecessor
    assert access.audit_rows(195, 10) == stored[195:] == access.audit_after(195, 10)
    assert access.audit_after(0, 3) == stored[:3]
    assert access.audit_count() == 200 and access.audit_last() == stored[-1]
    access.close()


# -- command line ----------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctxstore", *args],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_tokens_create_list_revoke(store_root: Path) -> None:
    done = cli("--root", str(store_root), "tokens", "create", "ci", "--scope", "write",
               "--context", "a", "--context", "b")  # fmt: skip
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert done.stdout.count("\n") == 1 and TOKEN_PATTERN.fullmatch(token)  # the token alone
    assert "shown only now" in done.stderr and "Authorization: Bearer" in done.stderr
    with app.open_store(store_root, create=False) as store:
        info = store.tokens.authenticate(token)
        assert info is not None and info.scope == "write" and info.contexts == ("a", "b")
    assert (
        cli("--root", str(store_root), "tokens", "create", "ops", "--scope", "admin").returncode
        == 0
    )
    done = cli("--root", str(store_root), "tokens", "list", "--json")
    assert done.returncode == 0, done.stderr
    listed = orjson.loads(done.stdout)
    assert [(t["name"], t["scope"], t["contexts"]) for t in listed] == [
        ("ci", "write", ["a", "b"]),
        ("ops", "admin", None),
    ]
    assert token not in done.stdout
    done = cli("--root", str(store_root), "tokens", "list")
    assert done.returncode == 0 and "ci" in done.stdout and "(all)" in done.stdout
    done = cli("--root", str(store_root), "tokens", "revoke", "ci")
    assert done.returncode == 0 and "revoked" in done.stdout
    with app.open_store(store_root, create=False) as store:
        assert store.tokens.authenticate(token) is None


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["tokens", "create", "x", "--scope", "root"], 2, "scope"),
        (["tokens", "create", "x"], 2, "--scope"),
        (["tokens", "create", "../x", "--scope", "read"], 2, "name"),
        (["tokens", "create", "x", "--scope", "read", "--context", "a/b"], 2, "contexts"),
        (["tokens", "create", "dup", "--scope", "read"], 1, "already exists"),
        (["tokens", "revoke", "nobody"], 1, "not found"),
        (["tokens", "revoke", "../x"], 2, "name"),
    ],
)
def test_cli_tokens_refuse_with_one_line(
    store_root: Path, args: list[str], code: int, says: str
) -> None:
    with app.open_store(store_root) as store:
        store.tokens.create("dup", scope="read")
    done = cli("--root", str(store_root), *args)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert done.stderr.startswith("error:") and says in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
