"""Typed experiment configuration: dataclass defaults <- YAML file <- command-line overrides.

Every command has a config dataclass whose fields carry their help, range and choices. A
distillation config also holds the typed *sections* of its method (`cfg.rgal.w_rel_syn`,
`cfg.cmi.w_cr`): settings that belong to one method's idea live with that method
(`rgal.methods`), not in one flat list. The defaults are the embedded demo: the shipped
Fashion-MNIST teacher distilled into a small student on a CPU in a few minutes.
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


_NO_LEGACY = object()


def option(default: Any, help: str, *, lo: float | None = None, hi: float | None = None,
           choices: tuple | None = None, lo_open: bool = False, aliases: tuple[str, ...] = (),
           legacy: Any = _NO_LEGACY):
    """A config field: its default, one-line help, range or choices and accepted old names.

    `legacy`, for a key added after runs were already written: the value that gives the
    behaviour those runs had without it (what their saved configs mean by its absence).
    """
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "lo_open": lo_open,
            "aliases": aliases}
    if legacy is not _NO_LEGACY:
        meta["legacy"] = legacy
    return field(default=default, metadata=meta)


_opt = option

BUILTIN_TEACHER = "builtin"


@dataclass
class DistillConfig:
    """Every setting of a `rgal distill` run shared by all methods, plus the method's sections.

    Keys that are not part of a method's idea (budget, batch sizes, generator size, evaluation)
    live here so that every method of a comparison gets the same; `sections` holds the typed
    settings of the selected method (see `rgal.methods`).
    """

    # what to distil
    dataset: str = option("fashion-mnist", "dataset name (test split used for evaluation)")
    data_root: str | None = option(None, "folder holding the dataset files")
    download: bool = option(True, "download a missing dataset (CIFAR, MNIST, Fashion-MNIST)")
    teacher: str = option("smallcnn", "teacher architecture")
    teacher_weights: str = option(BUILTIN_TEACHER, "teacher weights file, or 'builtin'")
    student: str = option("tinycnn", "student architecture")
    method: str = option("rgal", "data-free method (`rgal methods` lists them; its own "
                                 "defaults apply under your settings)")
    # schedule
    epochs: int = option(35, "synthesis + student phases", lo=1, hi=100_000)
    g_steps: int = option(60, "generator steps per synthesis phase", lo=1, hi=1_000_000)
    kd_steps: int = option(100, "student steps per epoch", lo=1, hi=1_000_000)
    batch_size: int = option(64, "pool images per student step (x2 views with "
                                  "pair_sampling: true)", lo=1, hi=65_536)
    synthesis_batch_size: int = option(64, "images per synthesis phase", lo=2, hi=65_536)
    # optimisation
    lr: float = option(0.1, "student SGD learning rate", lo=0, lo_open=True)
    momentum: float = option(0.9, "student SGD momentum", lo=0, hi=1)
    weight_decay: float = option(1e-4, "student weight decay", lo=0)
    lr_g: float = option(3e-3, "generator / latent Adam learning rate", lo=0, lo_open=True)
    student_optimizer: str = option("sgd", "the student's optimiser: sgd (with momentum) or "
                                           "adam", choices=("sgd", "adam"))
    clip_grad: float = option(0.0, "clip the student's gradient norm (0: no clipping)", lo=0)
    student_ema: float = option(0.0, "deliver a moving average of the student's weights "
                                     "(and BN statistics): after every student step the "
                                     "average moves 1 - d of the way to the trained student; "
                                     "it is what is evaluated, saved and returned; the trained "
                                     "student's own last accuracy is recorded beside it "
                                     "(0: off)", lo=0, hi=0.9999, legacy=0.0)
    warmup_epochs: int = option(0, "first epochs that only synthesise (no student steps, no "
                                   "adversarial term, no learning-rate step)", lo=0,
                                hi=100_000)
    # the inversion terms most methods share
    w_bn: float = option(1.0, "weight of the BN-statistics loss (loss_bn)", lo=0)
    w_bn_first: float = option(1.0, "multiplier of the BN-statistics distance of the first "
                                    "BatchNorm the images reach (DeepInversion's ImageNet "
                                    "script: 10)", lo=0, legacy=1.0)
    w_oh: float = option(1.0, "weight of the one-hot cross-entropy loss (loss_oh)", lo=0)
    w_adv: float = option(1.0, "weight of the adversarial loss (loss_adv)", lo=0)
    reset_generator: bool = option(False, "re-initialise the generator every synthesis phase")
    generator_life: int = option(0, "re-initialise the generator at the start of every N-th "
                                    "synthesis phase after the first (epochs N+1, 2N+1, ...; "
                                    "0: never; reset_generator: every phase)", lo=0,
                                 hi=100_000, legacy=0)
    reset_part: str = option("all", "what a re-initialisation (reset_generator, "
                                    "generator_life) renews: all (the whole generator) or "
                                    "first (only its first layer, the map from the latent; the "
                                    "rest keeps what it learnt)", choices=("all", "first"),
                             legacy="all")
    pool_window: int = option(0, "keep only the images of the last N synthesis phases in the "
                                 "pool (0: every phase's)", lo=0, hi=100_000, legacy=0)
    boundary: float = option(0.0, "share of each synthesis batch whose one-hot target gives "
                                  "up to half its weight to a class the teacher's classifier "
                                  "finds similar (images near a class boundary; 0: off)",
                             lo=0, hi=1, legacy=0.0)
    hard_classes: float = option(0.0, "share of each synthesis batch's labels drawn in "
                                      "proportion to the student's disagreement with the "
                                      "teacher (KL) on each class's earlier synthetic images, "
                                      "a moving average over phases (0: classes drawn "
                                      "uniformly)", lo=0, hi=1, legacy=0.0)
    real_subset: int = option(0, "kd-real and scratch: train on N training images only, a "
                                 "random subset drawn from the run's seed (0: all of them)",
                              lo=0, hi=100_000_000, legacy=0)
    bn_momentum: float = option(0.0, "blend each batch's BN statistics with a moving average "
                                     "of earlier phases' (momentum m: (1-m) batch + m average; "
                                     "0: off; Fast-Datafree, NAYER)", lo=0, hi=0.999)
    nz: int = option(256, "generator latent size", lo=1, hi=65_536)
    ngf: int = option(32, "generator width", lo=1, hi=4096)
    tau: float = option(20.0, "KD temperature", lo=0, lo_open=True)
    mix: str = option("cutmix", "mix each student batch's source images in random pairs "
                                "before the views are made: mixup (a blend) or cutmix (a pasted "
                                "box); the image keeps the larger share and its label, the "
                                "teacher sees the mixed image (every method but rgal defaults "
                                "to none, as its paper runs it)",
                     choices=("none", "mixup", "cutmix"), legacy="none")
    student_crop: float = option(0.0, "the student's views: a random resized crop keeping "
                                      "this share of the image's area or more (aspect 3/4 to "
                                      "4/3, resized back) instead of the padded crop; the "
                                      "synthesis views are unchanged (0: the padded crop)",
                                 lo=0, hi=1, legacy=0.0)
    student_padding: int = option(-1, "the student's views: the random crop's padding in "
                                      "pixels, a shift of up to that many (-1: the dataset's, "
                                      "2 for (Fashion-)MNIST, 4 for CIFAR; 0: no shift); the "
                                      "synthesis views are unchanged", lo=-1, hi=1024,
                                  legacy=-1)
    mix_alpha: float = option(1.0, "the mixing share l ~ Beta(a, a), the image's own share "
                                   "max(l, 1 - l)", lo=0, lo_open=True, legacy=1.0)
    mix_partner: str = option("random", "each image's mix partner: random (any image of the "
                                        "batch), same (one of its own class) or confused (one "
                                        "of a class the teacher confuses it with, drawn by the "
                                        "teacher's mean probabilities on the pool's newest "
                                        "images); pool methods only",
                              choices=("random", "same", "confused"), legacy="random")
    # run
    out: str = option("runs/demo", "output folder")
    seed: int = option(0, "random seed", lo=0, hi=2**31 - 1)
    device: str = option("auto", "auto, cpu, cuda, cuda:1, mps")
    precision: str = option("fp32", "fp32, bf16 (autocast), fp16 (autocast + loss scaling), or "
                                    "auto (bf16 where the device has native bf16, else fp32)",
                            choices=("fp32", "bf16", "fp16", "auto"))
    channels_last: str = option("auto", "channels-last memory layout for the conv nets: auto "
                                        "(on for CPUs and CUDA, where it is faster), true, "
                                        "false", choices=("auto", "true", "false"))
    optimizer_impl: str = option("default", "optimiser kernels: default (PyTorch's choice), "
                                            "foreach or fused",
                                 choices=("default", "foreach", "fused"))
    compile: bool = option(False, "torch.compile the teacher, student and generator")
    fold_bn: bool = option(True, "fold the frozen teacher's BatchNorms into the convolutions "
                                 "before them (same results, less work)")
    eval_batch_size: int = option(1000, "test-set batch size", lo=1, hi=65_536)
    eval_every: int = option(1, "evaluate the student (and measure diversity) every N epochs "
                                "and at the last; the epochs between record no accuracy",
                             lo=1, hi=100_000)
    test_per_class: int = option(0, "imagenet: evaluate on a balanced subset of N val images "
                                    "per class (0: all 50k, 7.5 GB in memory)", lo=0,
                                 hi=1_000_000)
    holdout: int = option(0, "evaluate on the last N training images instead of the test set "
                             "(for choosing settings; kd-real/scratch then train on the rest)",
                          lo=0, hi=10_000_000)
    export_synthetic: bool = option(False, "write the final synthetic pool to "
                                           "out/synthetic.safetensors")
    tensorboard: bool = option(False, "write every epoch's metrics and image grid as "
                                      "TensorBoard events into out (pip install "
                                      "\"rgal[tensorboard]\")")
    export: str = option("none", "at the end, write out/student.onnx checked with onnxruntime "
                                 "(pip install \"rgal[onnx]\")", choices=("none", "onnx"))
    grid_every: int = option(1, "write a synthetic-image grid every N epochs (0: never)", lo=0)
    grad_shares: int = option(0, "every N-th generator and student step, measure each loss "
                                 "term's share of the gradient norm (logged per epoch as "
                                 "share_<term>; one extra backward pass per term on those "
                                 "steps; 0: off)", lo=0, hi=1_000_000)
    progress: bool = option(True, "show progress bars")
    diversity_samples: int = option(1000, "synthetic images measured for diversity each epoch "
                                          "(0: off)", lo=0, hi=1_000_000)
    # the selected method's own typed settings, by section name (not a flag)
    sections: dict[str, Any] = field(default_factory=dict, metadata={"sections": True})

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__} has no key or section {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every key; each section as a nested dict under its name."""
        out = {f.name: getattr(self, f.name) for f in config_fields(type(self))}
        for name, section in self.sections.items():
            out[name] = dataclasses.asdict(section)
        return out


def config_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a config dataclass that are settings (not the section map)."""
    return [f for f in fields(cls) if not f.metadata.get("sections")]


def legacy_values(cls: type) -> dict[str, Any]:
    """Keys added to a config after runs were written, each with the value those runs meant."""
    return {f.name: f.metadata["legacy"] for f in config_fields(cls) if "legacy" in f.metadata}


def flat_config(d: dict[str, Any]) -> dict[str, Any]:
    """`{section: {key: v}}` entries flattened to `section.key` (for comparisons and tables)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


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
    if isinstance(value, bool):  # a yes/no answer to a key with named choices
        return "true" if value else "false"
    if not isinstance(value, (str, int, float)):
        raise ConfigError(f"config key {name!r} must be a string, got {value!r}")
    return str(value)


def validate(cfg: Any) -> Any:
    """Coerce every field to its type and check ranges and choices; return `cfg`."""
    for f in config_fields(type(cfg)):
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
    for section in getattr(cfg, "sections", {}).values():
        validate(section)
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


def key_names(cls: type) -> dict[str, str]:
    """Every accepted spelling of a key of `cls` (its name and its aliases) -> its name."""
    names: dict[str, str] = {}
    for f in config_fields(cls):
        names[f.name] = f.name
        for alias in f.metadata.get("aliases", ()):
            names[alias] = f.name
    return names


def canonical_key(key: Any) -> str:
    """A key as written in YAML or on the command line, with dashes read as underscores."""
    return str(key).replace("-", "_")


def build_config(cls: type, *layers: dict[str, Any]) -> Any:
    """Instantiate `cls` from its defaults updated by each mapping in turn, then validate."""
    known = key_names(cls)
    values: dict[str, Any] = {}
    for layer in layers:
        for k, v in layer.items():
            k = canonical_key(k)
            if k not in known:
                raise ConfigError(f"unknown config key {k!r}")
            values[known[k]] = v
    return validate(cls(**values))
