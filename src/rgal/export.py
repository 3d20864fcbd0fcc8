"""ONNX export of students, zoo models and quantized models, checked with onnxruntime.

`export_onnx` writes a float model; `export_quantized_onnx` writes a `QuantizedModel` in the
standard QDQ form; `verify_onnx` runs a written file with onnxruntime on real images and
compares it with PyTorch. Needs the optional extra: `pip install "rgal[onnx]"`.

The quantized graph
-------------------
A `QuantizedModel` has per-output-channel weight grids and per-tensor activation grids of
2 to 8 bits (codes 0..2^b-1 with a zero point). ONNX's QuantizeLinear/DequantizeLinear only
have 8-bit integer types at the opsets onnxruntime runs everywhere (4-bit types need opset 21;
2 and 3 bits have none), so the graph keeps the b-bit grids exactly inside 8-bit types:

- **weights:** the integer codes are stored as uint8 initializers (values 0..2^b-1), with a
  float32 scale and a uint8 zero point per output channel, and feed the Conv/Gemm through
  `DequantizeLinear(axis=0)`. Dequantized, they equal the fake-quantized weights.
- **activations:** after every ReLU call, `Clip` to the b-bit grid's range
  [(0 - zp)·scale, (2^b - 1 - zp)·scale], then `QuantizeLinear` -> `DequantizeLinear` with a
  uint8 zero point. The Clip makes QuantizeLinear saturate at 2^b - 1 instead of 255, so the
  codes are exactly the b-bit ones (at 8 bits the Clip is left out).

BatchNorm stays in float, as in the PyTorch model. The graph is written by PyTorch's
TorchScript exporter (`dynamo=False`): the quantize and dequantize steps are autograd
functions whose ONNX forms are given by their `symbolic` methods.
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError

INSTALL_HINT = 'pip install "rgal[onnx]"'
DEFAULT_OPSET = 17
FP32_RTOL = 1e-4  # fp32 export: max |ORT - PyTorch| relative to the largest |logit|
ACC_TOLERANCE = 0.5  # quantized export: ORT accuracy within this many points of quant_acc


class ExportError(ConfigError):
    """A model that cannot be exported, or an export whose check against PyTorch failed."""


def require_onnx() -> None:
    """Raise ConfigError (one line, saying what to install) unless onnx and onnxruntime import."""
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"ONNX export needs {' and '.join(missing)}; install with: "
                          f"{INSTALL_HINT}")


# ----------------------------------------------------------------------------- float export

_OP_PATTERNS = (re.compile(r"operator '([\w:.]+)'"), re.compile(r"\b((?:aten|prim|onnx)::\w+)"))


def _one_line(e: BaseException) -> str:
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return first[:240]


def _export_error(e: BaseException, what: str, opset: int) -> ExportError:
    text = str(e)
    for pattern in _OP_PATTERNS:
        m = pattern.search(text)
        if m:
            return ExportError(f"cannot export {what} to ONNX: operator {m.group(1)} is not "
                               f"supported at opset {opset}")
    return ExportError(f"cannot export {what} to ONNX: {_one_line(e)}")


def _torch_export(model: nn.Module, example: torch.Tensor, path: Path, opset: int,
                  what: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=["images"], output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    except Exception as e:  # the exporter raises many types; report them in one line
        raise _export_error(e, what, opset) from e


Stats = tuple[tuple[float, ...], tuple[float, ...]]


def with_normalize(model: nn.Module, normalize: Stats | None) -> nn.Module:
    """`model` preceded by the dataset's (mean, std) normalisation, if one is given."""
    if normalize is None:
        return model
    from .data.augment import Normalize

    return nn.Sequential(Normalize(*normalize), model)


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path,
                opset: int = DEFAULT_OPSET, normalize: Stats | None = None,
                what: str | None = None) -> Path:
    """Write `model` (eval mode, on the CPU) as ONNX: input `images` [N, C, H, W], output
    `logits` [N, classes], any batch size.

    With `normalize=(mean, std)` the graph starts with the dataset's normalisation and takes
    images in [0, 1] (uint8 pixels / 255); without, it takes what `model` takes. `example` is
    one batch of that input. An operator the exporter cannot write raises ExportError naming
    it, and no file is left behind.
    """
    require_onnx()
    path = Path(path)
    what = what or type(model).__name__
    model = with_normalize(copy.deepcopy(model).cpu().eval(), normalize).eval()
    tmp = _temp_beside(path)
    try:
        _torch_export(model, example.detach().cpu().float(), tmp, opset, what)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _temp_beside(path: Path) -> Path:
    """An empty temporary file next to `path`, readable as an ordinary new file would be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


# ----------------------------------------------------------------------------- quantized export

class _DequantizeWeight(torch.autograd.Function):
    """(codes - zero_point) * scale per output channel; ONNX: DequantizeLinear(axis=0)."""

    @staticmethod
    def forward(ctx, codes, scale, zero_point):  # noqa: D102
        shape = (-1,) + (1,) * (codes.dim() - 1)
        return (codes.float() - zero_point.float().view(shape)) * scale.view(shape)

    @staticmethod
    def symbolic(g, codes, scale, zero_point):  # noqa: D102
        return g.op("DequantizeLinear", codes, scale, zero_point, axis_i=0)


class _QuantizeActivation(torch.autograd.Function):
    """Per-tensor fake quantization onto the b-bit grid; ONNX: Clip, QuantizeLinear, Dequantize."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, lo, hi, qmax):  # noqa: D102
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point.to(torch.int32), 0,
                                                     qmax)

    @staticmethod
    def symbolic(g, x, scale, zero_point, lo, hi, qmax):  # noqa: D102
        if qmax < 255:
            x = g.op("Clip", x, lo, hi)
        q = g.op("QuantizeLinear", x, scale, zero_point)
        return g.op("DequantizeLinear", q, scale, zero_point)


class DequantLayer(nn.Module):
    """A Conv2d or Linear whose weight is held as integer codes with per-channel scale/zero point."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, codes: torch.Tensor, scale: torch.Tensor,
                 zero_point: torch.Tensor, bits: int) -> None:
        super().__init__()
        if codes.shape != layer.weight.shape:
            raise ValueError(f"integer weight of shape {tuple(codes.shape)} does not fit a "
                             f"layer of shape {tuple(layer.weight.shape)}")
        self.layer = layer
        self.bits = int(bits)
        self.register_buffer("codes", codes.to(torch.uint8).clone())
        self.register_buffer("scale", scale.float().reshape(-1).clone())
        self.register_buffer("zero_point", zero_point.to(torch.uint8).reshape(-1).clone())

    def weight(self) -> torch.Tensor:
        """The dequantized weight."""
        return _DequantizeWeight.apply(self.codes, self.scale, self.zero_point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight()
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)


class FixedActQuant(nn.Module):
    """A frozen per-tensor activation quantizer (scale, zero point, bits)."""

    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor, bits: int) -> None:
        super().__init__()
        self.bits = int(bits)
        self.calibrating = False
        qmax = 2 ** self.bits - 1
        scale = scale.float().reshape(())
        zp = zero_point.reshape(()).to(torch.int64)
        if not 0 <= int(zp) <= qmax:
            raise ValueError(f"activation zero point {int(zp)} outside 0..{qmax}")
        self.register_buffer("scale", scale.clone())
        self.register_buffer("zero_point", zp.to(torch.uint8))
        self.register_buffer("lo", ((0 - zp).float() * scale).reshape(()))
        self.register_buffer("hi", ((qmax - zp).float() * scale).reshape(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _QuantizeActivation.apply(x, self.scale, self.zero_point, self.lo, self.hi,
                                         2 ** self.bits - 1)


_INT_SUFFIXES = (".weight_int", ".weight_scale", ".weight_zero_point", ".weight_bits")


def quantized_from_state(model: nn.Module, state: dict[str, torch.Tensor]):
    """A `QuantizedModel` rebuilt from `integer_state_dict()` (or quantized_int.safetensors).

    `model` gives the float architecture (its values are replaced). Weights run from their
    integer codes, activations through the saved frozen grids, in ReLU call order; the result
    computes what `export_quantized_onnx` writes.
    """
    from .models.quantized import QuantizedModel

    layers = sorted(k[:-len(".weight_int")] for k in state if k.endswith(".weight_int"))
    if not layers:
        raise ValueError("no integer weights (<layer>.weight_int) in the quantized state")
    float_sd = {k: v for k, v in state.items()
                if not k.startswith("act_quant.") and not k.endswith(_INT_SUFFIXES)}
    for name in layers:
        q = state[f"{name}.weight_int"]
        shape = (-1,) + (1,) * (q.dim() - 1)
        float_sd[f"{name}.weight"] = ((q.float() - state[f"{name}.weight_zero_point"].float()
                                       .view(shape)) * state[f"{name}.weight_scale"].view(shape))
    float_model = copy.deepcopy(model).cpu()
    try:
        float_model.load_state_dict(float_sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"the quantized state does not fit {type(model).__name__} "
                         f"({_one_line(e)})") from None
    n_act = sum(1 for k in state if k.startswith("act_quant.") and k.endswith(".scale"))
    abits = [int(state[f"act_quant.{i}.bits"]) for i in range(n_act)]
    wbits = {name: int(state[f"{name}.weight_bits"]) for name in layers}
    q = QuantizedModel(float_model, 8, max(abits, default=8))
    if set(q.layer_bits) != set(layers):
        raise ValueError("the quantized state's layers differ from the model's Conv2d/Linear "
                         "layers")
    for name in layers:
        parent, _, child = name.rpartition(".")
        owner = q.model.get_submodule(parent) if parent else q.model
        wrapped = owner.get_submodule(child)
        setattr(owner, child, DequantLayer(wrapped.layer, state[f"{name}.weight_int"],
                                           state[f"{name}.weight_scale"],
                                           state[f"{name}.weight_zero_point"], wbits[name]))
    q.layer_bits = wbits
    q.wbits = max(wbits.values())
    q.act_quant = nn.ModuleList(
        FixedActQuant(state[f"act_quant.{i}.scale"], state[f"act_quant.{i}.zero_point"],
                      abits[i]) for i in range(n_act))
    q.set_calibrating(False)
    return q.eval()


def frozen_quantized(q) -> nn.Module:
    """The export form of a calibrated `QuantizedModel`: integer weights, frozen act grids."""
    if not len(q.act_quant):
        raise ValueError("the quantized model has no calibrated activation quantizer")
    inner = copy.deepcopy(q.model).cpu()
    # the float architecture under the original names, for quantized_from_state
    for name in q.layer_bits:
        parent, _, child = name.rpartition(".")
        owner = inner.get_submodule(parent) if parent else inner
        setattr(owner, child, owner.get_submodule(child).layer)
    state = {k: v.cpu() for k, v in q.integer_state_dict().items()}
    return quantized_from_state(inner, state)


def export_quantized_onnx(q, example: torch.Tensor, path: str | Path,
                          opset: int = DEFAULT_OPSET, normalize: Stats | None = None,
                          what: str | None = None) -> Path:
    """Write a calibrated `QuantizedModel` (or one from `quantized_from_state`) as a QDQ graph.

    See the module docstring for the form; `opset` must be at least 13 (per-axis
    DequantizeLinear). `normalize` and `example` as in `export_onnx`.
    """
    from .models.quantized import QuantizedModel

    require_onnx()
    if opset < 13:
        raise ExportError(f"quantized export needs opset >= 13 (per-channel "
                          f"DequantizeLinear), got {opset}")
    if not isinstance(q, QuantizedModel):
        raise ExportError(f"expected a QuantizedModel, got {type(q).__name__}")
    frozen = q if all(isinstance(a, FixedActQuant) for a in q.act_quant) else frozen_quantized(q)
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        _torch_export(with_normalize(frozen.cpu().eval(), normalize).eval(),
                      example.detach().cpu().float(), tmp, opset,
                      what or f"quantized {type(q.model).__name__}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ----------------------------------------------------------------------------- checking

@dataclass
class Check:
    """onnxruntime against PyTorch on the same images."""

    images: int
    max_abs_diff: float
    rel_diff: float  # max_abs_diff / max |PyTorch logit|
    top1_agreement: float  # % of images with the same predicted class
    images_differ: int  # images whose max |difference| exceeds FP32_RTOL x max |PyTorch logit|
    ort_acc: float  # %, on the labels given
    torch_acc: float

    def as_dict(self) -> dict[str, float]:
        """Plain dict (for summary.json)."""
        return dict(self.__dict__)


def ort_session(path: str | Path):
    """An onnxruntime CPU session of the file (default graph optimisations)."""
    require_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_logits(session, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Logits of a batch of float images from an onnxruntime session."""
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: images[i:i + batch_size].cpu().float().numpy()})[0]
            for i in range(0, len(images), batch_size)]
    import numpy as np

    return torch.from_numpy(np.concatenate(outs))


@torch.no_grad()
def torch_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Logits of a batch of float images from a PyTorch model, in eval mode on the CPU (a
    model elsewhere is copied; the model's own mode is restored)."""
    if any(t.device.type != "cpu" for t in [*model.parameters(), *model.buffers()]):
        model = copy.deepcopy(model).cpu()
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(images[i:i + batch_size].cpu().float())
                          for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


def verify_onnx(path: str | Path, model: nn.Module, images: torch.Tensor,
                labels: torch.Tensor, normalize: Stats | None = None) -> Check:
    """Run the ONNX file and `model` (preceded by `normalize`, as exported) on the same
    images and compare them."""
    session = ort_session(path)
    ref = torch_logits(with_normalize(model, normalize), images)
    got = ort_logits(session, images)
    diff = float((got - ref).abs().max()) if len(ref) else 0.0
    scale = float(ref.abs().max()) if len(ref) else 1.0
    labels = labels.cpu()
    per_image = (got - ref).abs().amax(1) if len(ref) else torch.zeros(0)
    return Check(images=len(images), max_abs_diff=diff, rel_diff=diff / max(scale, 1e-12),
                 top1_agreement=100.0 * float((got.argmax(1) == ref.argmax(1)).float().mean()),
                 images_differ=int((per_image > FP32_RTOL * scale).sum()),
                 ort_acc=100.0 * float((got.argmax(1) == labels).float().mean()),
                 torch_acc=100.0 * float((ref.argmax(1) == labels).float().mean()))


def check_fp32(check: Check, rtol: float = FP32_RTOL) -> None:
    """Raise ExportError if a float export differs from PyTorch by more than `rtol`."""
    if not check.rel_diff <= rtol:
        raise ExportError(f"the ONNX model differs from PyTorch: max abs diff "
                          f"{check.max_abs_diff:.3g} on {check.images} images, relative "
                          f"{check.rel_diff:.3g} > {rtol:g}")


def qdq_counts(path: str | Path) -> dict[str, int]:
    """How many nodes of each type the ONNX graph holds."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def unit_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float32 in [0, 1], the input of a graph exported with
    `normalize`."""
    return images.float().div(255)
