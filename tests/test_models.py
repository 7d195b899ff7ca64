"""SPEC section 6 (models), sentence by sentence, plus the trust policy and integrity checks of
issue 3. File internals used: SPEC's layout ``models/<name>/v0001.pth | v0001.joblib +
metadata`` (to flip real bytes and to plant hostile pickles)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression

import app
from app.core import trustkey
from app.core.artifacts import ModelInfo
from app.formats.hashio import dump_checked
from app.protocols import ModelStoreProtocol


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 5)
        self.fc2 = torch.nn.Linear(5, 2)
        self.register_buffer("scale", torch.arange(3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def model_dir(ctx: app.Context, name: str) -> Path:
    return Path(ctx.path) / "models" / name


def flip(path: Path, position: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 1 << bit
    path.write_bytes(bytes(data))


def states_equal(a: Any, b: Any) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def fitted_kmeans() -> KMeans:
    x = np.random.default_rng(0).standard_normal((60, 3))
    return KMeans(n_clusters=3, n_init=2, random_state=0).fit(x)


# ----------------------------------------------------------------------- what goes where ----


@pytest.mark.embedded_only("hashes and torch.loads the .pth file in the context folder")
def test_torch_module_saved_as_state_dict_pth(ctx: app.Context) -> None:
    torch.manual_seed(0)
    net = Net()
    info = ctx.models.save("net", net, metadata={"task": "ltn"})
    assert isinstance(info, ModelInfo)
    assert (info.name, info.version, info.format) == ("net", 1, "pth")
    path = model_dir(ctx, "net") / "v0001.pth"
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.size_bytes == path.stat().st_size
    assert info.metadata == {"task": "ltn"}
    assert info.class_path.endswith("test_models.Net")
    assert info.parameter_count == sum(p.numel() for p in net.parameters())
    assert info.library_versions["torch"] == torch.__version__
    created = dt.datetime.fromisoformat(info.created_at)
    assert abs(created - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    # the file is a plain state_dict that torch itself loads with weights_only=True
    assert states_equal(torch.load(path, weights_only=True), net.state_dict())
    assert states_equal(ctx.models.load("net"), net.state_dict())


def test_load_into_module_returns_that_module(ctx: app.Context) -> None:
    torch.manual_seed(1)
    net = Net()
    ctx.models.save("net", net)
    fresh = Net()
    assert not torch.equal(fresh.fc1.weight, net.fc1.weight)
    out = ctx.models.load("net", into=fresh)
    assert out is fresh
    assert states_equal(fresh.state_dict(), net.state_dict())
    x = torch.randn(4, 6)
    assert torch.equal(fresh(x), net(x))


def test_mapping_of_tensors_saved_as_pth(ctx: app.Context) -> None:
    weights = {"w": torch.randn(3, 4), "b": torch.zeros(4, dtype=torch.float64)}
    info = ctx.models.save("weights", weights)
    assert info.format == "pth" and info.parameter_count == 16
    loaded = ctx.models.load("weights")
    assert states_equal(loaded, weights) and loaded["b"].dtype == torch.float64


def test_sklearn_estimator_saved_as_joblib(ctx: app.Context) -> None:
    km = fitted_kmeans()
    info = ctx.models.save("clusters", km, metadata={"k": 3})
    assert info.format == "joblib" and info.file == "v0001.joblib"
    assert info.library_versions["sklearn"]
    loaded = ctx.models.load("clusters")
    assert isinstance(loaded, KMeans)
    x = np.random.default_rng(1).standard_normal((10, 3))
    assert np.array_equal(loaded.predict(x), km.predict(x))


def test_other_picklables_go_to_joblib(ctx: app.Context) -> None:
    for name, obj in (("plain", {"a": [1, 2], "b": "x"}), ("empty", {})):
        info = ctx.models.save(name, obj)
        assert info.format == "joblib" and ctx.models.load(name) == obj


def test_loaded_weights_are_private_copies(ctx: app.Context) -> None:
    ctx.models.save("w", {"w": torch.ones(1000)})
    state = ctx.models.load("w")
    state["w"] += 1  # writing to a loaded tensor never touches the stored file
    assert torch.equal(ctx.models.load("w")["w"], torch.ones(1000))
    assert ctx.verify().ok


# -------------------------------------------------------------------------- versions ----


def test_versions_list_load_delete(ctx: app.Context) -> None:
    for i in range(3):
        info = ctx.models.save("m", {"w": torch.full((2,), float(i))}, metadata={"i": i})
        assert info.version == i + 1
    ctx.models.save("a", LogisticRegression())
    assert [v.version for v in ctx.models.versions("m")] == [1, 2, 3]
    assert [(i.name, i.version) for i in ctx.models.list()] == [("a", 1), ("m", 3)]
    assert torch.equal(ctx.models.load("m")["w"], torch.full((2,), 2.0))
    assert torch.equal(ctx.models.load("m", version=1)["w"], torch.zeros(2))
    ctx.models.delete("m", version=2)
    assert [v.version for v in ctx.models.versions("m")] == [1, 3]
    assert not (model_dir(ctx, "m") / "v0002.pth").exists()
    with pytest.raises(app.NotFoundError):
        ctx.models.load("m", version=2)
    with pytest.raises(app.NotFoundError):
        ctx.models.delete("m", version=2)
    assert ctx.models.save("m", {"w": torch.ones(1)}).version == 4
    ctx.models.delete("m")
    assert ctx.models.versions("m") == []
    assert [i.name for i in ctx.models.list()] == ["a"]
    assert not model_dir(ctx, "m").exists()
    for call in (
        lambda: ctx.models.load("m"),
        lambda: ctx.models.delete("m"),
        lambda: ctx.models.load("never"),
    ):
        with pytest.raises(app.NotFoundError):
            call()


def test_protocol_and_persistence_across_reopen(store_root: Path) -> None:
    with app.open_store(store_root) as s:
        ctx = s.context("c")
        assert isinstance(ctx.models, ModelStoreProtocol)
        ctx.models.save("km", fitted_kmeans())
        ctx.models.save("w", {"w": torch.ones(3)})
    with app.open_store(store_root) as s:
        ctx = s.context("c")
        assert isinstance(ctx.models.load("km"), KMeans)  # still trusted: same store
        assert torch.equal(ctx.models.load("w")["w"], torch.ones(3))


# ------------------------------------------------------------------------ bad inputs ----


@pytest.mark.embedded_only("lists the model's folder in the context folder")
def test_bad_inputs_raise_invalid_input_and_write_nothing(ctx: app.Context) -> None:
    ctx.models.save("m", {"w": torch.ones(2)})
    before = sorted(p.name for p in model_dir(ctx, "m").iterdir())
    cases: list[tuple[Any, str]] = [
        (lambda: ctx.models.save("../x", {"w": torch.ones(1)}), "name"),
        (lambda: ctx.models.save("", {}), "name"),
        (lambda: ctx.models.save("m", None), "model"),
        (lambda: ctx.models.save("m", lambda x: x), "model"),
        (lambda: ctx.models.save("m", {}, metadata={"x": float("inf")}), "metadata"),
        (lambda: ctx.models.save("m", {}, metadata="text"), "metadata"),
        (lambda: ctx.models.load("m", version=0), "version"),
        (lambda: ctx.models.load("m", version="1"), "version"),
        (lambda: ctx.models.load("m", trusted="yes"), "trusted"),
        (lambda: ctx.models.load("m", into=object()), "into"),
        (lambda: ctx.models.load("a/b"), "name"),
        (lambda: ctx.models.delete("m", version=-1), "version"),
        (lambda: ctx.models.versions(".."), "name"),
    ]
    for call, argument in cases:
        with pytest.raises(app.InvalidInput, match=argument):
            call()
    assert sorted(p.name for p in model_dir(ctx, "m").iterdir()) == before
    assert [v.version for v in ctx.models.versions("m")] == [1]
    assert not (Path(ctx.path) / "models" / "x").exists()


def test_into_mismatches_raise_invalid_input(ctx: app.Context) -> None:
    ctx.models.save("net", Net())
    ctx.models.save("km", fitted_kmeans())
    with pytest.raises(app.InvalidInput, match="into"):
        ctx.models.load("net", into=torch.nn.Linear(2, 2))
    with pytest.raises(app.InvalidInput, match="into"):
        ctx.models.load("km", into=Net())


# ------------------------------------------------------------------------- integrity ----


@pytest.mark.parametrize("kind", ["pth", "joblib"])
@pytest.mark.embedded_only("flips bits of the model file in the context folder")
def test_flipped_bit_in_model_file_raises_integrity_error(ctx: app.Context, kind: str) -> None:
    obj: Any = {"w": torch.randn(64, 64)} if kind == "pth" else fitted_kmeans()
    ctx.models.save("m", obj)
    path = model_dir(ctx, "m") / f"v0001.{kind}"
    pristine = path.read_bytes()
    rng = np.random.default_rng(3)
    for position in rng.choice(len(pristine), size=12, replace=False):
        flip(path, int(position), int(rng.integers(8)))
        with pytest.raises(app.IntegrityError, match=re.escape(path.name)):
            ctx.models.load("m")
        report = ctx.verify()
        assert not report.ok and any(path.name in p for p in report.problems)
        path.write_bytes(pristine)
    assert ctx.verify().ok


@pytest.mark.parametrize("kind", ["pth", "joblib"])
@pytest.mark.embedded_only("truncates and removes the model file in the context folder")
def test_truncated_or_missing_model_file_raises_integrity_error(
    ctx: app.Context, kind: str
) -> None:
    obj: Any = {"w": torch.randn(8)} if kind == "pth" else fitted_kmeans()
    ctx.models.save("m", obj)
    path = model_dir(ctx, "m") / f"v0001.{kind}"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(app.IntegrityError, match="size"):
        ctx.models.load("m")
    path.unlink()
    with pytest.raises(app.IntegrityError, match="missing"):
        ctx.models.load("m")
    assert any("missing" in p for p in ctx.verify().problems)


@pytest.mark.embedded_only("flips bits of the version record in the context folder")
def test_flipped_bit_in_version_record_detected(ctx: app.Context) -> None:
    ctx.models.save("m", {"w": torch.ones(2)}, metadata={"note": "hello"})
    record = model_dir(ctx, "m") / "v0001.json"
    pristine = record.read_bytes()
    for position in range(0, len(pristine), max(1, len(pristine) // 30)):
        flip(record, position, 2)
        with pytest.raises(app.IntegrityError, match=r"v0001\.json"):
            ctx.models.load("m")
        assert any("v0001.json" in p for p in ctx.verify().problems)
        record.write_bytes(pristine)
    assert ctx.verify().ok


@pytest.mark.embedded_only("rewrites the version record in the context folder")
def test_newer_record_format_raises_schema_version_error(ctx: app.Context) -> None:
    ctx.models.save("m", {"w": torch.ones(2)})
    record = model_dir(ctx, "m") / "v0001.json"
    doc = json.loads(record.read_text())
    doc["format_version"] = 7
    record.write_bytes(dump_checked(doc))
    with pytest.raises(app.SchemaVersionError):
        ctx.models.load("m")


# ------------------------------------------------------------- trust / hostile pickles ----


class Payload:
    """Unpickling this creates the sentinel file: a real code-execution payload."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.sentinel,))


def plant(ctx: app.Context, name: str, kind: str, payload: bytes) -> Path:
    """Replace version 1's file by ``payload`` and make its record agree (checksum, size), as
    an archive crafted by an attacker would."""
    mdir = model_dir(ctx, name)
    path = mdir / f"v0001.{kind}"
    path.write_bytes(payload)
    record = mdir / "v0001.json"
    doc = json.loads(record.read_text())
    doc["sha256"] = hashlib.sha256(payload).hexdigest()
    doc["size_bytes"] = len(payload)
    if doc.get("chunk_bytes"):  # .pth records also list the SHA-256 of each piece
        step = doc["chunk_bytes"]
        pieces = [payload[i : i + step] for i in range(0, len(payload), step)]
        doc["chunk_sha256"] = [hashlib.sha256(p).hexdigest() for p in pieces]
    record.write_bytes(dump_checked(doc))
    return path


@pytest.mark.embedded_only("plants a hostile file in the context folder")
def test_hostile_joblib_never_runs_by_default(ctx: app.Context, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned-joblib"
    ctx.models.save("m", fitted_kmeans())
    import joblib

    path = tmp_path / "hostile.joblib"
    joblib.dump({"model": Payload(sentinel)}, path)
    plant(ctx, "m", "joblib", path.read_bytes())
    assert ctx.verify().ok  # checksums agree: only the trust policy stands in the way
    with pytest.raises(app.UntrustedArtifactError):
        ctx.models.load("m")
    assert not sentinel.exists()
    # planting a trust marker inside the context directory does not help
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (Path(ctx.path) / "trust").mkdir()
    (Path(ctx.path) / "trust" / digest).touch()
    (model_dir(ctx, "m") / digest).touch()
    with pytest.raises(app.UntrustedArtifactError):
        ctx.models.load("m")
    assert not sentinel.exists()
    # the payload is real: an explicit trusted=True runs it
    ctx.models.load("m", trusted=True)
    assert sentinel.exists()


@pytest.mark.embedded_only("plants a hostile file in the context folder")
def test_hostile_pth_never_runs_even_when_trusted(ctx: app.Context, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned-pth"
    ctx.models.save("m", {"w": torch.ones(2)})
    path = tmp_path / "hostile.pth"
    torch.save({"w": torch.ones(2), "evil": Payload(sentinel)}, path)
    plant(ctx, "m", "pth", path.read_bytes())
    for trusted in (False, True):
        with pytest.raises(app.UntrustedArtifactError):
            ctx.models.load("m", trusted=trusted)
        with pytest.raises(app.UntrustedArtifactError):
            ctx.models.load("m", into=Net(), trusted=trusted)
    assert not sentinel.exists()
    # the payload is real: an unrestricted pickle load runs it
    torch.load(path, weights_only=False)
    assert sentinel.exists()


@pytest.mark.embedded_only("plants a hostile file in the context folder")
def test_hostile_raw_pickle_named_pth_never_runs(ctx: app.Context, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned-raw"
    ctx.models.save("m", {"w": torch.ones(2)})
    plant(ctx, "m", "pth", pickle.dumps(Payload(sentinel)))
    with pytest.raises((app.UntrustedArtifactError, app.IntegrityError)):
        ctx.models.load("m")
    assert not sentinel.exists()


def test_joblib_copied_from_another_store_is_untrusted(tmp_path: Path) -> None:
    with app.open_store(tmp_path / "a") as a:
        a.context("c").models.save("km", fitted_kmeans())
    with app.open_store(tmp_path / "b") as b:
        ctx = b.context("c")
        shutil.copytree(tmp_path / "a/contexts/c/models", Path(ctx.path) / "models")
        assert ctx.verify().ok
        with pytest.raises(app.UntrustedArtifactError, match="trusted=True"):
            ctx.models.load("km")
        assert isinstance(ctx.models.load("km", trusted=True), KMeans)
        # .pth weights need no trust
        ctx.models.save("w", {"w": torch.ones(1)})
        assert torch.equal(ctx.models.load("w")["w"], torch.ones(1))


@pytest.mark.embedded_only("reads the trust mark file and copies a models folder")
def test_trust_is_recorded_outside_contexts_by_digest(store: app.Store) -> None:
    info = store.context("c").models.save("km", fitted_kmeans())
    marker = Path(store.root) / "trust" / info.sha256
    # the mark holds the digest's HMAC under the trust key (kept outside the store)
    assert marker.read_text() == trustkey.sign("model-trust", info.sha256.encode())
    # the same bytes are trusted wherever they sit in this store
    other = store.context("d")
    shutil.copytree(Path(store.context("c").path) / "models", Path(other.path) / "models")
    assert isinstance(other.models.load("km"), KMeans)
    marker.unlink()
    with pytest.raises(app.UntrustedArtifactError):
        store.context("c").models.load("km")


@pytest.mark.embedded_only("copies the model file and removes the trust mark file")
def test_add_untrusted_version_checks_and_never_trusts(ctx: app.Context, tmp_path: Path) -> None:
    info = ctx.models.save("km", fitted_kmeans())
    source = ctx.models.path_of("km", 1)
    copy = tmp_path / "copy.joblib"
    shutil.copy(source, copy)
    (Path(ctx.path).parent.parent / "trust" / info.sha256).unlink()
    added = ctx.models.add_untrusted_version("km", copy, info)
    assert added.version == 2 and added.sha256 == info.sha256
    with pytest.raises(app.UntrustedArtifactError):
        ctx.models.load("km", version=2)
    flip(copy, 100)
    with pytest.raises(app.IntegrityError):
        ctx.models.add_untrusted_version("km", copy, info)
    assert [v.version for v in ctx.models.versions("km")] == [1, 2]


# -------------------------------------------------------------------- torch is optional ----


def test_import_app_and_joblib_models_never_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys, app\n"
        "assert 'torch' not in sys.modules, 'import app imported torch'\n"
        "with app.open_store(sys.argv[1]) as s:\n"
        "    ctx = s.context('c')\n"
        "    ctx.models.save('d', {'a': 1})\n"
        "    assert ctx.models.load('d') == {'a': 1}\n"
        "    assert ctx.verify().ok\n"
        "assert 'torch' not in sys.modules, 'models imported torch'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CTXSTORE_ROOT"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr


def test_version_numbers_are_never_given_out_twice(ctx: Any) -> None:
    """Deleting the latest version does not make its number free again: a later save of
    different content must not appear under a number that once named something else."""
    first = ctx.models.save("m", {"w": [1]})
    second = ctx.models.save("m", {"w": [2]})
    ctx.models.delete("m", version=second.version)
    third = ctx.models.save("m", {"w": [3]})
    assert (first.version, second.version, third.version) == (1, 2, 3)
    assert [i.version for i in ctx.models.versions("m")] == [1, 3]
    assert ctx.verify().ok
    ctx.models.delete("m")
    assert ctx.models.save("m", {"w": [4]}).version == 1  # a deleted model starts afresh


# ---------------------------------------------------------------- format= (SPEC 17) ----


def test_format_picks_the_codec_or_names_the_argument(ctx: app.Context) -> None:
    assert ctx.models.save("w", {"w": torch.ones(2)}, format=None).format == "pth"
    # a mapping of tensors may also be pickled when asked for, and then needs trust like any
    info = ctx.models.save("p", {"w": torch.ones(2)}, format="joblib")
    assert (info.format, info.file) == ("joblib", "v0001.joblib")
    assert ctx.models.is_trusted(info.sha256)
    assert torch.equal(ctx.models.load("p")["w"], torch.ones(2))
    for bad in ("onnx", "PTH", "json", 3):
        with pytest.raises(app.InvalidInput, match="format") as caught:
            ctx.models.save("x", {"w": torch.ones(1)}, format=bad)  # type: ignore[arg-type]
        assert caught.value.argument == "format"
    with pytest.raises(app.InvalidInput, match="format") as caught:
        ctx.models.save("x", fitted_kmeans(), format="pth")
    assert caught.value.argument == "format"
    assert not model_dir(ctx, "x").exists()


def test_runs_code_comes_from_the_codec(ctx: app.Context) -> None:
    from app.formats import modelcodecs

    assert ctx.models.runs_code("joblib") and modelcodecs.runs_code("joblib")
    assert not ctx.models.runs_code("pth") and not modelcodecs.runs_code("pth")
    with pytest.raises(app.InvalidInput, match="format"):
        ctx.models.runs_code("onnx")
