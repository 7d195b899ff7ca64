"""The ``safetensors`` model format (SPEC 17): tensors only, never pickle, loaded
memory-mapped. Files are checked byte for byte against the published format (8-byte
little-endian header length, JSON header with dtype/shape/data_offsets and an optional
``__metadata__``, space padding to 8 bytes, then the raw little-endian tensor bytes), and
hand-built files following those rules load back."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

import app
from app.formats import modelcodecs
from app.formats.hashio import dump_checked

ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I8": 1, "U8": 1}
ITEMSIZE["BOOL"] = 1
CODE = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 5)
        self.fc2 = torch.nn.Linear(5, 2).to(torch.float16)
        self.register_buffer("steps", torch.tensor(7, dtype=torch.int64))


def tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(3, 4, generator=gen),
        "f16": torch.randn(5, generator=gen).to(torch.float16),
        "bf16": torch.randn(2, 3, generator=gen).to(torch.bfloat16),
        "i64": torch.arange(-3, 4, dtype=torch.int64).reshape(7, 1),
        "flags": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "bytes": torch.arange(5, dtype=torch.uint8),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "transposed": torch.arange(6, dtype=torch.int32).reshape(2, 3).t(),  # not contiguous
    }


def model_path(ctx: app.Context, name: str, version: int = 1) -> Path:
    return Path(ctx.path) / "models" / name / f"v{version:04d}.safetensors"


def raw_bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous().reshape(-1)
    return bytes(t.view(torch.uint8).numpy()) if t.numel() else b""


def split(data: bytes) -> tuple[dict[str, Any], bytes, int]:
    """(header, data section, header length) read by the published rules."""
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :], length


def plant(ctx: app.Context, name: str, payload: bytes) -> Path:
    """Replace version 1's file by ``payload`` with a record that agrees (as a crafted
    archive would)."""
    path = model_path(ctx, name)
    path.write_bytes(payload)
    record = path.with_name("v0001.json")
    doc = json.loads(record.read_text())
    doc["sha256"] = hashlib.sha256(payload).hexdigest()
    doc["size_bytes"] = len(payload)
    doc.pop("chunk_sha256", None)  # the whole file's SHA-256 alone then checks it
    doc.pop("chunk_bytes", None)
    record.write_bytes(dump_checked(doc))
    return path


def build(specs: dict[str, Any], data: bytes, *, pad: bool = True) -> bytes:
    return build_text(json.dumps(specs), data, pad=pad)


def build_text(header: str, data: bytes, *, pad: bool = True) -> bytes:
    raw = header.encode()
    if pad:
        raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


# ---------------------------------------------------------------------- the format ----


def test_file_follows_the_published_format(ctx: app.Context) -> None:
    state = tensors()
    info = ctx.models.save("m", state, format="safetensors", metadata={"k": "v"})
    assert (info.format, info.file) == ("safetensors", "v0001.safetensors")
    data = model_path(ctx, "m").read_bytes()
    assert info.size_bytes == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    header, body, length = split(data)
    assert (8 + length) % 8 == 0  # the data starts 8-byte aligned
    raw = data[8 : 8 + length]
    assert raw.startswith(b"{") and raw.rstrip(b" ") == raw.rstrip()  # padded with spaces
    assert header.pop("__metadata__") == {"format": "pt"}
    assert list(header) == list(state)  # the state's order
    spans = []
    for name, t in state.items():
        spec = header[name]
        assert set(spec) == {"dtype", "shape", "data_offsets"}
        assert spec["dtype"] == CODE[t.dtype] and spec["shape"] == list(t.shape)
        begin, end = spec["data_offsets"]
        assert end - begin == math.prod(t.shape) * ITEMSIZE[spec["dtype"]]
        assert body[begin:end] == raw_bytes(t)  # row-major, little-endian
        if end > begin:
            assert (8 + length + begin) % t.element_size() == 0  # aligned
        spans.append((begin, end))
    covered = 0
    for begin, end in sorted(spans):  # back to back, no gap, no overlap, nothing after
        assert begin == covered
        covered = end
    assert covered == len(body)


def test_round_trip_of_every_dtype_is_exact_and_ordered(ctx: app.Context) -> None:
    state = tensors()
    ctx.models.save("m", state, format="safetensors")
    back = ctx.models.load("m")
    assert list(back) == list(state)
    for name, t in state.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape, name
        assert torch.equal(back[name], t), name
    assert back["empty"].shape == (0, 3) and back["scalar"].dim() == 0
    assert ctx.verify().ok


def test_loads_memory_mapped_copy_on_write(ctx: app.Context) -> None:
    ctx.models.save("m", {"w": torch.arange(4096, dtype=torch.float32)}, format="safetensors")
    path = model_path(ctx, "m")
    pristine = path.read_bytes()
    w = ctx.models.load("m")["w"]
    address = w.untyped_storage().data_ptr()
    mapped = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path):
            low, high = (int(x, 16) for x in fields[0].split("-"))
            mapped.append(low <= address < high)
    assert any(mapped), "the tensor's memory is not a mapping of the file"
    w[0] = -1.0  # a loaded tensor can be changed; the file never is
    assert path.read_bytes() == pristine
    assert ctx.models.load("m")["w"][0] == 0.0


def test_module_saves_its_state_dict_and_loads_into(ctx: app.Context) -> None:
    torch.manual_seed(0)
    net = Net()
    info = ctx.models.save("net", net, format="safetensors")
    assert info.parameter_count == sum(p.numel() for p in net.parameters())
    assert info.class_path.endswith("test_safetensors.Net")
    assert info.library_versions["torch"] == torch.__version__
    fresh = Net()
    assert ctx.models.load("net", into=fresh) is fresh
    for key, value in net.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    with pytest.raises(app.InvalidInput, match="into"):
        ctx.models.load("net", into=torch.nn.Linear(2, 2))


def test_format_none_never_picks_safetensors(ctx: app.Context) -> None:
    assert ctx.models.save("m", {"w": torch.ones(2)}).format == "pth"
    assert ctx.models.save("m", {"w": torch.ones(2)}, format="safetensors").format == (
        "safetensors"
    )
    assert [i.format for i in ctx.models.versions("m")] == ["pth", "safetensors"]
    assert torch.equal(ctx.models.load("m", version=1)["w"], ctx.models.load("m")["w"])


def test_hand_built_file_loads(ctx: app.Context) -> None:
    """A file built here from the rules alone (unpadded header, tensors listed out of data
    order, an unaligned tensor) reads back."""
    ctx.models.save("m", {"w": torch.ones(1)}, format="safetensors")
    a = np.array([1.5, -2.0], dtype="<f4").tobytes()
    b = np.array([3], dtype="<i2").tobytes()
    c = np.array([[7, 8, 9]], dtype="<i8").tobytes()
    specs = {
        "c": {"dtype": "I64", "shape": [1, 3], "data_offsets": [len(b), len(b) + len(c)]},
        "b": {"dtype": "I16", "shape": [1], "data_offsets": [0, len(b)]},
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [len(b + c), len(b + c + a)]},
        "__metadata__": {"source": "by hand"},
    }
    plant(ctx, "m", build(specs, b + c + a, pad=False))
    back = ctx.models.load("m")
    assert list(back) == ["c", "b", "a"]
    assert torch.equal(back["a"], torch.tensor([1.5, -2.0]))
    assert torch.equal(back["b"], torch.tensor([3], dtype=torch.int16))
    assert torch.equal(back["c"], torch.tensor([[7, 8, 9]]))


# ---------------------------------------------------------------------- integrity ----


def test_damaged_file_raises_integrity_error(ctx: app.Context) -> None:
    ctx.models.save("m", {"w": torch.randn(32, 32)}, format="safetensors")
    path = model_path(ctx, "m")
    pristine = path.read_bytes()
    rng = np.random.default_rng(5)
    for position in [0, 5, 9, *rng.choice(len(pristine), size=8, replace=False)]:
        data = bytearray(pristine)
        data[int(position)] ^= 0x10
        path.write_bytes(bytes(data))
        with pytest.raises(app.IntegrityError, match=path.name):
            ctx.models.load("m")
        assert any(path.name in p for p in ctx.verify().problems)
    path.write_bytes(pristine[:-4])
    with pytest.raises(app.IntegrityError, match="size"):
        ctx.models.load("m")
    path.unlink()
    with pytest.raises(app.IntegrityError, match="missing"):
        ctx.models.load("m")


def _f32(n: int) -> dict[str, Any]:
    return {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}


MALFORMED: dict[str, bytes] = {
    "short": b"\x02\x00\x00",
    "huge length": struct.pack("<Q", 1 << 40) + b"{}",
    "length past the end": struct.pack("<Q", 64) + b"{}      ",
    "zero length": struct.pack("<Q", 0) + b"{}",
    "not json": build({}, b"")[:8] + b"{not json}"[: len(build({}, b"")) - 8],
    "not an object": struct.pack("<Q", 8) + b"[1, 2]  ",
    "unknown dtype": build({"w": {**_f32(1), "dtype": "F128"}}, bytes(4)),
    "pickle dtype": build({"w": {**_f32(1), "dtype": "O"}}, bytes(4)),
    "shape mismatch": build({"w": {**_f32(1), "shape": [2]}}, bytes(4)),
    "negative offset": build({"w": {**_f32(1), "data_offsets": [-4, 0]}}, bytes(4)),
    "offsets past the end": build({"w": _f32(2)}, bytes(4)),
    "trailing bytes": build({"w": _f32(1)}, bytes(8)),
    "overlap": build({"a": _f32(2), "b": {**_f32(1), "data_offsets": [4, 8]}}, bytes(8)),
    "gap": build({"a": _f32(1), "b": {**_f32(1), "data_offsets": [8, 12]}}, bytes(12)),
    "duplicate name": build_text(
        "{" + f'"w":{json.dumps(_f32(1))}, "w":{json.dumps(_f32(1))}' + "}", bytes(4)
    ),
    "extra key": build({"w": {**_f32(1), "pickle": "x"}}, bytes(4)),
    "bad metadata": build({"__metadata__": {"k": 1}, "w": _f32(1)}, bytes(4)),
    "bool shape": build({"w": {**_f32(1), "shape": [True]}}, bytes(4)),
}


# what each case's refusal says: each case breaks the rule it is named for, not another
REASONS = {
    "short": "shorter than",
    "huge length": "header length",
    "length past the end": "header length",
    "zero length": "header length",
    "not json": "not JSON",
    "not an object": "not a JSON object",
    "unknown dtype": "unknown dtype",
    "pickle dtype": "unknown dtype",
    "shape mismatch": "do not match",
    "negative offset": "data_offsets must be",
    "offsets past the end": "cover 8 of 4",
    "trailing bytes": "cover 4 of 8",
    "overlap": "overlaps",
    "gap": "gap",
    "duplicate name": "twice",
    "extra key": "needs exactly",
    "bad metadata": "__metadata__",
    "bool shape": "shape must be",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_header_is_refused(ctx: app.Context, case: str) -> None:
    ctx.models.save("m", {"w": torch.ones(1)}, format="safetensors")
    path = plant(ctx, "m", MALFORMED[case])
    with pytest.raises(app.IntegrityError, match=path.name) as caught:
        ctx.models.load("m")
    assert REASONS[case] in str(caught.value)


def test_the_valid_cases_of_the_malformed_table_are_valid(ctx: app.Context) -> None:
    """The table's cases each break one rule: the same file with the rule kept loads."""
    ctx.models.save("m", {"w": torch.ones(1)}, format="safetensors")
    plant(ctx, "m", build({"a": _f32(2), "b": {**_f32(1), "data_offsets": [8, 12]}}, bytes(12)))
    assert list(ctx.models.load("m")) == ["a", "b"]


# ---------------------------------------------------------------- tensors only ----


def test_non_tensor_objects_are_refused_naming_format(ctx: app.Context) -> None:
    km = KMeans(n_clusters=2, n_init=1).fit(np.arange(8.0).reshape(4, 2))
    for obj in (
        km,
        {"a": 1},
        {"w": torch.ones(1), "step": 3},
        {},
        {"c": torch.ones(2, dtype=torch.complex64)},
        [torch.ones(1)],
    ):
        with pytest.raises(app.InvalidInput, match="format") as caught:
            ctx.models.save("x", obj, format="safetensors")
        assert caught.value.argument == "format"
    assert not (Path(ctx.path) / "models" / "x").exists()


def test_never_unpickles(ctx: app.Context, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    info = ctx.models.save("m", tensors(), format="safetensors")
    assert not modelcodecs.runs_code("safetensors") and not ctx.models.runs_code("safetensors")
    trust = Path(ctx.path).parent.parent / "trust"
    assert not (trust / info.sha256).exists()  # no trust is needed, none is marked

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("a pickle loader ran")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert torch.equal(ctx.models.load("m")["f32"], tensors()["f32"])
    monkeypatch.undo()
    # a pickle dressed as a .safetensors file is refused without being unpickled
    sentinel = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (sentinel,))

    plant(ctx, "m", pickle.dumps({"w": Payload()}))
    for trusted in (False, True):
        with pytest.raises(app.IntegrityError):
            ctx.models.load("m", trusted=trusted)
    assert not sentinel.exists()


def test_import_keeps_safetensors_loadable(tmp_path: Path) -> None:
    with app.open_store(tmp_path / "a") as a:
        a.context("c").models.save("m", tensors(), format="safetensors")
        a.export_context("c", tmp_path / "c.tar.gz")
    with app.open_store(tmp_path / "b") as b:
        b.import_context(tmp_path / "c.tar.gz")
        back = b.context("c").models.load("m")  # no trust needed: nothing is unpickled
        assert torch.equal(back["bf16"], tensors()["bf16"])


def test_merge_import_keeps_the_format_of_every_version(tmp_path: Path) -> None:
    with app.open_store(tmp_path / "a") as a:
        models = a.context("c").models
        models.save("m", tensors(), format="safetensors")
        models.save("m", tensors())  # pth
        a.export_context("c", tmp_path / "c.tar.gz")
    with app.open_store(tmp_path / "b") as b:
        b.context("c").models.save("m", {"w": torch.zeros(2)})
        b.import_context(tmp_path / "c.tar.gz", on_conflict="merge")
        versions = b.context("c").models.versions("m")
        assert [v.format for v in versions] == ["pth", "safetensors", "pth"]
        back = b.context("c").models.load("m", version=2)  # no trust: nothing is unpickled
        assert torch.equal(back["bf16"], tensors()["bf16"])
