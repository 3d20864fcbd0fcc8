"""`rgal quantize`: a low-bit copy of a trained model, fine-tuned without real images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cliargs import add_config_arguments, config_layers, print_table
from ..config import ConfigError
from .config import METHODS, QuantizeConfig, build_quantize_config


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `quantize` with one `--key VALUE` flag per QuantizeConfig field."""
    p = subparsers.add_parser(
        "quantize", help="data-free quantization of a trained model (" + ", ".join(METHODS) + ")")
    add_config_arguments(p, QuantizeConfig, skip=())
    p.add_argument("--resume", action="store_true",
                   help="continue the gdfq run in --out from its last checkpoint")
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: continue with changed settings")
    return p


def quantize_config(args: argparse.Namespace) -> QuantizeConfig:
    """Defaults <- --config YAML <- explicit flags <- --set overrides."""
    return build_quantize_config(*config_layers(args, QuantizeConfig))


def config_for_quantize(args: argparse.Namespace) -> tuple[QuantizeConfig, dict | None]:
    """The run's config; on --resume, the checkpoint's config under the given layers."""
    from ..engine import CHECKPOINT, check_resumable, load_checkpoint

    layers = config_layers(args, QuantizeConfig)
    cfg = build_quantize_config(*layers)
    path = Path(cfg.out) / CHECKPOINT
    if not getattr(args, "resume", False) or not path.exists():
        return cfg, None
    state = load_checkpoint(path)
    cfg = build_quantize_config(state["config"], *layers)
    check_resumable(state["config"], cfg.to_dict(), args.allow_config_change, path)
    return cfg, state


def prepare_quantization(cfg: QuantizeConfig, overwrite: bool = False,
                         resume_state: dict | None = None, resume: bool = False):
    """Validate every input and load the model and data; nothing is written here."""
    from ..data.datasets import describe_dataset
    from ..data.splits import evaluation_split
    from ..models.build import (
        build_model,
        load_model_weights,
        require_batchnorm,
        resolve_weights_path,
    )
    from ..utils import resolve_device
    from .methods import QuantizeSetup, quantize_folder

    info = describe_dataset(cfg.dataset, cfg.data_root)
    device = resolve_device(cfg.device)
    folder = quantize_folder(cfg.out)
    folder.check(overwrite or resume or resume_state is not None)
    if cfg.tensorboard:
        from ..engine.tensorboard import require_tensorboard

        require_tensorboard()
    model = build_model(cfg.model, info.num_classes, info.channels, "model")
    load_model_weights(model, resolve_weights_path(cfg.weights, cfg.dataset, cfg.model), "model")
    if cfg.method.startswith("gdfq"):
        require_batchnorm(model, cfg.model, f"{cfg.method} needs BN statistics")
    calib, eval_data = evaluation_split(cfg.dataset, cfg.data_root, holdout=cfg.holdout,
                                        download=cfg.download,
                                        need_train=cfg.method == "ptq-real", info=info)
    return QuantizeSetup(cfg, info, model, eval_data, calib, device, folder, resume_state)


def run(args: argparse.Namespace) -> int:
    """Run `rgal quantize`."""
    from .methods import run_quantization

    if args.allow_config_change and not args.resume:
        raise ConfigError("--allow-config-change only applies with --resume")
    if args.overwrite and args.resume:
        raise ConfigError("--resume and --overwrite exclude each other")
    cfg, state = config_for_quantize(args)
    if args.resume and not cfg.method.startswith("gdfq"):
        raise ConfigError(f"--resume applies to the gdfq methods; {cfg.method} has no "
                          "checkpoints (it takes seconds)")
    if args.resume and state is None:
        print(f"rgal: no checkpoint in {cfg.out}; starting from epoch 1", file=sys.stderr)
    setup = prepare_quantization(cfg, overwrite=args.overwrite, resume_state=state,
                                 resume=args.resume)
    s = run_quantization(setup)
    print_table([
        ("model", f"{cfg.model} on {cfg.dataset} ({s['eval_split']} split)"),
        ("method", f"{cfg.method}, W{cfg.wbits}A{cfg.abits}"),
        ("full precision acc", f"{s['fp_acc']:.2f}%"),
        ("quantized acc", f"{s['quant_acc']:.2f}%"),
        ("fake-quant weights only", f"{s['weights_only_acc']:.2f}% (what `rgal eval` reports)"),
        ("time", f"{s['wall_s']:.0f} s"),
        ("outputs", str(setup.out)),
    ])
    return 0
