"""Reading and writing model weights: safetensors, or torch files loaded without pickle code."""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..utils import atomic_path


class WeightsError(ValueError):
    """A weights file is missing, unreadable, unsafe or does not fit the model."""


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside a checkpoint object and strip DataParallel prefixes."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "student", "net"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: no state dict of tensors found")
    out = {}
    for k, v in obj.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def safe_torch_load(path: Path, error: type[Exception] | None = None) -> object:
    """`torch.load(weights_only=True)`: tensors and plain containers only, pickle code refused."""
    error = error or WeightsError
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" (it references {found.group(1)})" if found else ""
        if "Weights only load failed" in text:
            raise error(f"{path}: refused: the file holds executable pickle content, "
                        f"not only tensors{what}; it was not loaded") from e
        raise error(f"{path}: not a readable torch file (corrupt pickle)") from e
    except Exception as e:  # torch raises many types for garbage input
        raise error(f"{path}: not a readable torch file ({type(e).__name__})") from e


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from `.safetensors`, or from a torch file with `weights_only=True`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            return _unwrap(load_file(str(path)), path)
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"{path}: not a valid safetensors file ({e})") from e
    obj = safe_torch_load(path, WeightsError)
    return _unwrap(obj, path)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights strictly into `model`; a key or shape mismatch raises WeightsError."""
    sd = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise WeightsError(f"{path}: does not fit {type(model).__name__}: keys "
                           + ", ".join(parts))
    for k, v in own.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise WeightsError(f"{path}: does not fit {type(model).__name__}: {k} has shape "
                               f"{tuple(sd[k].shape)}, model expects {tuple(v.shape)}")
    model.load_state_dict(sd, strict=True)
    return model


def save_weights(model: nn.Module | Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write a model's state dict as safetensors (or a torch file for other suffixes)."""
    sd = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    sd = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            save_file(sd, str(tmp))
        else:
            torch.save({"state_dict": sd}, tmp)
