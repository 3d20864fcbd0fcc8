"""The `rgal` command: train-teacher, distill, eval."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__, extra_commands  # hook: extra_commands (`rgal export`, `rgal report`)
from .cliargs import add_config_arguments, config_layers
from .config import ConfigError, DistillConfig, load_yaml, parse_set
from .incremental import command as incremental_command
from .quantization import command as quantize_command


class UsageError(Exception):
    """Bad command-line usage (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line and exits with status 2."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    p = _Parser(prog="rgal", description="Data-free knowledge transfer with RGAL.")
    p.add_argument("--version", action="version", version=f"rgal {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    d = sub.add_parser("distill", help="data-free distillation of a teacher into a student")
    add_config_arguments(d, DistillConfig, skip=())
    d.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (its config is the "
                        "base; flags that differ are refused unless --allow-config-change)")
    d.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: continue with changed settings (e.g. a lower --lr)")

    b = sub.add_parser("bench", help="compare methods/ablations on one teacher, student and "
                                     "budget")
    b.add_argument("--methods", default=None,
                   help="comma-separated methods, ablations (e.g. rgal-code) or "
                        "method:key=value;... entries (default: the whole suite)")
    b.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 (default 2)")
    b.add_argument("--out", required=True, help="bench folder")
    b.add_argument("--config", help="YAML of distill keys shared by every run")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a shared distill key (e.g. epochs=20); repeatable")
    b.add_argument("--data-root")
    b.add_argument("--resume", action="store_true",
                   help="continue a bench in --out: finished runs are kept, others resumed")
    b.add_argument("--no-progress", action="store_true")

    t = sub.add_parser("train-teacher", help="train a classifier on real data")
    t.add_argument("--dataset", required=True)
    t.add_argument("--model", required=True)
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--data-root")
    t.add_argument("--no-download", action="store_true", help="never download the dataset")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--out", required=True, help="weights file (.safetensors or .pth)")
    t.add_argument("--overwrite", action="store_true")
    t.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("eval", help="test accuracy of a weights file")
    e.add_argument("--model", required=True)
    e.add_argument("--weights", required=True, help="weights file, or 'builtin'")
    e.add_argument("--dataset", required=True)
    e.add_argument("--data-root")
    e.add_argument("--no-download", action="store_true", help="never download the dataset")
    e.add_argument("--device", default="auto")
    e.add_argument("--batch-size", type=int, default=1000)
    quantize_command.add_parser(sub)
    incremental_command.add_parser(sub)
    extra_commands.add_parsers(sub)  # hook: `rgal export` and `rgal report`
    return p


def cmd_distill(args: argparse.Namespace) -> int:
    """Run `rgal distill`."""
    from .train.distill import run_distillation
    from .train.prepare import config_for_run, prepare_distillation

    if args.allow_config_change and not args.resume:
        raise UsageError("--allow-config-change only applies with --resume")
    cfg, state = config_for_run(config_layers(args, DistillConfig), resume=args.resume,
                                allow_change=args.allow_config_change)
    from .distributed import init_from_env, is_main, shutdown

    setup = prepare_distillation(cfg, overwrite=args.overwrite, resume_state=state,
                                 resume=args.resume)
    setup.device = init_from_env(setup.device)  # torchrun: join the process group
    try:
        if args.resume and state is None and is_main():
            print(f"rgal: no checkpoint in {cfg.out}; starting from epoch 1", file=sys.stderr)
        summary = run_distillation(setup)
    finally:
        shutdown()
    if not summary:  # not the writing rank
        return 0
    _print_table([
        ("teacher", f"{cfg.teacher} ({summary['teacher_params'] / 1e6:.2f}M params)"),
        ("student", f"{cfg.student} ({summary['student_params'] / 1e6:.3f}M params)"),
        ("teacher test acc", f"{summary['teacher_acc']:.2f}%"),
        ("student test acc (last)", f"{summary['final_acc']:.2f}%"),
        ("student test acc (best)", f"{summary['best_acc']:.2f}% (epoch {summary['best_epoch']})"),
        ("images synthesized", f"{summary['images_synthesized']}"),
        ("time", f"{summary['wall_s']:.0f} s (synthesis {summary['synthesis_s']:.0f} s, "
                 f"student {summary['distill_s']:.0f} s, eval {summary['eval_s']:.0f} s)"),
        ("outputs", str(setup.out)),
    ])
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run `rgal bench`."""
    from .train.bench import DEFAULT_BUDGET, DEFAULT_SUITE, RESULTS, plan_runs, run_bench

    if not 1 <= args.seeds <= 100:
        raise ConfigError(f"--seeds must be in 1..100, got {args.seeds}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"bench path {out} exists and is not a folder")
    if not args.resume and any((out / name).exists() for name in RESULTS):
        raise ConfigError(f"{out} already holds a bench; pass --resume to continue it or "
                          "choose another --out")
    entries = ([e.strip() for e in args.methods.split(",") if e.strip()] if args.methods
               else list(DEFAULT_SUITE))
    if not entries:
        raise ConfigError("--methods lists no entry")
    shared = {**DEFAULT_BUDGET, **(load_yaml(args.config) if args.config else {})}
    if args.data_root:
        shared["data_root"] = args.data_root
    runs = plan_runs(entries, list(range(args.seeds)), out, [shared, parse_set(args.set)])
    from .train.prepare import check_output_dir

    check_output_dir(out, overwrite=True)
    rows = run_bench(runs, out, progress=not args.no_progress)
    print((out / "results.md").read_text())
    print(f"{len(rows)} runs -> {out}")
    return 0


def _print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")


def _dataset_and_model(dataset: str, data_root: str | None, model: str, role: str):
    from .data.datasets import describe_dataset
    from .train.prepare import build_model

    info = describe_dataset(dataset, data_root)
    return info, build_model(model, info, role)


def cmd_train_teacher(args: argparse.Namespace) -> int:
    """Run `rgal train-teacher`."""
    import torch

    from .data.datasets import load_dataset
    from .models.weights import save_weights
    from .train.teacher import train_supervised
    from .utils import resolve_device, seed_everything

    for name, val in (("epochs", args.epochs), ("batch-size", args.batch_size)):
        if val < 1:
            raise ConfigError(f"--{name} must be >= 1, got {val}")
    if not args.lr > 0 or args.weight_decay < 0:
        raise ConfigError("--lr must be > 0 and --weight-decay >= 0")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite or choose another --out")
    if out.suffix not in (".safetensors", ".pth", ".pt"):
        raise ConfigError(f"--out must end in .safetensors, .pth or .pt, got {out.name!r}")
    device = resolve_device(args.device)
    seed_everything(args.seed)
    info, model = _dataset_and_model(args.dataset, args.data_root, args.model, "teacher")
    train = load_dataset(args.dataset, args.data_root, train=True, download=not args.no_download)
    test = load_dataset(args.dataset, args.data_root, train=False, download=not args.no_download)
    result = train_supervised(model, train, test, info, epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr,
                              weight_decay=args.weight_decay, device=device, seed=args.seed,
                              progress=not args.no_progress)
    save_weights(model, out)
    meta = {"model": args.model, "dataset": args.dataset, "test_acc": result["final_acc"],
            "epochs": args.epochs, "train_s": round(result["wall_s"], 1),
            "params": sum(p.numel() for p in model.parameters()),
            "command": (f"rgal train-teacher --dataset {args.dataset} --model {args.model} "
                        f"--epochs {args.epochs} --batch-size {args.batch_size} --lr {args.lr} "
                        f"--weight-decay {args.weight_decay} --seed {args.seed}"),
            "torch": torch.__version__}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"test accuracy: {result['final_acc']:.2f}%  ({args.model} on {args.dataset}, "
          f"{result['wall_s']:.0f} s) -> {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Run `rgal eval`."""
    from .data.augment import Normalize
    from .data.datasets import load_dataset
    from .train.evaluate import evaluate
    from .train.prepare import load_model_weights, resolve_weights_path
    from .utils import resolve_device

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    info, model = _dataset_and_model(args.dataset, args.data_root, args.model, "model")
    load_model_weights(model, resolve_weights_path(args.weights, args.dataset, args.model),
                       "model")
    test = load_dataset(args.dataset, args.data_root, train=False, download=not args.no_download)
    model.to(resolve_device(args.device))
    t0 = time.time()
    acc = evaluate(model, test, Normalize(info.mean, info.std), args.batch_size)
    print(f"test accuracy: {acc:.2f}%  ({args.model} on {args.dataset}, {len(test)} images, "
          f"{time.time() - t0:.1f} s)")
    return 0


COMMANDS = {"distill": cmd_distill, "bench": cmd_bench, "train-teacher": cmd_train_teacher,
            "eval": cmd_eval, "quantize": quantize_command.run,
            "incremental": incremental_command.run,
            **extra_commands.COMMANDS}  # hook: `rgal export` and `rgal report`


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input, with a one-line message)."""
    from .data.base import DatasetError
    from .losses import NonFiniteLoss
    from .models.weights import WeightsError
    from .train.distill import RunInterrupted

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["distill"]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError("choose a command: " + ", ".join(COMMANDS))
        return COMMANDS[args.command](args)
    except (UsageError, ConfigError, DatasetError, WeightsError, ValueError, KeyError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        msg = " ".join(msg.split())
        print(f"rgal: error: {msg}", file=sys.stderr)
        return 2
    except NonFiniteLoss as e:
        print(f"rgal: error: {e}; the last good checkpoint is kept: continue with --resume "
              "--allow-config-change and safer settings (e.g. a lower --lr)", file=sys.stderr)
        return 1
    except RunInterrupted as e:
        print(f"rgal: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("rgal: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script wrapper."""
    sys.exit(main())

