"""The Python API: data-free distillation, quantization and synthesis for any classifier.

    import rgal
    result = rgal.distill(my_teacher, my_student, data=(test_images, test_labels),
                          method="rgal", epochs=20)
    result.student, result.history, result.final_acc

`data` is a dataset name (`"cifar10"`, read like the CLI reads it), an `(images, labels)` pair
of test tensors (uint8 0..255 or float 0..1, NCHW), or an `ImageSpec` (shape and
normalisation only: nothing is evaluated). `out=None` writes no file; a folder gets the usual
run outputs and makes the run resumable (`resume=True`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import ConfigError, DistillConfig, legacy_values
from .data.datasets import DatasetInfo, ImageTensors, describe_dataset
from .data.splits import check_labels, evaluation_split
from .engine import CHECKPOINT, check_resumable, load_checkpoint

__all__ = ["DistillResult", "ImageSpec", "QuantizeResult", "distill", "quantize", "synthesize"]


@dataclass
class ImageSpec:
    """What a model's inputs look like, when there is no test set to read it from.

    `mean`/`std` normalise images in [0, 1] per channel; `crop_padding` and `hflip` set the
    augmentation (default: an eighth of the side, and flips).
    """

    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int | None = None
    crop_padding: int | None = None
    hflip: bool = True
    classes: tuple[str, ...] = ()


@dataclass
class DistillResult:
    """The trained student, the per-epoch history and the accuracies (None without test data)."""

    student: nn.Module
    history: list[dict[str, Any]]
    final_acc: float | None
    best_acc: float | None
    teacher_acc: float | None
    summary: dict[str, Any] = field(repr=False)
    out: Path | None = None


@dataclass
class QuantizeResult:
    """The fake-quantized model, its accuracies and the fine-tuning history."""

    model: nn.Module
    quant_acc: float | None
    fp_acc: float | None
    weights_only_acc: float | None
    history: list[dict[str, Any]]
    summary: dict[str, Any] = field(repr=False)
    out: Path | None = None


def _num_classes(model: nn.Module, channels: int, size: int) -> int:
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        k = model(torch.zeros(2, channels, size, size, device=device)).shape[1]
    model.train(was)
    return int(k)


def _as_uint8(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images
    return images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def _resolve_data(data: Any, model: nn.Module, data_root: str | None, holdout: int,
                  download: bool) -> tuple[DatasetInfo, ImageTensors | None, str]:
    """(dataset info, evaluation split or None, dataset name for the config)."""
    if isinstance(data, str):
        info = describe_dataset(data, data_root)
        _, evaluation = evaluation_split(data, data_root, holdout=holdout, download=download,
                                         info=info)
        return info, evaluation, data
    if isinstance(data, ImageSpec):
        k = data.num_classes or _num_classes(model, data.channels, data.size)
        info = DatasetInfo("custom", k, data.channels, data.size, tuple(data.mean),
                           tuple(data.std), data.crop_padding if data.crop_padding is not None
                           else max(1, data.size // 8), data.hflip, tuple(data.classes))
        return info, None, "custom"
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
        if not (isinstance(images, torch.Tensor) and images.dim() == 4
                and images.shape[2] == images.shape[3]):
            raise ConfigError("data images must be a tensor of square images (N, C, H, H)")
        labels = torch.as_tensor(labels).long().flatten()
        if labels.shape[0] != images.shape[0]:
            raise ConfigError(f"data has {images.shape[0]} images but {labels.shape[0]} labels")
        images = _as_uint8(images).cpu()
        c, size = images.shape[1], images.shape[2]
        x = images.float().div(255)
        mean = tuple(float(v) for v in x.mean((0, 2, 3)))
        std = tuple(max(float(v), 1e-3) for v in x.std((0, 2, 3)))
        k = _num_classes(model, c, size)
        info = DatasetInfo("custom", k, c, size, mean, std, max(1, size // 8), True)
        split = ImageTensors(images, labels.cpu())
        check_labels(split, info, "data labels")
        return info, split, "custom"
    raise ConfigError("data must be a dataset name, an (images, labels) pair or an ImageSpec")


def _prepare_out(out: str | Path | None, folder_of, overwrite: bool, resume: bool
                 ) -> tuple[Any, dict | None]:
    folder = folder_of(str(out) if out is not None else None)
    state = None
    if out is not None and resume and (Path(out) / CHECKPOINT).exists():
        state = load_checkpoint(Path(out) / CHECKPOINT)
    folder.check(overwrite or resume)
    return folder, state


def distill(teacher: nn.Module, student: nn.Module, data: Any = "fashion-mnist", *,
            method: str = "rgal", out: str | Path | None = None, resume: bool = False,
            overwrite: bool = False, **settings: Any) -> DistillResult:
    """Distil `teacher` into `student` without training images; return the trained student.

    `settings` are `rgal distill` config keys (`epochs=20`, `w_rel_syn=0.2`, `device="cuda"`);
    the method's own defaults apply under them. BatchNorm layers of the teacher (needed for
    the BN-statistics loss) and the penultimate feature (the input of its last nn.Linear) are
    found automatically.
    """
    from .methods import distill_config, get_method
    from .models.build import require_batchnorm
    from .train.distill import (
        DistillSetup,
        finish_distillation,
        run_folder,
        start_distillation,
    )
    from .utils import resolve_device, seed_everything

    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other")
    layers = {"method": method, **settings, "out": str(out) if out is not None else "-",
              "teacher": type(teacher).__name__, "student": type(student).__name__,
              "teacher_weights": "(in memory)"}
    cfg = distill_config(layers)
    get_method(cfg.method).check_settings(cfg)
    device = resolve_device(cfg.device)
    teacher.to(device)
    info, test, name = _resolve_data(data, teacher, cfg.data_root, cfg.holdout, cfg.download)
    cfg.dataset = name
    if cfg.w_bn > 0 and get_method(cfg.method).source != "real":
        require_batchnorm(teacher, f"teacher {cfg.teacher}",
                          f"method {cfg.method} needs BN statistics (w_bn > 0)")
    if get_method(cfg.method).source == "real":
        raise ConfigError(f"method {cfg.method} trains on real images; use the CLI with a "
                          "dataset name for it")
    folder, state = _prepare_out(out, run_folder, overwrite, resume)
    if state is not None:
        check_resumable(state["config"], cfg.to_dict(), False, Path(out) / CHECKPOINT,
                        legacy_values(DistillConfig))
    seed_everything(cfg.seed)
    setup = DistillSetup(cfg, info, teacher, student, test, device, folder, state)
    job, loop = start_distillation(setup)
    loop.run()
    summary = finish_distillation(setup, job, loop)
    return DistillResult(student, loop.history, summary["final_acc"], summary["best_acc"],
                         summary["teacher_acc"], summary, Path(out) if out is not None else None)


def quantize(model: nn.Module, data: Any = "fashion-mnist", *, method: str = "gdfq+rgal",
             wbits: int = 4, abits: int = 4, out: str | Path | None = None,
             resume: bool = False, overwrite: bool = False, **settings: Any) -> QuantizeResult:
    """A fake-quantized copy of `model` (W`wbits`A`abits`), calibrated or fine-tuned on
    synthetic images. `settings` are `rgal quantize` config keys."""
    from .config import build_config
    from .models.build import require_batchnorm
    from .quantization.config import QuantizeConfig, build_quantize_config
    from .quantization.methods import QuantizeSetup, quantize_folder, run_quantization
    from .utils import resolve_device

    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other")
    layers = {"method": method, "wbits": wbits, "abits": abits, **settings,
              "out": str(out) if out is not None else "-", "model": type(model).__name__,
              "weights": "(in memory)"}
    build_config(QuantizeConfig, layers)  # unknown keys fail before any work
    cfg = build_quantize_config(layers)
    if cfg.method == "ptq-real":
        raise ConfigError("ptq-real calibrates on real training images; use the CLI with a "
                          "dataset name for it")
    device = resolve_device(cfg.device)
    model.to(device)
    info, evaluation, name = _resolve_data(data, model, cfg.data_root, cfg.holdout,
                                           cfg.download)
    cfg.dataset = name
    if cfg.method.startswith("gdfq"):
        require_batchnorm(model, cfg.model, f"{cfg.method} needs BN statistics")
    folder, state = _prepare_out(out, quantize_folder, overwrite, resume)
    if state is not None:
        check_resumable(state["config"], cfg.to_dict(), False, Path(out) / CHECKPOINT)
    setup = QuantizeSetup(cfg, info, model, evaluation, None, device, folder, state)
    s = run_quantization(setup)
    q, history = s.pop("_model"), s.pop("_history")
    return QuantizeResult(q, s["quant_acc"], s["fp_acc"], s["weights_only_acc"], history, s,
                          Path(out) if out is not None else None)


def synthesize(teacher: nn.Module, n: int, data: Any = "fashion-mnist", *,
               method: str = "rgal", student: nn.Module | None = None,
               out: str | Path | None = None, overwrite: bool = False,
               **settings: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` synthetic images (float in [0, 1], NCHW, on the CPU) and the teacher's labels of
    them: a calibration set for a quantization toolchain of your own.

    Runs the synthesis phases of an inversion method (`rgal`, `deepinv`, `cmi`, `fast`, ...)
    until `n` images are kept. Without a `student`, the teacher itself plays the student: the
    adversarial term vanishes and RGAL's relation loss spreads each class in the teacher's own
    feature space. With `out`, the images are also written as PNG files, one folder per class
    (`out/<class>/<i>.png`), with `labels.csv` and `synthetic.safetensors`.
    """
    from .data.augment import Augment
    from .engine import RunFolder
    from .methods import distill_config, get_method, method_context
    from .models.build import require_batchnorm
    from .models.features import FeatureExtractor, freeze
    from .utils import resolve_device, seed_everything

    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    cfg = distill_config({"method": method, **settings, "out": str(out) if out else "-"})
    cls = get_method(cfg.method)
    cls.check_settings(cfg)
    if cls.source != "pool":
        raise ConfigError(f"synthesize needs an inversion method (one that keeps images: "
                          f"rgal, deepinv, cmi, fast, ...), not {cfg.method}")
    folder = RunFolder(out, ("labels.csv", "synthetic.safetensors"))
    folder.check(overwrite)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    teacher = freeze(teacher.to(device))
    info, _, _ = _resolve_data(data, teacher, cfg.data_root, 0, cfg.download)
    if cfg.w_bn > 0:
        require_batchnorm(teacher, "teacher", f"method {cfg.method} needs BN statistics")
    plays_student = student if student is not None else teacher
    plays_student.to(device)
    augment = Augment(info.mean, info.std, info.crop_padding, info.hflip).to(device)
    t_ext, s_ext = FeatureExtractor(teacher), FeatureExtractor(plays_student)
    synthesizer = cls(method_context(cfg, t_ext, s_ext, augment, info, device))
    phases = math.ceil(n / cfg.synthesis_batch_size)
    kept = []
    for _ in tqdm(range(phases), desc="synthesize", disable=not cfg.progress):
        kept.append(synthesizer.synthesize().images.detach().float().clamp(0, 1))
    images = torch.cat(kept)[:n]
    with torch.no_grad():
        labels = torch.cat([teacher(augment.normalize(images[i:i + 1000])).argmax(1)
                            for i in range(0, n, 1000)])
    t_ext.remove()
    s_ext.remove()
    images, labels = images.cpu(), labels.cpu()
    if folder:
        _write_image_folder(folder.path, images, labels, info)
    return images, labels


def _write_image_folder(root: Path, images: torch.Tensor, labels: torch.Tensor,
                        info: DatasetInfo) -> None:
    from PIL import Image
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    names = info.classes or tuple(str(c) for c in range(info.num_classes))
    uint8 = _as_uint8(images)
    rows = ["file,label,class"]
    for i, (img, y) in enumerate(zip(uint8, labels.tolist(), strict=True)):
        cls_name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in names[y])
        path = Path(cls_name) / f"{i:06d}.png"
        (root / cls_name).mkdir(exist_ok=True)
        arr = img.permute(1, 2, 0).numpy()
        Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(root / path)
        rows.append(f"{path.as_posix()},{y},{names[y]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    save_file({"images": uint8.contiguous(), "labels": labels.contiguous()},
              str(root / "synthetic.safetensors"))
