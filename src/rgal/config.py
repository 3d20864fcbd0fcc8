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

# Methods whose images come from an inversion phase kept in a growing pool, from a persistent
# generator sampled afresh at every student step, or from the real training set.
POOL_METHODS = ("rgal", "deepinv", "cmi", "fast", "cmi+rgal", "fast+rgal")
ONLINE_METHODS = ("dafl", "zskt", "dfad", "dfq")
REAL_DATA_METHODS = ("kd-real", "scratch")
METHODS = POOL_METHODS + ONLINE_METHODS + REAL_DATA_METHODS

# Each method's own loss terms and schedule (its paper's), applied under the user's settings.
# Keys not listed keep the DistillConfig defaults (RGAL's).
_PLAIN_KD = {"w_cd": 0.0, "w_stri": 0.0, "w_tri": 0.0, "pair_sampling": False}
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "rgal": {},
    # DeepInversion/ADI: pixels optimised from noise, BN + TV + one-hot + competition terms
    "deepinv": {**_PLAIN_KD, "w_bn": 10.0, "w_tv": 1e-3, "w_adv": 1.0, "lr_g": 0.05,
                "reset_generator": True},
    # CMI: generator re-initialised each phase; contrastive instance discrimination
    "cmi": {**_PLAIN_KD, "w_cr": 0.8, "cr_temperature": 0.1, "reset_generator": True},
    "cmi+rgal": {"w_cr": 0.8, "cr_temperature": 0.1, "reset_generator": True},
    # Fast-Datafree: meta-learned generator, a few inner steps, BN statistics with momentum
    "fast": {**_PLAIN_KD, "g_steps": 5, "lr_g": 5e-3, "lr_z": 0.015, "bn_momentum": 0.9,
             "w_bn": 10.0, "w_adv": 1.1},
    "fast+rgal": {"g_steps": 5, "lr_g": 5e-3, "lr_z": 0.015, "bn_momentum": 0.9, "w_bn": 10.0,
                  "w_adv": 1.1},
    # DAFL: generator trained on the teacher only (one-hot, activation, information entropy)
    "dafl": {**_PLAIN_KD, "w_bn": 0.0, "w_adv": 0.0, "w_act": 0.1, "w_ie": 5.0, "tau": 1.0,
             "lr_g": 0.02, "student_steps_per_g": 1},
    # ZSKT: adversarial belief matching, generator vs student; attention transfer
    "zskt": {**_PLAIN_KD, "w_bn": 0.0, "w_oh": 0.0, "w_adv": 1.0, "w_at": 250.0, "tau": 1.0,
             "student_steps_per_g": 10},
    # DFAD: generator maximises the student-teacher L1 logit gap; student minimises it
    "dfad": {**_PLAIN_KD, "w_bn": 0.0, "w_oh": 0.0, "w_adv": 1.0, "student_steps_per_g": 5},
    # DFQ: generator with BN + one-hot + adversarial + class balance
    "dfq": {**_PLAIN_KD, "w_bn": 1.0, "w_oh": 1.0, "w_adv": 1.0, "w_balance": 20.0, "tau": 1.0,
            "student_steps_per_g": 5},
    # real-data references: KD on the training images (upper bound), and labels alone
    "kd-real": {**_PLAIN_KD},
    "scratch": {**_PLAIN_KD},
}


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
    method: str = _opt("rgal", "data-free method (its own defaults apply under your settings)",
                       choices=METHODS)
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
    # terms and schedules of the other methods (0 = off)
    w_tv: float = _opt(0.0, "total-variation image prior (deepinv)", lo=0)
    w_cr: float = _opt(0.0, "contrastive instance-discrimination loss (cmi)", lo=0)
    cr_temperature: float = _opt(0.1, "temperature of the contrastive loss (cmi)", lo=0,
                                 lo_open=True)
    bank_size: int = _opt(4096, "feature bank of past synthetic images (cmi)", lo=1,
                          hi=10_000_000)
    lr_z: float = _opt(0.0, "latent learning rate when it differs from lr_g (fast; 0: lr_g)",
                       lo=0)
    bn_momentum: float = _opt(0.0, "momentum of the BN statistics across inner steps (fast)",
                              lo=0, hi=0.999)
    w_act: float = _opt(0.0, "activation loss (dafl)", lo=0)
    w_ie: float = _opt(0.0, "information-entropy class-balance loss (dafl)", lo=0)
    w_balance: float = _opt(0.0, "class-balance loss of the generator (dfq)", lo=0)
    w_at: float = _opt(0.0, "attention-transfer loss in the student phase (zskt)", lo=0)
    student_steps_per_g: int = _opt(5, "student steps per generator step (dafl, zskt, dfad, "
                                       "dfq)", lo=1, hi=1_000_000)
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
    precision: str = _opt("fp32", "fp32, bf16 (autocast) or fp16 (autocast + loss scaling)",
                          choices=("fp32", "bf16", "fp16"))
    channels_last: bool = _opt(False, "channels-last memory layout for the conv nets")
    optimizer_impl: str = _opt("default", "optimiser kernels: default (PyTorch's choice), "
                                          "foreach or fused", choices=("default", "foreach",
                                                                       "fused"))
    compile: bool = _opt(False, "torch.compile the teacher, student and generator")
    eval_batch_size: int = _opt(1000, "test-set batch size", lo=1, hi=65_536)
    test_per_class: int = _opt(0, "imagenet: evaluate on a balanced subset of N val images per "
                                  "class (0: all 50k, 7.5 GB in memory)", lo=0, hi=1_000_000)
    holdout: int = _opt(0, "evaluate on the last N training images instead of the test set "
                           "(for choosing settings; kd-real/scratch then train on the rest)",
                        lo=0, hi=10_000_000)
    export_synthetic: bool = _opt(False, "write the final synthetic pool to out/synthetic.safetensors")
    tensorboard: bool = _opt(False, "write every epoch's metrics and image grid as TensorBoard "
                                    "events into out (pip install \"rgal[tensorboard]\")")
    export: str = _opt("none", "at the end, write out/student.onnx checked with onnxruntime "
                               "(pip install \"rgal[onnx]\")", choices=("none", "onnx"))
    grid_every: int = _opt(1, "write a synthetic-image grid every N epochs (0: never)", lo=0)
    progress: bool = _opt(True, "show progress bars")
    diversity_samples: int = _opt(1000, "synthetic images measured for diversity each epoch "
                                        "(0: off)", lo=0, hi=1_000_000)

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


def method_of(layers: list[dict[str, Any]]) -> str:
    """The `method` the layers select (the last one that sets it), else the default."""
    method = DistillConfig.__dataclass_fields__["method"].default
    for layer in layers:
        for k, v in layer.items():
            if str(k).replace("-", "_") == "method":
                method = v
    return method


def distill_config(*layers: dict[str, Any]) -> DistillConfig:
    """A DistillConfig from defaults <- the method's own defaults <- each layer in turn."""
    method = method_of(list(layers))
    base = METHOD_DEFAULTS.get(method, {}) if isinstance(method, str) else {}
    return build_config(DistillConfig, base, *layers)
