"""torch helpers shared by the tensor codecs (``pth``, ``safetensors``). torch is imported
lazily: ``import app`` never imports it, a model can only be a torch object if the caller
already imported torch, and reading a tensor file imports it on demand."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from app.core.errors import InvalidInput, StorageError


def loaded_torch() -> ModuleType | None:
    """torch if this process already imported it, else None (then no object is a tensor)."""
    return sys.modules.get("torch")


def import_torch(suffix: str) -> ModuleType:
    """torch, or a clear ``StorageError`` (naming the ``.suffix`` to read) without it."""
    try:
        import torch
    except ImportError:
        raise StorageError(
            f"reading a .{suffix} model needs PyTorch: pip install 'ctxstore[torch]'"
        ) from None
    return torch


def is_tensor_mapping(torch: ModuleType, model: object) -> bool:
    """A non-empty mapping ``str -> Tensor``."""
    return (
        isinstance(model, Mapping)
        and len(model) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items())
    )


def holds_tensors(model: object) -> bool:
    """A ``torch.nn.Module`` or a non-empty mapping ``str -> Tensor``."""
    torch = loaded_torch()
    return torch is not None and (
        isinstance(model, torch.nn.Module) or is_tensor_mapping(torch, model)
    )


def state_of(torch: ModuleType, model: Any) -> tuple[dict[str, Any], int]:
    """``(state dict, parameter count)`` of a module or a mapping of tensors."""
    if isinstance(model, torch.nn.Module):
        return model.state_dict(), sum(int(p.numel()) for p in model.parameters())
    state = model if isinstance(model, dict) else dict(model)
    return state, sum(int(t.numel()) for t in state.values())


def fill(into: Any, state: Any) -> Any:
    """``state`` when ``into`` is None, else ``into`` with ``state`` loaded into it."""
    if into is None:
        return state
    try:
        into.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(
            f"into: weights do not fit ({str(exc)[:200]})", argument="into"
        ) from None
    return into
