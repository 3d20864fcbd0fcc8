"""`rgal incremental`: the sub-command's parser and entry point."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cliargs import add_config_arguments, config_layers, print_table
from ..config import ConfigError, build_config
from .config import IncrementalConfig

_METAVARS = {"dataset": "D", "model": "M", "tasks": "T", "method": "NAME", "out": "DIR",
             "seed": "S"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `incremental` on the CLI's sub-parsers."""
    p = subparsers.add_parser("incremental",
                              help="non-exemplar class-incremental learning (ABD, RGAL, ...)")
    add_config_arguments(p, IncrementalConfig, _METAVARS)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (end of a task, or "
                        "the exact step a signal stopped it at)")
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: continue with changed settings")
    return p


def incremental_config(args: argparse.Namespace) -> tuple[IncrementalConfig, dict | None]:
    """Defaults <- --config YAML <- explicit flags <- --set overrides; on --resume, the
    checkpoint's config under them, and the checkpoint."""
    from ..engine import CHECKPOINT, check_resumable, load_checkpoint

    layers = config_layers(args, IncrementalConfig)
    cfg = build_config(IncrementalConfig, *layers)
    path = Path(cfg.out) / CHECKPOINT
    if not getattr(args, "resume", False) or not path.exists():
        return cfg, None
    state = load_checkpoint(path)
    cfg = build_config(IncrementalConfig, state["config"], *layers)
    check_resumable(state["config"], cfg.to_dict(), args.allow_config_change, path)
    return cfg, state


def run(args: argparse.Namespace) -> int:
    """Run `rgal incremental` and print its metrics."""
    from .runner import prepare_incremental, run_incremental

    if args.allow_config_change and not args.resume:
        raise ConfigError("--allow-config-change only applies with --resume")
    if args.overwrite and args.resume:
        raise ConfigError("--resume and --overwrite exclude each other")
    cfg, state = incremental_config(args)
    if args.resume and state is None:
        print(f"rgal: no checkpoint in {cfg.out}; starting from task 1", file=sys.stderr)
    setup = prepare_incremental(cfg, overwrite=args.overwrite, resume_state=state,
                                resume=args.resume)
    s = run_incremental(setup)
    split = " | ".join(",".join(str(c) for c in task) for task in setup.split)
    print_table([
        ("method", f"{s['method']} ({cfg.model} on {cfg.dataset}, {s['tasks']} tasks: {split})"),
        ("accuracy after each task", ", ".join(f"{a:.2f}" for a in s["acc_seen"])),
        (f"final accuracy ({s['evaluated_on']})", f"{s['final_acc']:.2f}%"),
        ("average incremental accuracy", f"{s['avg_inc_acc']:.2f}%"),
        ("average forgetting", f"{s['forgetting']:.2f}"),
        ("time", f"{s['wall_s']:.0f} s"),
        ("outputs", str(setup.out)),
    ])
    return 0
