"""What ``ctxstore models load`` says about a loaded model: its Python type and, for torch
tensors (a state dict, a module), how many tensors and parameters it holds.

torch is never imported here: a loaded object holds tensors only when its loader imported
torch, so the module is looked up in ``sys.modules``. See docs/api.md, "Command line".
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any


def type_name(obj: object) -> str:
    """``module.QualName`` of the object's class (``dict`` for a builtin)."""
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _tensors(obj: object) -> list[Any] | None:
    """The tensors of a state dict (every value a tensor) or of a torch module, else None."""
    torch: Any = sys.modules.get("torch")
    if torch is None:
        return None
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping) and obj and all(torch.is_tensor(v) for v in obj.values()):
        return list(obj.values())
    return None


def describe(obj: object) -> dict[str, Any]:
    """``{"type": ...}``, plus ``tensors`` and ``parameters`` (elements of all tensors) when
    the object is a state dict or a torch module."""
    summary: dict[str, Any] = {"type": type_name(obj)}
    tensors = _tensors(obj)
    if tensors is not None:
        summary["tensors"] = len(tensors)
        summary["parameters"] = sum(int(t.numel()) for t in tensors)
    return summary


def summary_line(summary: Mapping[str, Any]) -> str:
    """``collections.OrderedDict, 4 tensors, 1,234 parameters`` (the type alone otherwise)."""
    text = str(summary["type"])
    if "tensors" in summary:
        text += f", {summary['tensors']:,} tensors, {summary['parameters']:,} parameters"
    return text


__all__ = ["describe", "summary_line", "type_name"]
