"""Pickle trust marks are signed with the trust key (kept outside the store): a file planted
in the store together with a forged mark never runs, v1's empty marks are refused until
``ctxstore models trust --existing`` re-signs them, and another user's key is another trust."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import pytest
import torch

import app
from app.core import trustkey
from app.formats.hashio import dump_checked

KEY_A = "key-of-user-a-" + "a1" * 16
KEY_B = "key-of-user-b-" + "b2" * 16


class Payload:
    """Unpickling this creates the sentinel file: a real code-execution payload."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.sentinel,))


def model_dir(ctx: app.Context, name: str) -> Path:
    return Path(ctx.path) / "models" / name


def mark_of(store: app.Store, sha256: str) -> Path:
    return Path(store.root) / "trust" / sha256


def plant(ctx: app.Context, name: str, sentinel: Path, tmp_path: Path) -> str:
    """Replace version 1's file by a hostile pickle and make its record agree (checksum,
    size), as a store writer without the key can; returns the planted file's digest."""
    hostile = tmp_path / f"hostile-{name}.joblib"
    joblib.dump({"model": Payload(sentinel)}, hostile)
    payload = hostile.read_bytes()
    mdir = model_dir(ctx, name)
    (mdir / "v0001.joblib").write_bytes(payload)
    record = mdir / "v0001.json"
    doc = json.loads(record.read_text())
    doc["sha256"] = hashlib.sha256(payload).hexdigest()
    doc["size_bytes"] = len(payload)
    record.write_bytes(dump_checked(doc))
    return str(doc["sha256"])


def forged_marks(sha256: str) -> dict[str, bytes]:
    """Marks a store writer without this user's key can write."""
    return {
        "empty (v1)": b"",
        "garbage": b"trusted",
        "plain sha256": hashlib.sha256(sha256.encode()).hexdigest().encode(),
        "other key": trustkey.sign("model-trust", sha256.encode(), key=KEY_B.encode()).encode(),
        "other purpose": trustkey.sign("token", sha256.encode()).encode(),
        "signed plus junk": trustkey.sign("model-trust", sha256.encode()).encode() + b"\n",
    }


ENV = {k: v for k, v in os.environ.items() if k != "CTXSTORE_ROOT"}


def cli(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctxstore", "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV if env is None else env,
        check=False,
    )


# ------------------------------------------------------------------ forged marks ----


def test_planted_pickle_with_forged_mark_never_runs(store: app.Store, tmp_path: Path) -> None:
    ctx = store.context("c")
    ctx.models.save("m", {"honest": 1})
    sentinel = tmp_path / "pwned"
    digest = plant(ctx, "m", sentinel, tmp_path)
    assert ctx.verify().ok  # checksums agree: only the trust mark stands in the way
    for label, content in forged_marks(digest).items():
        mark_of(store, digest).write_bytes(content)
        with pytest.raises(app.UntrustedArtifactError):
            ctx.models.load("m")
        assert not ctx.models.is_trusted(digest), label
        with pytest.raises(app.UntrustedArtifactError):
            store.load_context("c")  # loads every model: the same check
        assert not sentinel.exists(), label
    # a link to a validly signed mark of other bytes is not a mark either
    good = ctx.models.save("g", {"good": 1})
    mark_of(store, digest).unlink()
    mark_of(store, digest).symlink_to(mark_of(store, good.sha256))
    with pytest.raises(app.UntrustedArtifactError):
        ctx.models.load("m")
    assert not sentinel.exists()
    # the payload is real: an explicit trusted=True runs it
    ctx.models.load("m", trusted=True)
    assert sentinel.exists()


def test_planted_pickle_after_import_with_forged_mark(store: app.Store, tmp_path: Path) -> None:
    src = store.context("src")
    src.models.save("m", {"honest": 1})
    sentinel = tmp_path / "pwned"
    digest = plant(src, "m", sentinel, tmp_path)
    archive = tmp_path / "a.tar.gz"
    store.export_context("src", archive)
    with app.open_store(tmp_path / "other") as other:
        other.import_context(archive)
        imported = other.context("src")
        assert imported.models.info("m").sha256 == digest
        for label, content in forged_marks(digest).items():
            mark_of(other, digest).parent.mkdir(exist_ok=True)
            mark_of(other, digest).write_bytes(content)
            with pytest.raises(app.UntrustedArtifactError):
                imported.models.load("m")
            with pytest.raises(app.UntrustedArtifactError):
                other.load_context("src")
            assert not sentinel.exists(), label


def test_signed_mark_of_own_save_loads(store: app.Store) -> None:
    ctx = store.context("c")
    info = ctx.models.save("m", {"w": [1, 2]})
    assert info.format == "joblib"
    assert mark_of(store, info.sha256).read_text() == trustkey.sign(
        "model-trust", info.sha256.encode()
    )
    assert ctx.models.is_trusted(info.sha256)
    assert ctx.models.load("m") == {"w": [1, 2]}
    assert store.load_context("c").models == {"m": {"w": [1, 2]}}


# ------------------------------------------------------------------- the key ----


def test_key_from_a_private_file_when_no_env(
    store: app.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    monkeypatch.delenv(trustkey.ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    ctx = store.context("c")
    info = ctx.models.save("m", {"w": 1})
    key_file = config / "ctxstore" / "trust.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_bytes().strip()
    assert len(key) >= trustkey.MIN_KEY_CHARS
    expected = trustkey.sign("model-trust", info.sha256.encode(), key=key)
    assert mark_of(store, info.sha256).read_text() == expected
    assert ctx.models.load("m") == {"w": 1}
    # the env key, when set, wins: the file key's mark is another key's mark
    monkeypatch.setenv(trustkey.ENV, KEY_A)
    with pytest.raises(app.UntrustedArtifactError, match="another key"):
        ctx.models.load("m")
    monkeypatch.delenv(trustkey.ENV)
    assert ctx.models.load("m") == {"w": 1}


def test_group_readable_key_file_is_refused(
    store: app.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    monkeypatch.delenv(trustkey.ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    ctx = store.context("c")
    ctx.models.save("m", {"w": 1})
    key_file = config / "ctxstore" / "trust.key"
    key_file.chmod(0o640)
    with pytest.raises(app.StorageError, match="chmod 600"):
        ctx.models.load("m")
    # a save of a pickle fails before it writes anything
    with pytest.raises(app.StorageError, match="chmod 600"):
        ctx.models.save("n", {"w": 2})
    assert "n" not in ctx.models.names()
    assert not model_dir(ctx, "n").exists()
    # weights need no key
    assert ctx.models.save("t", {"w": torch.ones(2)}, format="safetensors").format == "safetensors"


def test_another_users_key_means_trusting_again(
    store: app.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(trustkey.ENV, KEY_A)
    ctx = store.context("c")
    info = ctx.models.save("m", {"w": 1})
    assert ctx.models.load("m") == {"w": 1}
    monkeypatch.setenv(trustkey.ENV, KEY_B)  # the store moved to another user
    with pytest.raises(app.UntrustedArtifactError, match="models trust CTX NAME"):
        ctx.models.load("m")
    assert not ctx.models.is_trusted(info.sha256)
    assert ctx.models.trust("m") == info
    assert ctx.models.load("m") == {"w": 1}
    monkeypatch.setenv(trustkey.ENV, KEY_A)  # and user A's mark is gone: re-signed by B
    with pytest.raises(app.UntrustedArtifactError):
        ctx.models.load("m")


# -------------------------------------------------------------- trusting explicitly ----


def test_trust_rechecks_the_file_then_signs(store: app.Store, tmp_path: Path) -> None:
    ctx = store.context("c")
    first = ctx.models.save("m", {"v": 1})
    second = ctx.models.save("m", {"v": 2})
    for info in (first, second):
        mark_of(store, info.sha256).unlink()
    # a file that no longer matches its record is never signed
    path = model_dir(ctx, "m") / "v0001.joblib"
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(app.IntegrityError, match="not trusted"):
        ctx.models.trust("m", version=1)
    assert not mark_of(store, first.sha256).exists()
    path.write_bytes(original)
    assert ctx.models.trust("m", version=1) == first
    assert ctx.models.load("m", version=1) == {"v": 1}
    with pytest.raises(app.UntrustedArtifactError):
        ctx.models.load("m")  # version 2 is still untrusted
    assert ctx.models.trust("m") == second  # default: the latest
    assert ctx.models.load("m") == {"v": 2}
    with pytest.raises(app.NotFoundError):
        ctx.models.trust("m", version=3)
    with pytest.raises(app.NotFoundError):
        ctx.models.trust("nope")
    with pytest.raises(app.InvalidInput) as caught:
        ctx.models.trust("m", version=0)
    assert caught.value.argument == "version"
    # a format that runs no code needs no mark: nothing is written
    weights = ctx.models.save("w", {"w": torch.ones(2)}, format="safetensors")
    assert ctx.models.trust("w") == weights
    assert not mark_of(store, weights.sha256).exists()


def test_trust_makes_an_imported_pickle_load(store: app.Store, tmp_path: Path) -> None:
    store.context("src").models.save("m", {"v": 1})
    archive = tmp_path / "a.tar.gz"
    store.export_context("src", archive)
    with app.open_store(tmp_path / "other") as other:
        other.import_context(archive)
        ctx = other.context("src")
        with pytest.raises(app.UntrustedArtifactError):
            ctx.models.load("m")
        ctx.models.trust("m")
        assert ctx.models.load("m") == {"v": 1}


# ------------------------------------------------------------------- v1 marks ----


def test_v1_empty_mark_is_refused_naming_the_command(store: app.Store) -> None:
    ctx = store.context("c")
    info = ctx.models.save("m", {"w": 1})
    mark_of(store, info.sha256).write_bytes(b"")  # what version 1 wrote
    with pytest.raises(app.UntrustedArtifactError, match="ctxstore models trust --existing"):
        ctx.models.load("m")
    assert not ctx.models.is_trusted(info.sha256)


def test_trust_existing_resigns_v1_marks_and_lists_them(store: app.Store, tmp_path: Path) -> None:
    a, b = store.context("a"), store.context("b")
    m1 = a.models.save("m", {"v": 1})
    m2 = a.models.save("m", {"v": 2})
    n1 = b.models.save("n", {"v": 3})
    same = b.models.save("same", {"v": 1})  # the same bytes as a/m v1: one mark
    assert same.sha256 == m1.sha256
    weights = b.models.save("w", {"w": torch.ones(2)}, format="safetensors")
    forged = b.models.save("f", {"v": 4})
    for info in (m1, m2, n1):
        mark_of(store, info.sha256).write_bytes(b"")
    mark_of(store, forged.sha256).write_bytes(b"not a signature")
    root = Path(store.root)

    dry = cli(root, "models", "trust", "--existing", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    expected = [
        f"a/m/v1 {m1.sha256}",
        f"a/m/v2 {m2.sha256}",
        f"b/n/v1 {n1.sha256}",
        f"b/same/v1 {same.sha256}",
    ]
    assert dry.stdout.splitlines() == [f"would sign {line}" for line in expected]
    assert "4 trust marks to sign (dry run: nothing written)" in dry.stderr
    assert all(mark_of(store, i.sha256).read_bytes() == b"" for i in (m1, m2, n1))

    done = cli(root, "models", "trust", "--existing")
    assert done.returncode == 0, done.stderr
    # a/m v1 and b/same share a digest (one mark): listed under both, as in the dry run
    assert done.stdout.splitlines() == [f"signed {line}" for line in expected]
    assert "4 trust marks signed" in done.stderr
    for ctx, name, value in ((a, "m", {"v": 2}), (b, "n", {"v": 3}), (b, "same", {"v": 1})):
        assert ctx.models.load(name) == value
    assert a.models.load("m", version=1) == {"v": 1}
    assert not mark_of(store, weights.sha256).exists()
    # a mark with other content is never re-signed by --existing
    with pytest.raises(app.UntrustedArtifactError, match="not valid under this user's"):
        b.models.load("f")
    again = cli(root, "models", "trust", "--existing")
    assert (again.returncode, again.stdout) == (0, "")
    assert "0 trust marks signed" in again.stderr


def test_trust_existing_python_api(store: app.Store) -> None:
    ctx = store.context("c")
    info = ctx.models.save("m", {"v": 1})
    mark_of(store, info.sha256).write_bytes(b"")
    assert ctx.models.trust_existing(dry_run=True) == [info]
    assert not ctx.models.is_trusted(info.sha256)
    assert ctx.models.trust_existing() == [info]
    assert ctx.models.is_trusted(info.sha256)
    assert ctx.models.trust_existing() == []
    with pytest.raises(app.InvalidInput) as caught:
        ctx.models.trust_existing(dry_run="yes")  # type: ignore[arg-type]
    assert caught.value.argument == "dry_run"


# ------------------------------------------------------------------------ CLI ----


def test_cli_trust_one_version(store: app.Store, tmp_path: Path) -> None:
    ctx = store.context("c")
    first = ctx.models.save("m", {"v": 1})
    ctx.models.save("m", {"v": 2})
    mark_of(store, first.sha256).write_bytes(b"forged")
    sentinel = tmp_path / "pwned"
    root = Path(store.root)

    done = cli(root, "models", "trust", "c", "m", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"trusted c/m/v1 {first.sha256}\n"
    assert ctx.models.load("m", version=1) == {"v": 1}

    # a planted file whose record agrees: the CLI signs only what the user names, and a
    # file that does not match its record is refused (exit 1, one line, nothing signed)
    digest = plant(ctx, "m", sentinel, tmp_path)
    (model_dir(ctx, "m") / "v0001.joblib").write_bytes(b"swapped after the record")
    bad = cli(root, "models", "trust", "c", "m", "1")
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
    assert "not trusted" in bad.stderr
    assert not mark_of(store, digest).exists()
    with pytest.raises(app.IntegrityError):
        ctx.models.load("m", version=1)
    assert not sentinel.exists()

    for args in (
        ("models", "trust"),
        ("models", "trust", "c"),
        ("models", "trust", "c", "m", "--existing"),
        ("models", "trust", "c", "m", "--dry-run"),
        ("models", "trust", "c", "m", "one"),
    ):
        usage = cli(root, *args)
        assert usage.returncode == 2, (args, usage.stderr)
        assert usage.stderr.startswith("error: "), usage.stderr
    missing = cli(root, "models", "trust", "c", "nope")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_cli_uses_the_key_of_its_user(store: app.Store, tmp_path: Path) -> None:
    """A CLI process with another key signs with that key: the test process's key (user A)
    does not accept it, so trusting is always per key."""
    ctx = store.context("c")
    info = ctx.models.save("m", {"v": 1})
    env = {**ENV, trustkey.ENV: KEY_B}
    done = cli(Path(store.root), "models", "trust", "c", "m", env=env)
    assert done.returncode == 0, done.stderr
    assert mark_of(store, info.sha256).read_text() == trustkey.sign(
        "model-trust", info.sha256.encode(), key=KEY_B.encode()
    )
    with pytest.raises(app.UntrustedArtifactError, match="another key"):
        ctx.models.load("m")


def test_cli_trust_existing_goes_on_past_a_damaged_context(store: app.Store) -> None:
    good, bad = store.context("good"), store.context("bad")
    info = good.models.save("m", {"v": 1})
    bad.models.save("m", {"v": 2})
    mark_of(store, info.sha256).write_bytes(b"")
    models = Path(bad.path) / "models"
    models.rename(Path(bad.path) / "elsewhere")
    models.symlink_to(Path(bad.path) / "elsewhere")  # a link where the folder belongs
    done = cli(Path(store.root), "models", "trust", "--existing")
    assert done.returncode == 1
    assert done.stdout == f"signed good/m/v1 {info.sha256}\n"
    assert "error: context bad:" in done.stderr
    assert good.models.load("m") == {"v": 1}
