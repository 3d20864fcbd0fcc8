"""`rgal quantize`: a low-bit copy of a trained model, fine-tuned without real images."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cliargs import add_config_arguments, config_layers
from ..config import ConfigError
from .config import METHODS, QuantizeConfig, build_quantize_config


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `quantize` with one `--key VALUE` flag per QuantizeConfig field."""
    p = subparsers.add_parser(
        "quantize", help="data-free quantization of a trained model (" + ", ".join(METHODS) + ")")
    add_config_arguments(p, QuantizeConfig, skip=())
    return p


def quantize_config(args: argparse.Namespace) -> QuantizeConfig:
    """Defaults <- --config YAML <- explicit flags <- --set overrides."""
    return build_quantize_config(*config_layers(args, QuantizeConfig))


def check_quantize_out(out: Path, overwrite: bool) -> None:
    """Refuse a folder holding an earlier run (unless overwriting) or one that is not writable."""
    from ..train.prepare import check_output_dir
    from .methods import QUANT_OUTPUTS

    check_output_dir(out, overwrite)
    if out.is_dir() and not overwrite:
        found = [m for m in QUANT_OUTPUTS if (out / m).exists()]
        if found:
            raise ConfigError(f"output folder {out} already holds a run ({found[0]}); "
                              "pass --overwrite or choose another --out")


def prepare_quantization(cfg: QuantizeConfig, overwrite: bool = False):
    """Validate every input and load the model and data; nothing is written here."""
    from ..data.datasets import ImageTensors, describe_dataset, load_dataset
    from ..train.prepare import build_model, load_model_weights, resolve_weights_path
    from ..utils import resolve_device
    from .methods import QuantizeSetup

    info = describe_dataset(cfg.dataset, cfg.data_root)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    check_quantize_out(out, overwrite)
    model = build_model(cfg.model, info, "model")
    load_model_weights(model, resolve_weights_path(cfg.weights, cfg.dataset, cfg.model), "model")
    if cfg.method.startswith("gdfq"):
        from ..models.features import find_batchnorms

        if not find_batchnorms(model):
            raise ConfigError(f"{cfg.model} has no BatchNorm layer; {cfg.method} needs BN "
                              "statistics")
    calib = None
    if cfg.holdout or cfg.method == "ptq-real":
        train = load_dataset(cfg.dataset, cfg.data_root, train=True, download=cfg.download)
        if cfg.holdout >= len(train):
            raise ConfigError(f"holdout ({cfg.holdout}) must be smaller than the "
                              f"{len(train)} training images")
        cut = len(train) - cfg.holdout
        calib = ImageTensors(train.images[:cut], train.labels[:cut])
    if cfg.holdout:
        eval_data = ImageTensors(train.images[cut:], train.labels[cut:])
    else:
        eval_data = load_dataset(cfg.dataset, cfg.data_root, train=False, download=cfg.download)
    if int(eval_data.labels.max()) >= info.num_classes:
        raise ConfigError(f"labels exceed the {info.num_classes} classes of {cfg.dataset}")
    return QuantizeSetup(cfg, info, model, eval_data, calib, device, out)


def run(args: argparse.Namespace) -> int:
    """Run `rgal quantize`."""
    from .methods import run_quantization

    cfg = quantize_config(args)
    setup = prepare_quantization(cfg, overwrite=args.overwrite)
    s = run_quantization(setup)
    rows = [
        ("model", f"{cfg.model} on {cfg.dataset} ({s['eval_split']} split)"),
        ("method", f"{cfg.method}, W{cfg.wbits}A{cfg.abits}"),
        ("full precision acc", f"{s['fp_acc']:.2f}%"),
        ("quantized acc", f"{s['quant_acc']:.2f}%"),
        ("fake-quant weights only", f"{s['weights_only_acc']:.2f}% (what `rgal eval` reports)"),
        ("time", f"{s['wall_s']:.0f} s"),
        ("outputs", str(setup.out)),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
    return 0
