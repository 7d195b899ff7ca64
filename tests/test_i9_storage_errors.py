"""Issue 9, items 7 and 11: an I/O or permission error on a SQLite file (index, tracker) is a
``StorageError`` with an errno, never "damaged"; a first use that failed for lack of space
recovers in the same ``Store`` once space is back. Everything here happens for real in child
processes: a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) that the child lifts again, files
and folders this user may not open (as root the child drops to ``nobody``), real corruption.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import app

REPO = Path(__file__).resolve().parent.parent

# The child: a store whose index and tracker are used for the first time under a file-size
# limit, then again after lifting it, in the same process and the same Store object.
DISK_FULL_CHILD = r"""
import json, resource, signal, sys
import app
root, limit = sys.argv[1], int(sys.argv[2])
out = {"limited": {}, "after": {}}
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
store = app.open_store(root)
ctx = store.context("c")

def attempt(phase, what, fn):
    try:
        fn()
        out[phase][what] = "ok"
    except app.StorageError as exc:
        out[phase][what] = [type(exc).__name__, exc.errno, str(exc)[:300]]

def tracker():
    if any(w.workflow_id == "w1" for w in store.workflows.list()):
        return
    store.workflows.submit("append", context="c", items=[{"id": "w1"}],
                           params={"collection": "wf"}, workflow_id="w1")

def index():
    ctx.append("items", [{"id": "a"}], batch_id="b1")
    assert ctx.count("items") == 1

resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
attempt("limited", "tracker", tracker)
attempt("limited", "index", index)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space is back
attempt("after", "tracker", tracker)
attempt("after", "index", index)
attempt("after", "again", lambda: store.workflows.get("w1"))
report = store.verify()
out["verify"] = [report.ok, report.problems[:3]]
store.close()
print(json.dumps(out))
"""


PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 1, 2, 3


def _drop_file_permission_bypass() -> None:
    """In the child before exec: root without the capabilities that bypass file permissions
    (dropped from the bounding set, so the exec'd interpreter never has them)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@functools.cache
def _can_drop_bypass() -> bool:
    try:
        subprocess.run(
            [sys.executable, "-c", "pass"],
            check=True,
            preexec_fn=_drop_file_permission_bypass,
            capture_output=True,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _run(code: str, *args: str, unprivileged: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CTXSTORE_ROOT", None)
    drop = unprivileged and os.geteuid() == 0
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        preexec_fn=_drop_file_permission_bypass if drop else None,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("limit", [0, 512, 4096, 16384, 40960])
def test_disk_full_on_first_use_recovers_when_space_is_back(tmp_path: Path, limit: int) -> None:
    root = tmp_path / "store"
    with app.open_store(root) as s:
        s.context("c")  # context.json only: the index and the tracker do not exist yet
    out = _run(DISK_FULL_CHILD, str(root), str(limit))
    for what, result in out["limited"].items():
        if result != "ok":
            kind, err, text = result
            assert kind == "StorageError", f"{what} under a {limit}-byte limit: {result}"
            assert err is not None, result
            assert "damaged" not in text, result
    assert out["after"] == {"tracker": "ok", "index": "ok", "again": "ok"}, out
    assert out["verify"] == [True, []], out
    with app.open_store(root) as s:
        assert s.context("c").count("items") == 1
        assert s.workflows.get("w1").status == "pending"


# -- permission errors -----------------------------------------------------------------------

PERMISSION_CHILD = r"""
import json, sys
import app
root, what = sys.argv[1], sys.argv[2]
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except app.StorageError as exc:
        out[name] = [type(exc).__name__, exc.errno, str(exc)[:300]]
try:
    store = app.open_store(root, create=False)
except app.StorageError as exc:
    print(json.dumps({"open": [type(exc).__name__, exc.errno, str(exc)[:300]]}))
    raise SystemExit(0)
ctx = store.context("c", create=False)
if what == "index":
    attempt("count", lambda: ctx.count("items"))
    attempt("query", lambda: ctx.query("items"))
    attempt("append", lambda: ctx.append("items", [{"id": "z"}]))
    attempt("verify", lambda: store.context("c", create=False).verify())
else:
    attempt("list", lambda: store.workflows.list())
    attempt("verify", lambda: store.workflows.verify())
    attempt("submit", lambda: store.workflows.submit(
        "append", context="c", items=[{"id": "v"}], params={"collection": "wf"}))
print(json.dumps(out))
"""


def _store_with_data(root: Path) -> None:
    with app.open_store(root) as s:
        s.context("c").append("items", [{"id": "a"}])
        s.workflows.submit("append", context="c", items=[{"id": "w"}], params={"collection": "wf"})


@pytest.mark.parametrize(
    "case",
    [
        "index-unreadable",  # chmod 000 on the index
        "index-wal-unreadable",  # the index's -wal file cannot be opened
        "context-folder-readonly",  # no write permission on the context folder
        "tracker-unreadable",  # chmod 000 on tracker.sqlite
        "tracker-folder-readonly",  # workflows/ cannot be written
    ],
)
def test_permission_error_is_not_damage(tmp_path: Path, case: str) -> None:
    root = tmp_path / "store"
    _store_with_data(root)
    ctx_dir = root / "contexts" / "c"
    index = ctx_dir / "c.sqlite"
    if case == "index-unreadable":
        index.chmod(0)
    elif case == "index-wal-unreadable":
        wal = Path(f"{index}-wal")
        wal.write_bytes(b"")
        wal.chmod(0)
    elif case == "context-folder-readonly":
        ctx_dir.chmod(stat.S_IRUSR | stat.S_IXUSR)
    elif case == "tracker-unreadable":
        (root / "workflows" / "tracker.sqlite").chmod(0)
    else:
        (root / "workflows").chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.geteuid() == 0 and not _can_drop_bypass():
        pytest.skip("root without CAP_SETPCAP: file permissions cannot be made to apply")
    what = "index" if case.startswith(("index", "context")) else "tracker"
    try:
        out = _run(PERMISSION_CHILD, str(root), what, unprivileged=True)
    finally:  # let pytest clean up
        for p in [root, *root.rglob("*")]:
            p.chmod(0o700 if p.is_dir() else 0o600)
    failed = [r for r in out.values() if r != "ok"]
    assert failed, f"{case}: nothing failed, the permission change had no effect: {out}"
    for result in failed:
        kind, err, text = result
        assert kind == "StorageError", f"{case}: {result}"
        assert err is not None and "damaged" not in text, f"{case}: {result}"


def test_real_corruption_is_still_damage(tmp_path: Path) -> None:
    """The other side of the line: a file that is not a database is IntegrityError."""
    root = tmp_path / "store"
    with app.open_store(root) as s:
        s.context("c").append("items", [{"id": "a"}])
        s.workflows.metrics()
    (root / "workflows" / "tracker.sqlite").write_bytes(b"not a database at all" * 500)
    index = root / "contexts" / "c" / "c.sqlite"
    index.write_bytes(b"garbage!" * 4096)
    with app.open_store(root) as s:
        with pytest.raises(app.IntegrityError, match=r"c\.sqlite"):
            s.context("c").count("items")
        with pytest.raises(app.IntegrityError, match="tracker"):
            s.workflows.metrics()
        report = s.verify()
        assert not report.ok
        assert any("tracker" in p for p in report.problems), report.problems


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs the right to mount: root in most containers)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()[:200]}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _fill(folder: Path, leave: int) -> Path:
    """Fill the file system holding ``folder`` but ``leave`` bytes; returns the filler file
    (delete it to free the space)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("leave", [0, 4096, 8192, 16384, 32768, 65536])
def test_really_full_disk_on_first_use_then_freed(tiny_fs: Path, leave: int) -> None:
    """ENOSPC for real (a full tmpfs) on the first use of the index and of the tracker, in
    one Store object that keeps working once space is freed."""
    root = tiny_fs / "store"
    with app.open_store(root) as s:
        s.context("c")
    store = app.open_store(root)
    try:
        filler = _fill(tiny_fs, leave)
        ctx = store.context("c")
        failed = 0
        for attempt in (
            lambda: ctx.append("items", [{"id": "a"}], batch_id="b1"),
            lambda: store.workflows.submit(
                "append",
                context="c",
                items=[{"id": "w"}],
                params={"collection": "w"},
                workflow_id="w1",
            ),
        ):
            try:
                attempt()
            except app.StorageError as exc:
                assert not isinstance(exc, app.IntegrityError), exc
                assert exc.errno in (errno.ENOSPC, errno.EIO), exc
                failed += 1
        assert failed or leave, "nothing failed on a full file system"
        filler.unlink()  # space is back
        ctx.append("items", [{"id": "a"}], batch_id="b1")
        assert ctx.count("items") == 1
        if not any(w.workflow_id == "w1" for w in store.workflows.list()):
            store.workflows.submit(
                "append",
                context="c",
                items=[{"id": "w"}],
                params={"collection": "w"},
                workflow_id="w1",
            )
        assert store.workflows.get("w1").status == "pending"
        assert store.verify().ok
    finally:
        store.close()
