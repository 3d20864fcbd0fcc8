"""Fake-quantized copies of a model: per-channel weights, per-tensor activations after ReLUs.

Weights of every Conv2d and Linear are quantized per output channel with an asymmetric
min/max range recomputed from the current weights at every forward pass. Activations are
quantized per tensor after every ReLU call (module or functional, found at run time through
a `TorchFunctionMode`), with ranges from an exponential moving average of batch min/max while
calibrating and frozen afterwards. Both use PyTorch's fake-quantize ops, whose gradients are
straight-through inside the range.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .features import default_classifier_name

MIN_BITS, MAX_BITS = 2, 8
_EPS = 1e-8


def check_bits(bits: int, what: str = "bits") -> int:
    """Return `bits` if it is an integer in 2..8, else raise ValueError."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{what} must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")
    return bits


def affine_qparams(lo: torch.Tensor, hi: torch.Tensor,
                   bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int32) of an asymmetric grid over [min(lo,0), max(hi,0)].

    A non-finite range (a diverged model) gets a placeholder grid, so that the non-finite
    values propagate to the loss, which the training loop reports, instead of failing here.
    """
    qmax = 2 ** bits - 1
    lo, hi = lo.detach().float(), hi.detach().float()
    bad = ~(torch.isfinite(lo) & torch.isfinite(hi))
    lo = torch.where(bad, torch.zeros_like(lo), lo).clamp(max=0.0)
    hi = torch.where(bad, torch.ones_like(hi), hi).clamp(min=0.0)
    scale = ((hi - lo) / qmax).clamp(min=_EPS)
    zero_point = torch.round(-lo / scale).clamp(0, qmax).to(torch.int32)
    return scale, zero_point


def weight_qparams(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel (dim 0) scale and zero point from the weight's current min/max."""
    flat = weight.detach().flatten(1)
    return affine_qparams(flat.min(1).values, flat.max(1).values, bits)


def fake_quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantize-dequantize per output channel; the gradient passes straight through.

    Non-finite weights stay non-finite (no host sync is spent checking them).
    """
    scale, zp = weight_qparams(weight, bits)
    out = torch.fake_quantize_per_channel_affine(weight, scale, zp, 0, 0, 2 ** bits - 1)
    return torch.where(torch.isfinite(weight), out, weight)


def quantize_weight_int(weight: torch.Tensor,
                        bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer codes (uint8, in 0..2^bits-1), per-channel scales and zero points."""
    scale, zp = weight_qparams(weight, bits)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    q = torch.round(weight.detach().float() / scale.view(shape)) + zp.view(shape)
    return q.clamp(0, 2 ** bits - 1).to(torch.uint8), scale, zp


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """(q - zero_point) * scale, per output channel."""
    shape = (-1,) + (1,) * (q.dim() - 1)
    return (q.float() - zero_point.view(shape).float()) * scale.view(shape)


class QuantLayer(nn.Module):
    """Wraps a Conv2d or Linear and runs it with fake-quantized weights (bias kept in float)."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, bits: int) -> None:
        super().__init__()
        self.layer = layer
        self.bits = check_bits(bits, "weight bits")

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized weight as used by the forward pass."""
        return fake_quantize_weight(self.layer.weight, self.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.quantized_weight()
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class ActQuantizer(nn.Module):
    """Per-tensor activation fake-quantizer with an EMA range while calibrating, frozen after."""

    def __init__(self, bits: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.bits = check_bits(bits, "activation bits")
        self.momentum = momentum
        self.calibrating = True
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Fold one batch's min/max into the moving average (the first batch sets it)."""
        lo, hi = x.detach().min().float(), x.detach().max().float()
        if not bool(self.initialized):
            self.lo.copy_(lo)
            self.hi.copy_(hi)
            self.initialized.fill_(True)
        else:
            self.lo.mul_(self.momentum).add_(lo, alpha=1 - self.momentum)
            self.hi.mul_(self.momentum).add_(hi, alpha=1 - self.momentum)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point of the current range."""
        return affine_qparams(self.lo, self.hi, self.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.observe(x)
        elif not bool(self.initialized):
            raise RuntimeError("activation quantizer used before calibration")
        scale, zp = self.qparams()
        out = torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 2 ** self.bits - 1)
        return torch.where(torch.isfinite(x), out, x)  # a diverged input stays visible

    def extra_repr(self) -> str:
        return f"bits={self.bits}, range=[{float(self.lo):.4g}, {float(self.hi):.4g}]"


_RELU_FUNCS = {F.relu, F.relu_, F.relu6, torch.relu, torch.relu_, torch.Tensor.relu,
               torch.Tensor.relu_}


class _ReluSites(TorchFunctionMode):
    """Routes the output of the i-th ReLU call of a forward pass through quantizer i."""

    def __init__(self, owner: QuantizedModel) -> None:
        super().__init__()
        self.owner = owner
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _RELU_FUNCS:
            out = self.owner._site(self.count, out)(out)
            self.count += 1
        return out


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of every Conv2d and Linear, in registration order."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


class QuantizedModel(nn.Module):
    """A fake-quantized copy of `model` (the original is left untouched).

    `wbits`/`abits` in 2..8; with `keep_first_last_8bit` the first layer and the classifier
    keep 8-bit weights. Activation quantizers are created at the first forward pass, one per
    ReLU call; they calibrate until `freeze_ranges()`. BatchNorm stays in float.
    """

    def __init__(self, model: nn.Module, wbits: int, abits: int,
                 keep_first_last_8bit: bool = False, momentum: float = 0.9) -> None:
        super().__init__()
        self.wbits = check_bits(wbits, "weight bits")
        self.abits = check_bits(abits, "activation bits")
        self.momentum = momentum
        self.model = copy.deepcopy(model).requires_grad_(True)
        names = quantizable_layers(self.model)
        if not names:
            raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer to quantize")
        try:
            last = default_classifier_name(self.model)
        except ValueError:
            last = names[-1]
        self.layer_bits: dict[str, int] = {}
        for name in names:
            bits = 8 if keep_first_last_8bit and name in (names[0], last) else wbits
            parent, _, child = name.rpartition(".")
            owner = self.model.get_submodule(parent) if parent else self.model
            setattr(owner, child, QuantLayer(owner.get_submodule(child), bits))
            self.layer_bits[name] = bits
        self.act_quant = nn.ModuleList()
        self._calibrating = True

    def _site(self, i: int, like: torch.Tensor) -> ActQuantizer:
        if i == len(self.act_quant):
            if not self._calibrating:
                raise RuntimeError("a ReLU call appeared after the ranges were frozen; the "
                                   "model's forward pass must call the same ReLUs every time")
            self.act_quant.append(ActQuantizer(self.abits, self.momentum).to(like.device))
        return self.act_quant[i]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _ReluSites(self):
            return self.model(x)

    def set_calibrating(self, on: bool) -> None:
        """Start (True) or stop (False) updating the activation ranges."""
        self._calibrating = on
        for q in self.act_quant:
            q.calibrating = on

    def freeze_ranges(self) -> None:
        """Stop calibrating; the activation ranges stay fixed from now on."""
        if not len(self.act_quant):
            raise RuntimeError("freeze_ranges() before any calibration forward pass")
        self.set_calibrating(False)

    @contextmanager
    def calibration(self, on: bool) -> Iterator[QuantizedModel]:
        """Temporarily turn range updates on or off."""
        before = self._calibrating
        self.set_calibrating(on)
        try:
            yield self
        finally:
            self.set_calibrating(before)

    def quant_layers(self) -> dict[str, QuantLayer]:
        """Original layer name -> its QuantLayer."""
        return {name: self.model.get_submodule(name) for name in self.layer_bits}

    def inner_name(self, name: str) -> str:
        """The name of an original submodule inside this wrapper (for hooks)."""
        return f"model.{name}"

    def fakequant_state_dict(self) -> dict[str, torch.Tensor]:
        """The original model's state dict with every weight replaced by its fake-quantized value.

        Loads strictly into the float architecture (activation quantization not included).
        """
        sd: dict[str, torch.Tensor] = {}
        wrapped = {f"{n}.layer." for n in self.layer_bits}
        for key, val in self.model.state_dict().items():
            for prefix in wrapped:
                if key.startswith(prefix):
                    key = prefix[:-len("layer.")] + key[len(prefix):]
                    break
            sd[key] = val.detach().clone()
        with torch.no_grad():
            for name, q in self.quant_layers().items():
                sd[f"{name}.weight"] = q.quantized_weight().detach().clone()
        return sd

    def integer_state_dict(self) -> dict[str, torch.Tensor]:
        """Integer weights with scales and zero points, float tensors of the rest, act ranges."""
        fq = self.fakequant_state_dict()
        out: dict[str, torch.Tensor] = {}
        layers = self.quant_layers()
        for key, val in fq.items():
            name = key.rpartition(".")[0]
            if name in layers and key.endswith(".weight"):
                q, scale, zp = quantize_weight_int(layers[name].layer.weight, layers[name].bits)
                out[f"{name}.weight_int"] = q
                out[f"{name}.weight_scale"] = scale
                out[f"{name}.weight_zero_point"] = zp
                out[f"{name}.weight_bits"] = torch.tensor(layers[name].bits, dtype=torch.int32)
            else:
                out[key] = val
        for i, a in enumerate(self.act_quant):
            scale, zp = a.qparams()
            out[f"act_quant.{i}.scale"] = scale.reshape(())
            out[f"act_quant.{i}.zero_point"] = zp.reshape(())
            out[f"act_quant.{i}.bits"] = torch.tensor(a.bits, dtype=torch.int32)
        return out

    def activation_ranges(self) -> list[dict[str, float]]:
        """The frozen per-tensor ranges, in ReLU call order."""
        return [{"lo": float(a.lo), "hi": float(a.hi), "bits": a.bits} for a in self.act_quant]
