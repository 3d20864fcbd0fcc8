"""`rgal incremental`: the sub-command's parser and entry point."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..config import build_config, load_yaml, parse_set
from .config import IncrementalConfig

_METAVARS = {"dataset": "D", "model": "M", "tasks": "T", "method": "NAME", "out": "DIR",
             "seed": "S"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `incremental` on the CLI's sub-parsers."""
    p = subparsers.add_parser("incremental",
                              help="non-exemplar class-incremental learning (ABD, RGAL, ...)")
    p.add_argument("--config", help="YAML file of config keys (command-line flags win)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key; repeatable")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    for f in fields(IncrementalConfig):
        if f.name == "progress":
            continue
        choices = f.metadata.get("choices")
        extra = f"; one of {', '.join(choices)}" if choices else ""
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                       metavar=_METAVARS.get(f.name, "V"),
                       help=f"{f.metadata.get('help', '')} (default: {f.default}{extra})")
    return p


def incremental_config(args: argparse.Namespace) -> IncrementalConfig:
    """Defaults <- --config YAML <- explicit flags <- --set overrides."""
    file_layer = load_yaml(args.config) if args.config else {}
    flag_layer = {f.name: getattr(args, f.name) for f in fields(IncrementalConfig)
                  if getattr(args, f.name, None) is not None}
    flag_layer = {k: parse_set([f"{k}={v}"])[k] for k, v in flag_layer.items()}
    set_layer = parse_set(args.set)
    if args.no_progress:
        set_layer["progress"] = False
    return build_config(IncrementalConfig, file_layer, flag_layer, set_layer)


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
