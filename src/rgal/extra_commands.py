"""`rgal export` (ONNX, checked with onnxruntime), `rgal report` (report.html of run folders)
and `rgal methods` (the registered methods, ablations and search spaces)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .config import ConfigError


def add_parsers(subparsers) -> None:
    """Register `export` and `report` on the CLI's sub-parsers."""
    e = subparsers.add_parser(
        "export", help="a model and weights file, or a `rgal quantize` run, to ONNX (checked "
                       "against PyTorch with onnxruntime)")
    e.add_argument("--model", help="architecture of the weights file (e.g. tinycnn)")
    e.add_argument("--weights", help="weights file (e.g. runs/demo/student.safetensors), or "
                                     "'builtin'")
    e.add_argument("--dataset", default="fashion-mnist",
                   help="dataset the model was trained for: its shapes, normalisation and "
                        "test images (default: fashion-mnist)")
    e.add_argument("--quantized", metavar="RUN_DIR",
                   help="export the quantized model of this `rgal quantize` output folder "
                        "(QuantizeLinear/DequantizeLinear graph) instead")
    e.add_argument("--out", required=True, help="ONNX file to write (.onnx)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    e.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (default 17; the quantized graph needs >= 13)")
    e.add_argument("--check-images", type=int, default=1000,
                   help="test images compared between onnxruntime and PyTorch (default 1000; "
                        "a quantized model's accuracy is always checked on its whole "
                        "evaluation split)")
    e.add_argument("--data-root", help="folder holding the dataset files")
    e.add_argument("--no-download", action="store_true", help="never download the dataset")

    r = subparsers.add_parser("report", help="write report.html of run folders (distill, "
                                             "quantize, incremental, bench) from their files")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")

    m = subparsers.add_parser("methods", help="the registered methods (README table), their "
                                              "own defaults, search spaces and ablations")
    m.add_argument("--markdown", action="store_true", help="only the README's method table")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.suffix != ".onnx":
        raise ConfigError(f"--out must end in .onnx, got {out.name!r}")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite or choose another --out")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"folder {parent} of --out does not exist")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"folder {parent} of --out is not writable")


def _print_rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")


def _eval_split(dataset: str, root: str | None, split: str, download: bool):
    """The split a run was evaluated on: `test`, or `train[-N:]` (a held-out tail)."""
    from .data.datasets import ImageTensors, load_dataset

    if split.startswith("train[-"):
        n = int(split[len("train[-"):].rstrip(":]"))
        train = load_dataset(dataset, root, train=True, download=download)
        return ImageTensors(train.images[-n:], train.labels[-n:])
    return load_dataset(dataset, root, train=False, download=download)


def run_export(args: argparse.Namespace) -> int:
    """Run `rgal export`: write the file only once onnxruntime agrees with PyTorch."""
    from .export import DEFAULT_OPSET, require_onnx

    out = Path(args.out)
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    if not 7 <= opset <= 20:
        raise ConfigError(f"--opset must be in 7..20, got {opset}")
    if args.check_images < 1:
        raise ConfigError(f"--check-images must be >= 1, got {args.check_images}")
    if args.quantized and (args.model or args.weights):
        raise ConfigError("--quantized takes the model from the run folder; drop --model and "
                          "--weights")
    if not args.quantized and not (args.model and args.weights):
        raise ConfigError("give --model and --weights (or --quantized RUN_DIR)")
    _check_out(out, args.overwrite)
    require_onnx()
    tmp = out.parent / f".{out.name}.{os.getpid()}.part"
    try:
        if args.quantized:
            rows = _export_quantized(args, tmp, opset)
        else:
            rows = _export_float(args, tmp, opset)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    size = out.stat().st_size / 1024
    _print_rows([("onnx file", f"{out} ({size:.0f} KiB, opset {opset})"), *rows])
    return 0


def _export_float(args: argparse.Namespace, tmp: Path, opset: int) -> list[tuple[str, str]]:
    from .data.datasets import describe_dataset, load_dataset
    from .export import check_fp32, export_onnx, unit_images, verify_onnx
    from .models.build import build_model, load_model_weights, resolve_weights_path

    info = describe_dataset(args.dataset, args.data_root)
    model = build_model(args.model, info.num_classes, info.channels, "model")
    load_model_weights(model, resolve_weights_path(args.weights, args.dataset, args.model),
                       "model")
    test = load_dataset(args.dataset, args.data_root, train=False,
                        download=not args.no_download)
    images = unit_images(test.images[:args.check_images])
    labels = test.labels[:args.check_images]
    stats = (info.mean, info.std)
    export_onnx(model, images[:2], tmp, opset, normalize=stats, what=args.model)
    check = verify_onnx(tmp, model, images, labels, normalize=stats)
    check_fp32(check)
    return [
        ("model", f"{args.model} for {args.dataset}, fp32; input images [N, {info.channels}, "
                  f"{info.image_size}, {info.image_size}] in [0, 1], output logits "
                  f"[N, {info.num_classes}]"),
        ("logits vs PyTorch", f"{check.images} test images: max abs diff "
                              f"{check.max_abs_diff:.2e}, relative {check.rel_diff:.2e} "
                              f"(limit 1e-04)"),
        ("accuracy", f"onnxruntime {check.ort_acc:.2f}%, PyTorch {check.torch_acc:.2f}% "
                     f"(the same {check.images} images)"),
    ]


def _export_quantized(args: argparse.Namespace, tmp: Path, opset: int) -> list[tuple[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .data.datasets import describe_dataset
    from .export import (
        ACC_TOLERANCE,
        ExportError,
        export_quantized_onnx,
        qdq_counts,
        quantized_from_state,
        unit_images,
        verify_onnx,
    )
    from .models.build import build_model

    run = Path(args.quantized)
    summary_path, int_path = run / "summary.json", run / "quantized_int.safetensors"
    if not summary_path.is_file() or not int_path.is_file():
        raise ConfigError(f"{run} is not a finished `rgal quantize` folder (summary.json and "
                          "quantized_int.safetensors needed)")
    try:
        summary = json.loads(summary_path.read_text())
        cfg = summary["config"]
        model_name, dataset = cfg["model"], cfg["dataset"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{summary_path} is not a `rgal quantize` summary ({e})") from None
    root = args.data_root or (cfg.get("data_root") if cfg.get("data_root") and
                              Path(cfg["data_root"]).is_dir() else None)
    info = describe_dataset(dataset, root)
    model = build_model(model_name, info.num_classes, info.channels, "model")
    try:
        state = load_file(str(int_path))
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"{int_path}: cannot read ({e})") from None
    q = quantized_from_state(model, state)
    split = summary.get("eval_split", "test")
    data = _eval_split(dataset, root, split, not args.no_download)
    images, labels = unit_images(data.images), data.labels
    stats = (info.mean, info.std)
    export_quantized_onnx(q, images[:2], tmp, opset, normalize=stats,
                          what=f"quantized {model_name}")
    check = verify_onnx(tmp, q, images, labels, normalize=stats)
    quant_acc = summary.get("quant_acc")
    gap = abs(check.ort_acc - quant_acc) if isinstance(quant_acc, (int, float)) else None
    if gap is not None and gap > ACC_TOLERANCE:
        raise ExportError(f"onnxruntime accuracy {check.ort_acc:.2f}% is {gap:.2f} points from "
                          f"the run's quant_acc {quant_acc:.2f}% (limit {ACC_TOLERANCE})")
    nodes = qdq_counts(tmp)
    bits = f"W{summary.get('wbits', '?')}A{summary.get('abits', '?')}"
    return [
        ("model", f"{model_name} {bits} ({summary.get('method', '?')}) for {dataset}; input "
                  f"images in [0, 1]"),
        ("graph", f"{nodes.get('QuantizeLinear', 0)} QuantizeLinear, "
                  f"{nodes.get('DequantizeLinear', 0)} DequantizeLinear, "
                  f"{nodes.get('Clip', 0)} Clip"),
        ("logits vs PyTorch", f"{check.images} {split} images: max abs diff "
                              f"{check.max_abs_diff:.2e}, relative {check.rel_diff:.2e}; "
                              f"{check.images_differ} images beyond 1e-04 relative (an "
                              f"activation within rounding error of a grid midpoint takes the "
                              f"neighbouring code); "
                              f"same top-1 class on {check.top1_agreement:.2f}%"),
        ("accuracy", f"onnxruntime {check.ort_acc:.2f}%, PyTorch {check.torch_acc:.2f}%"
                     + (f", the run's quant_acc {quant_acc:.2f}% (difference {gap:.2f}, "
                        f"limit {ACC_TOLERANCE})" if gap is not None else "")),
    ]


def run_report(args: argparse.Namespace) -> int:
    """Run `rgal report`: write report.html in every folder given."""
    from .engine.html_report import write_report

    for d in args.run_dirs:
        if not Path(d).is_dir():
            raise ConfigError(f"{d} is not a folder")
    for d in args.run_dirs:
        print(write_report(d))
    return 0


def run_methods(args: argparse.Namespace) -> int:
    """Run `rgal methods`."""
    from .methods import get_method, list_ablations, list_methods
    from .methods.registry import method_table

    print(method_table(), end="")
    if args.markdown:
        return 0
    print("\nOwn defaults (applied under your settings) and `rgal bench --search` spaces:")
    for name in list_methods():
        cls = get_method(name)
        print(f"  {name}: defaults {cls.defaults or '{}'}")
        if cls.search:
            print(f"  {' ' * len(name)}  search {list(cls.search)}")
    print("\nAblations (`rgal bench --methods NAME`):")
    for name, overrides in list_ablations().items():
        print(f"  {name}: {overrides}")
    return 0


COMMANDS = {"export": run_export, "report": run_report, "methods": run_methods}
