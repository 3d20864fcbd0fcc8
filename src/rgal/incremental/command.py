"""`rgal incremental`: the sub-command's parser and entry point."""

from __future__ import annotations

import argparse

from ..cliargs import add_config_arguments, config_layers
from ..config import build_config
from .config import IncrementalConfig

_METAVARS = {"dataset": "D", "model": "M", "tasks": "T", "method": "NAME", "out": "DIR",
             "seed": "S"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `incremental` on the CLI's sub-parsers."""
    p = subparsers.add_parser("incremental",
                              help="non-exemplar class-incremental learning (ABD, RGAL, ...)")
    add_config_arguments(p, IncrementalConfig, _METAVARS)
    return p


def incremental_config(args: argparse.Namespace) -> IncrementalConfig:
    """Defaults <- --config YAML <- explicit flags <- --set overrides."""
    return build_config(IncrementalConfig, *config_layers(args, IncrementalConfig))


def run(args: argparse.Namespace) -> int:
    """Run `rgal incremental` and print its metrics."""
    from ..cli import _print_table
    from .runner import prepare_incremental, run_incremental

    cfg = incremental_config(args)
    setup = prepare_incremental(cfg, overwrite=args.overwrite)
    s = run_incremental(setup)
    split = " | ".join(",".join(str(c) for c in task) for task in setup.split)
    _print_table([
        ("method", f"{s['method']} ({cfg.model} on {cfg.dataset}, {s['tasks']} tasks: {split})"),
        ("accuracy after each task", ", ".join(f"{a:.2f}" for a in s["acc_seen"])),
        (f"final accuracy ({s['evaluated_on']})", f"{s['final_acc']:.2f}%"),
        ("average incremental accuracy", f"{s['avg_inc_acc']:.2f}%"),
        ("average forgetting", f"{s['forgetting']:.2f}"),
        ("time", f"{s['wall_s']:.0f} s"),
        ("outputs", str(setup.out)),
    ])
    return 0
