"""Typed experiment configuration: dataclass defaults <- YAML file <- command-line overrides.

The defaults are the embedded demo: the shipped Fashion-MNIST teacher distilled into a
small student on a CPU in a few minutes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value or file is invalid."""


def _opt(default: Any, help: str, *, lo: float | None = None, hi: float | None = None,
         choices: tuple | None = None, lo_open: bool = False):
    return field(default=default, metadata={"help": help, "lo": lo, "hi": hi, "choices": choices,
                                            "lo_open": lo_open})


BUILTIN_TEACHER = "builtin"


@dataclass
class DistillConfig:
    """Every setting of a `rgal distill` run."""

    # what to distil
    dataset: str = _opt("fashion-mnist", "dataset name (test split used for evaluation)")
    data_root: str | None = _opt(None, "folder holding the dataset files")
    download: bool = _opt(True, "download a missing dataset (CIFAR, MNIST, Fashion-MNIST)")
    teacher: str = _opt("smallcnn", "teacher architecture")
    teacher_weights: str = _opt(BUILTIN_TEACHER, "teacher weights file, or 'builtin'")
    student: str = _opt("tinycnn", "student architecture")
    method: str = _opt("rgal", "data-free method", choices=("rgal",))
    # schedule
    epochs: int = _opt(35, "synthesis + student phases", lo=1, hi=100_000)
    g_steps: int = _opt(15, "generator steps per synthesis phase", lo=1, hi=1_000_000)
    kd_steps: int = _opt(50, "student steps per epoch", lo=1, hi=1_000_000)
    batch_size: int = _opt(128, "pool images per student step (x2 views with pair sampling)", lo=1,
                          hi=65_536)
    synthesis_batch_size: int = _opt(128, "images per synthesis phase", lo=2,
                                    hi=65_536)
    # optimisation
    lr: float = _opt(0.1, "student SGD learning rate", lo=0, lo_open=True)
    momentum: float = _opt(0.9, "student SGD momentum", lo=0, hi=1)
    weight_decay: float = _opt(1e-4, "student weight decay", lo=0)
    lr_g: float = _opt(1e-3, "generator / latent Adam learning rate", lo=0, lo_open=True)
    # synthesis losses
    w_bn: float = _opt(1.0, "weight of the BN-statistics loss", lo=0)
    w_oh: float = _opt(1.0, "weight of the one-hot (cross-entropy) loss", lo=0)
    w_adv: float = _opt(1.0, "weight of the adversarial loss", lo=0)
    w_tri: float = _opt(0.1, "weight of the synthesis relation loss", lo=0)
    relation_direction: str = _opt("paper", "synthesis relation direction",
                                   choices=("paper", "code"))
    syn_sampler: str = _opt("focal", "negative sampler in synthesis",
                            choices=("focal", "distance", "random"))
    syn_relation_feature: str = _opt("last_stage", "student feature for the synthesis relation",
                                     choices=("last_stage", "penultimate"))
    reset_generator: bool = _opt(False, "re-initialise the generator every synthesis phase")
    nz: int = _opt(256, "generator latent size", lo=1, hi=65_536)
    ngf: int = _opt(32, "generator width", lo=1, hi=4096)
    # student losses
    tau: float = _opt(20.0, "KD temperature", lo=0, lo_open=True)
    w_cd: float = _opt(0.1, "weight of the pooled-feature L2 (cd) loss", lo=0)
    cd_start_stage: int = _opt(1, "first stage (0-based) used by the cd loss", lo=0, hi=64)
    w_stri: float = _opt(0.1, "weight of the student relation loss", lo=0)
    stu_sampler: str = _opt("distance", "negative sampler in the student phase",
                            choices=("focal", "distance", "random"))
    pair_sampling: bool = _opt(True, "take every pool image twice, as two augmentations")
    margin: float = _opt(0.2, "triplet margin", lo=0)
    # run
    out: str = _opt("runs/demo", "output folder")
    seed: int = _opt(0, "random seed", lo=0, hi=2**31 - 1)
    device: str = _opt("auto", "auto, cpu, cuda, cuda:1, mps")
    eval_batch_size: int = _opt(1000, "test-set batch size", lo=1, hi=65_536)
    export_synthetic: bool = _opt(False, "write the final synthetic pool to out/synthetic.safetensors")
    grid_every: int = _opt(1, "write a synthetic-image grid every N epochs (0: never)", lo=0)
    progress: bool = _opt(True, "show progress bars")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every key."""
        return dataclasses.asdict(self)


def _coerce(name: str, value: Any, typ: Any) -> Any:
    """Convert a YAML/CLI value to the declared type, or raise ConfigError."""
    typ_s = str(typ)
    if value is None:
        if "None" in typ_s:
            return None
        raise ConfigError(f"config key {name!r} may not be empty")
    if "bool" in typ_s:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no",
                                                        "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"config key {name!r} must be true or false, got {value!r}")
    if "int" in typ_s:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"config key {name!r} must be an integer, got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"config key {name!r} must be an integer, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise ConfigError(f"config key {name!r} must be an integer, got {value!r}")
        return int(f)
    if "float" in typ_s:
        if isinstance(value, bool):
            raise ConfigError(f"config key {name!r} must be a number, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {name!r} must be a number, got {value!r}") from None
        if not math.isfinite(f):
            raise ConfigError(f"config key {name!r} must be finite, got {value!r}")
        return f
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(f"config key {name!r} must be a string, got {value!r}")
    return str(value)


def validate(cfg: Any) -> Any:
    """Coerce every field to its type and check ranges and choices; return `cfg`."""
    for f in fields(cfg):
        v = _coerce(f.name, getattr(cfg, f.name), f.type)
        meta = f.metadata
        if meta.get("choices") and v not in meta["choices"]:
            raise ConfigError(f"config key {f.name!r} must be one of "
                              f"{', '.join(map(str, meta['choices']))}; got {v!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lo, hi = meta.get("lo"), meta.get("hi")
            if lo is not None and (v < lo or (meta.get("lo_open") and v == lo)):
                op = ">" if meta.get("lo_open") else ">="
                raise ConfigError(f"config key {f.name!r} must be {op} {lo}, got {v}")
            if hi is not None and v > hi:
                raise ConfigError(f"config key {f.name!r} must be <= {hi}, got {v}")
        setattr(cfg, f.name, v)
    return cfg


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from a file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid YAML ({type(e).__name__})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """Parse `key=value` overrides (values read as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key] = raw
    return out


def build_config(cls: type, *layers: dict[str, Any]) -> Any:
    """Instantiate `cls` from its defaults updated by each mapping in turn, then validate."""
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for layer in layers:
        for k, v in layer.items():
            k = str(k).replace("-", "_")
            if k not in known:
                raise ConfigError(f"unknown config key {k!r}")
            values[k] = v
    return validate(cls(**values))
