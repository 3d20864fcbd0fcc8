"""Data-free quantization: the quantizers, the quantized model wrapper, `rgal quantize`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rgal.cli import main
from rgal.models import create_model
from rgal.models.weights import read_state_dict
from rgal.quantization import (
    ActQuantizer,
    QuantizedModel,
    dequantize_weight,
    fake_quantize_weight,
    quantize_weight_int,
    weight_qparams,
)
from rgal.quantization.methods import QUANT_OUTPUTS

FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_weight_quantizer_grid_and_round_trip(bits):
    torch.manual_seed(bits)
    w = torch.randn(16, 8, 3, 3) * torch.rand(16, 1, 1, 1) * 3 + torch.randn(16, 1, 1, 1)
    w[0] = w[0].abs() + 0.5  # an all-positive channel
    w[1] = 0.0  # an all-zero channel
    fq = fake_quantize_weight(w, bits)
    scale, _ = weight_qparams(w, bits)
    for c in range(w.shape[0]):
        assert fq[c].unique().numel() <= 2 ** bits
    err = (fq - w).abs().flatten(1).max(1).values
    assert bool((err <= scale / 2 + 1e-5).all())
    q, scale, zp = quantize_weight_int(w, bits)
    assert int(q.max()) <= 2 ** bits - 1
    assert torch.allclose(dequantize_weight(q, scale, zp), fq, atol=1e-5)


def test_fake_quantization_gradients_pass_straight_through():
    w = torch.randn(6, 4, requires_grad=True)
    (fake_quantize_weight(w, 3) * torch.arange(4.0)).sum().backward()
    assert torch.equal(w.grad, torch.arange(4.0).expand(6, 4))
    act = ActQuantizer(4)
    x = torch.rand(10, requires_grad=True)
    act(x.detach())  # range [min, max] of the same values: everything inside
    act.calibrating = False
    act(x).sum().backward()
    assert torch.equal(x.grad, torch.ones(10))


def test_ema_calibration_converges_to_the_range_of_a_fixed_input():
    act = ActQuantizer(4, momentum=0.9)
    act(torch.full((8,), 50.0))  # a first batch far from the target range
    x = torch.linspace(-1.0, 3.0, 100)
    for _ in range(200):
        act(x)
    assert float(act.lo) == pytest.approx(-1.0, abs=1e-4)
    assert float(act.hi) == pytest.approx(3.0, abs=1e-4)
    act.calibrating = False
    act(torch.full((4,), 100.0))
    assert float(act.hi) == pytest.approx(3.0, abs=1e-4)  # frozen


class _FunctionalNet(nn.Module):
    """A user module with functional ReLUs, a Tensor.relu and an nn.ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.act(self.conv(x))
        x = F.relu(self.conv2(x)).relu()
        return self.head(x.mean((2, 3)))


def test_user_module_every_relu_quantized_and_weights_reload():
    torch.manual_seed(0)
    net = _FunctionalNet()
    q = QuantizedModel(net, 2, 2, keep_first_last_8bit=True)
    x = torch.randn(5, 1, 10, 10)
    q(x)
    assert len(q.act_quant) == 3
    q.freeze_ranges()
    assert q.layer_bits == {"conv": 8, "conv2": 2, "head": 8}
    assert isinstance(net.conv, nn.Conv2d)  # the original is untouched
    fresh = _FunctionalNet()
    fresh.load_state_dict(q.fakequant_state_dict(), strict=True)
    assert all(row.unique().numel() <= 4 for row in fresh.conv2.weight.flatten(1))
    with torch.no_grad():  # 2-bit activations: at most 4 levels after the last ReLU
        seen = {}
        q.act_quant[2].register_forward_hook(lambda _m, _i, out: seen.update(x=out))
        q(torch.randn(64, 1, 10, 10))
    assert 1 < seen["x"].unique().numel() <= 4
    sd = q.integer_state_dict()
    deq = dequantize_weight(sd["conv2.weight_int"], sd["conv2.weight_scale"],
                            sd["conv2.weight_zero_point"])
    assert torch.allclose(deq, fresh.conv2.weight, atol=1e-6)


@pytest.mark.skipif(not FMNIST.exists(), reason="Fashion-MNIST not installed")
def test_8_bit_model_within_one_point_of_full_precision_on_real_data():
    from rgal.data.augment import Normalize
    from rgal.data.datasets import describe_dataset, load_dataset
    from rgal.engine.evaluate import evaluate
    from rgal.models.build import resolve_weights_path
    from rgal.models.weights import load_weights
    from rgal.quantization.methods import calibrate

    info = describe_dataset("fashion-mnist", None)
    model = create_model("smallcnn", 10, 1)
    load_weights(model, resolve_weights_path("builtin", "fashion-mnist", "smallcnn")).eval()
    test = load_dataset("fashion-mnist", None, train=False, download=False)
    calib = test.images[5000:6024]  # calibration images disjoint from the evaluated ones
    test.images, test.labels = test.images[:2000], test.labels[:2000]
    norm = Normalize(info.mean, info.std)
    q = QuantizedModel(model, 8, 8)
    calibrate(q, [norm(calib[i:i + 256].float() / 255) for i in range(0, 1024, 256)])
    fp, q8 = evaluate(model, test, norm), evaluate(q, test, norm)
    assert abs(fp - q8) <= 1.0, (fp, q8)


TINY = ["--epochs", "2", "--iters", "2", "--batch-size", "8", "--calib-batches", "2",
        "--device", "cpu", "--no-progress"]


def _quantize(out: Path, data: Path, weights: Path, *extra: str) -> int:
    return main(["quantize", "--data-root", str(data), "--weights", str(weights),
                 "--out", str(out), "--download", "false", *TINY, *extra])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ptq-noise", "ptq-real", "gdfq", "gdfq+rgal"])
def test_every_method_runs_and_writes_its_files(tmp_path, fake_fmnist, teacher_file, capsys,
                                                method):
    out = tmp_path / "run"
    assert _quantize(out, fake_fmnist, teacher_file, "--method", method, "--wbits", "3",
                     "--abits", "5") == 0
    s = json.loads((out / "summary.json").read_text())
    assert {"fp_acc", "quant_acc", "wbits", "abits", "method", "wall_s"} <= set(s)
    assert (s["method"], s["wbits"], s["abits"]) == (method, 3, 5)
    for name in ("quantized_fakequant.safetensors", "quantized_int.safetensors", "synthetic.png"):
        assert (out / name).stat().st_size > 0
    ints = read_state_dict(out / "quantized_int.safetensors")
    assert int(ints["stage1.0.0.weight_int"].max()) <= 7
    assert len(s["activation_ranges"]) == 6
    if method.startswith("gdfq"):
        lines = (out / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["phase"] for r in lines] == ["warm-up", "fine-tune"]
        assert ("loss_rel_stu" in json.loads(lines[-1])) == (method == "gdfq+rgal")
    capsys.readouterr()
    assert main(["eval", "--model", "smallcnn", "--weights",
                 str(out / "quantized_fakequant.safetensors"), "--dataset", "fashion-mnist",
                 "--data-root", str(fake_fmnist), "--device", "cpu"]) == 0
    assert f"{s['weights_only_acc']:.2f}%" in capsys.readouterr().out
    # an existing run is refused, then replaced with --overwrite
    assert _quantize(out, fake_fmnist, teacher_file, "--method", method) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _quantize(out, fake_fmnist, teacher_file, "--method", method, "--overwrite") == 0


@pytest.mark.parametrize("extra", [
    ["--wbits", "1"], ["--wbits", "9"], ["--abits", "0"], ["--abits", "4.5"],
    ["--wbits", "four"], ["--method", "gptq"], ["--model", "tinycnn"],
    ["--warmup-epochs", "2"],
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, fake_fmnist, teacher_file, capsys, extra):
    out = tmp_path / "run"
    assert _quantize(out, fake_fmnist, teacher_file, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("rgal: error: ") and err.count("\n") == 1
    assert not any((out / name).exists() for name in QUANT_OUTPUTS)


def test_mismatched_weights_file_exits_2(tmp_path, fake_fmnist, capsys):
    path = tmp_path / "resnet.safetensors"
    from rgal.models.weights import save_weights

    save_weights(create_model("resnet8", 10, 1), path)
    assert _quantize(tmp_path / "run", fake_fmnist, path) == 2
    assert "does not fit" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parent.parent.glob(
    "configs/quantization/*.yaml")), ids=lambda p: p.name)
def test_shipped_quantization_configs_are_valid(path):
    from rgal.config import load_yaml
    from rgal.quantization import build_quantize_config

    cfg = build_quantize_config(load_yaml(path))
    assert cfg.model == "resnet20" and cfg.wbits == cfg.abits in (4, 5)
    assert cfg.dataset in path.name
