"""The `rgal` command: train-teacher, distill, eval."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import compat, extra_commands
from ._version import __version__
from .cliargs import add_config_arguments, config_layers, print_table
from .config import ConfigError, load_yaml, parse_set
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

    from .methods.registry import all_keys

    d = sub.add_parser("distill", help="data-free distillation of a teacher into a student")
    add_config_arguments(d, all_keys().values(), skip=())
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
    b.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5: the fewest a "
                   "claim rests on)")
    b.add_argument("--first-seed", type=int, default=0,
                   help="the seeds are S..S+N-1 (default 0). A data-free run trains the same "
                        "student whatever --holdout says, so screen or search on seeds the "
                        "test-set runs will not use")
    b.add_argument("--out", required=True, help="bench folder")
    b.add_argument("--config", help="YAML of distill keys shared by every run")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a shared distill key (e.g. epochs=20); repeatable")
    b.add_argument("--data-root")
    b.add_argument("--resume", action="store_true",
                   help="continue a bench in --out: finished runs are kept, others resumed")
    b.add_argument("--jobs", type=int, default=1,
                   help="runs at once, each in its own process with one thread (default 1)")
    b.add_argument("--search", action="store_true",
                   help="instead of the comparison: try every configuration of each method's "
                        "search space on held-out training images (needs --set holdout=N) "
                        "and write the best of each to OUT/tuned.yaml")
    b.add_argument("--tuned", default="auto",
                   help="each method's own hyper-parameters: auto (the settings shipped for "
                        "this dataset, teacher and student, if any), none (the methods' "
                        "defaults), or a tuned.yaml written by --search")
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
    t.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    t.add_argument("--out", required=True, help="weights file (.safetensors or .pth); its "
                                                "checkpoint is OUT.checkpoint.pt beside it")
    t.add_argument("--overwrite", action="store_true")
    t.add_argument("--resume", action="store_true",
                   help="continue from OUT.checkpoint.pt (written after every epoch)")
    t.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("eval", help="test accuracy of a weights file")
    e.add_argument("--model", required=True)
    e.add_argument("--weights", required=True, help="weights file, or 'builtin'")
    e.add_argument("--dataset", required=True)
    e.add_argument("--data-root")
    e.add_argument("--no-download", action="store_true", help="never download the dataset")
    e.add_argument("--device", default="auto")
    e.add_argument("--batch-size", type=int, default=1000)
    e.add_argument("--per-class", action="store_true",
                   help="also print each class's accuracy and what it is mistaken for")
    e.add_argument("--confusion", metavar="PNG",
                   help="also draw the confusion matrix (rows: true class, in %%) to this new file")
    quantize_command.add_parser(sub)
    incremental_command.add_parser(sub)
    extra_commands.add_parsers(sub)
    return p


def cmd_distill(args: argparse.Namespace) -> int:
    """Run `rgal distill`."""
    from .train.distill import run_distillation
    from .train.prepare import config_for_run, prepare_distillation

    if args.allow_config_change and not args.resume:
        raise UsageError("--allow-config-change only applies with --resume")
    cfg, state = config_for_run(config_layers(args), resume=args.resume,
                                allow_change=args.allow_config_change)
    from .distributed import init_from_env, is_main, leaving_when_done

    setup = prepare_distillation(cfg, overwrite=args.overwrite, resume_state=state,
                                 resume=args.resume)
    setup.device = init_from_env(setup.device)  # torchrun: join the process group
    with leaving_when_done():
        if args.resume and state is None and is_main():
            print(f"rgal: no checkpoint in {cfg.out}; starting from epoch 1", file=sys.stderr)
        summary = run_distillation(setup)
    if not summary:  # not the writing rank
        return 0
    from .engine.html_report import split_name

    split = split_name(cfg.holdout)
    print_table([
        ("teacher", f"{cfg.teacher} ({summary['teacher_params'] / 1e6:.2f}M params)"),
        ("student", f"{cfg.student} ({summary['student_params'] / 1e6:.3f}M params)"),
        (f"teacher {split} acc", f"{summary['teacher_acc']:.2f}%"),
        (f"student {split} acc (last)", f"{summary['final_acc']:.2f}%"),
        (f"student {split} acc (best)",
         f"{summary['best_acc']:.2f}% (epoch {summary['best_epoch']})"),
        ("images synthesized", f"{summary['images_synthesized']}"),
        ("time", f"{summary['wall_s']:.0f} s (synthesis {summary['synthesis_s']:.0f} s, "
                 f"student {summary['distill_s']:.0f} s, eval {summary['eval_s']:.0f} s)"),
        ("outputs", str(setup.out)),
    ])
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run `rgal bench` (or its hyper-parameter search)."""
    import shutil

    from .engine import check_output_dir
    from .methods import distill_config
    from .train import bench

    if not 1 <= args.seeds <= 100:
        raise ConfigError(f"--seeds must be in 1..100, got {args.seeds}")
    if not 0 <= args.first_seed <= 2**31 - 101:
        raise ConfigError(f"--first-seed must be in 0..{2**31 - 101}, got {args.first_seed}")
    if not 1 <= args.jobs <= 64:
        raise ConfigError(f"--jobs must be in 1..64, got {args.jobs}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"bench path {out} exists and is not a folder")
    if not args.resume and any((out / name).exists() for name in bench.RESULTS):
        raise ConfigError(f"{out} already holds a bench; pass --resume to continue it or "
                          "choose another --out")
    entries = ([e.strip() for e in args.methods.split(",") if e.strip()] if args.methods
               else None)
    if entries == []:
        raise ConfigError("--methods lists no entry")
    shared = {**bench.DEFAULT_BUDGET, **(load_yaml(args.config) if args.config else {})}
    if args.data_root:
        shared["data_root"] = args.data_root
    layers = [shared, parse_set(args.set)]
    setting = distill_config(*layers, lenient=True, under=bench.SUITE_SHARED)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    if args.search:
        if setting.holdout <= 0:
            raise ConfigError("--search chooses settings on held-out training images, never on "
                              "the test set: pass --set holdout=N")
        if args.tuned != "auto":
            raise ConfigError("--search starts from each method's defaults; drop --tuned")
        plan = bench.search_entries(entries or bench.default_search_methods())
        runs = bench.plan_runs([e for _, _, e in plan], seeds, out, layers)
        write, summary = bench.search_writer(plan), "search.md"
    else:
        tuned_file = (None if args.tuned == "none" else
                      bench.tuned_path(setting.dataset, setting.teacher, setting.student)
                      if args.tuned == "auto" else Path(args.tuned))
        if args.tuned not in ("auto", "none") and not tuned_file.is_file():
            raise ConfigError(f"tuned settings {tuned_file} not found")
        tuned = (bench.load_tuned(tuned_file) if tuned_file and tuned_file.is_file()
                 else None)
        runs = bench.plan_runs(entries or list(bench.default_suite()), seeds, out, layers,
                               tuned=tuned["methods"] if tuned else None)
        write, summary = bench.write_results, "results.md"
    check_output_dir(out, (), overwrite=True)
    if not args.search:
        if tuned:
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tuned_file, out / "tuned.yaml")
            print(f"rgal: each method's own settings from {tuned_file}", file=sys.stderr)
        elif (out / "tuned.yaml").exists():
            (out / "tuned.yaml").unlink()
    rows = bench.run_bench(runs, out, progress=not args.no_progress, jobs=args.jobs,
                           write=write)
    print((out / summary).read_text())
    print(f"{len(rows)} runs -> {out}")
    return 0


def _dataset_and_model(dataset: str, data_root: str | None, model: str, role: str):
    from .data.datasets import describe_dataset
    from .models.build import build_model

    info = describe_dataset(dataset, data_root)
    return info, build_model(model, info.num_classes, info.channels, role)


def cmd_train_teacher(args: argparse.Namespace) -> int:
    """Run `rgal train-teacher`."""
    import torch

    from .data.splits import evaluation_split
    from .engine import RunFolder, check_resumable, load_checkpoint
    from .models.weights import save_weights
    from .train.teacher import train_supervised
    from .utils import resolve_device, seed_everything

    for name, val in (("epochs", args.epochs), ("batch-size", args.batch_size)):
        if val < 1:
            raise ConfigError(f"--{name} must be >= 1, got {val}")
    if not args.lr > 0 or args.weight_decay < 0:
        raise ConfigError("--lr must be > 0 and --weight-decay >= 0")
    out = Path(args.out)
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite or choose another --out")
    if out.suffix not in (".safetensors", ".pth", ".pt"):
        raise ConfigError(f"--out must end in .safetensors, .pth or .pt, got {out.name!r}")
    config = {k: getattr(args, k) for k in ("dataset", "model", "epochs", "batch_size", "lr",
                                            "weight_decay", "seed", "precision")}
    ckpt = f"{out.name}.checkpoint.pt"
    state = None
    if args.resume and (out.parent / ckpt).exists():
        state = load_checkpoint(out.parent / ckpt)
        check_resumable(state["config"], config, False, out.parent / ckpt)
    device = resolve_device(args.device)
    seed_everything(args.seed)
    info, model = _dataset_and_model(args.dataset, args.data_root, args.model, "teacher")
    train, test = evaluation_split(args.dataset, args.data_root, download=not args.no_download,
                                   need_train=True, info=info)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = train_supervised(model, train, test, info, epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr,
                              weight_decay=args.weight_decay, device=device, seed=args.seed,
                              progress=not args.no_progress, precision=args.precision,
                              folder=RunFolder(out.parent), config=config, resume_state=state,
                              checkpoint=ckpt, metrics=f"{out.name}.metrics.jsonl")
    save_weights(model, out)
    meta = {"model": args.model, "dataset": args.dataset, "test_acc": result["final_acc"],
            "epochs": args.epochs, "train_s": round(result["wall_s"], 1),
            "params": sum(p.numel() for p in model.parameters()),
            "command": (f"rgal train-teacher --dataset {args.dataset} --model {args.model} "
                        f"--epochs {args.epochs} --batch-size {args.batch_size} --lr {args.lr} "
                        f"--weight-decay {args.weight_decay} --seed {args.seed}"),
            "torch": torch.__version__}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    (out.parent / ckpt).unlink(missing_ok=True)
    print(f"test accuracy: {result['final_acc']:.2f}%  ({args.model} on {args.dataset}, "
          f"{result['wall_s']:.0f} s) -> {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Run `rgal eval`."""
    from .data.augment import Normalize
    from .data.datasets import load_dataset
    from .engine.evaluate import accuracy, confusion_matrix, per_class_rows, plot_confusion, predict
    from .models.build import load_model_weights, resolve_weights_path
    from .utils import resolve_device

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    picture = Path(args.confusion) if args.confusion else None
    if picture is not None:  # refused before any work, and nothing is overwritten
        if picture.suffix.lower() != ".png":
            raise ConfigError(f"--confusion {picture}: give a .png file name")
        if picture.exists():
            raise ConfigError(f"--confusion {picture} exists; give a new file name")
        if not picture.parent.is_dir():
            raise ConfigError(f"--confusion {picture}: folder {picture.parent} does not exist")
    info, model = _dataset_and_model(args.dataset, args.data_root, args.model, "model")
    load_model_weights(model, resolve_weights_path(args.weights, args.dataset, args.model),
                       "model")
    test = load_dataset(args.dataset, args.data_root, train=False, download=not args.no_download)
    model.to(resolve_device(args.device))
    t0 = time.time()
    preds = predict(model, test, Normalize(info.mean, info.std), args.batch_size).cpu()
    acc = accuracy(preds, test.labels)
    print(f"test accuracy: {acc:.2f}%  ({args.model} on {args.dataset}, {len(test)} images, "
          f"{time.time() - t0:.1f} s)")
    if args.per_class or picture is not None:
        cm = confusion_matrix(preds, test.labels, info.num_classes)
    if args.per_class:
        rows = per_class_rows(cm, info.classes)
        width = max(len("class"), *(len(r["class"]) for r in rows))
        print(f"{'class':<{width}}  images     acc  predicted  most often mistaken for")
        for r in rows:
            mistake = f"{r['mistaken_for']} ({r['mistaken_pct']:.1f}%)" if r["mistaken_for"] else "-"
            print(f"{r['class']:<{width}}  {r['images']:>6}  {r['acc']:5.1f}%  {r['predicted']:8.1f}%"
                  f"  {mistake}")
    if picture is not None:
        plot_confusion(picture, cm, info.classes,
                       f"{args.model} on {args.dataset} test: {acc:.2f}%")
        print(f"confusion matrix -> {picture}")
    return 0


COMMANDS = {"distill": cmd_distill, "bench": cmd_bench, "train-teacher": cmd_train_teacher,
            "eval": cmd_eval, "quantize": quantize_command.run,
            "incremental": incremental_command.run, **extra_commands.COMMANDS}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input, with a one-line message)."""
    from .data.base import DatasetError
    from .engine import RunInterrupted
    from .losses import NonFiniteLoss
    from .models.weights import WeightsError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["distill"]
    parser = build_parser()
    try:
        notes = None
        if argv[0] == "distill" and compat.uses_reference_flags(argv[1:]):
            argv, notes = compat.translate(argv[1:])
        args = parser.parse_args(argv)
        if notes is not None:  # after parsing: a bad command line gets its one error line only
            print("rgal: note: read as the reference code's command line (its defaults for "
                  "what it leaves out)" + "".join(f"; {n}" for n in notes), file=sys.stderr)
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

