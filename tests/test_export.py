"""ONNX export: onnxruntime agrees with PyTorch, the quantized graph is QDQ, bad input is refused
in one line with nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402

from rgal.cli import main  # noqa: E402
from rgal.data.datasets import dataset_info  # noqa: E402
from rgal.export import (  # noqa: E402
    ExportError,
    export_onnx,
    export_quantized_onnx,
    frozen_quantized,
    ort_logits,
    ort_session,
    quantized_from_state,
    torch_logits,
    verify_onnx,
    with_normalize,
)
from rgal.models import create_model  # noqa: E402
from rgal.models.quantized import QuantizedModel  # noqa: E402
from rgal.models.registry import _MODELS, register_model  # noqa: E402
from rgal.models.small import SmallCNN  # noqa: E402
from rgal.models.weights import save_weights  # noqa: E402

INFO = dataset_info("fashion-mnist")
STATS = (INFO.mean, INFO.std)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def _trained_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics (a few train-mode passes), then eval mode."""
    torch.manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(with_normalize(torch.nn.Identity(), STATS)(_images(32, seed)))
    return model.eval()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("rgal: error:"), err
    assert "Traceback" not in err
    return lines[0]


def test_float_export_matches_pytorch_at_any_batch_size(tmp_path):
    model = _trained_bn(create_model("tinycnn", 10, 1))
    path = export_onnx(model, _images(2), tmp_path / "m.onnx", normalize=STATS)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input] == ["images"]
    images = _images(300, seed=1)
    check = verify_onnx(path, model, images, torch.zeros(300, dtype=torch.long),
                        normalize=STATS)
    assert check.rel_diff < 1e-4 and check.top1_agreement == 100.0
    session = ort_session(path)
    for n in (1, 7):  # the batch dimension is dynamic
        ref = torch_logits(with_normalize(model, STATS), images[:n])
        assert torch.allclose(ort_logits(session, images[:n]), ref, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def real_test() -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST test images in [0, 1] and labels (the copy shipped with the package)."""
    from rgal.data.datasets import load_dataset

    test = load_dataset("fashion-mnist", None, train=False, download=False)
    return test.images.float() / 255, test.labels


def _calibrated(wbits: int, abits: int, images: torch.Tensor) -> QuantizedModel:
    """The shipped teacher, quantized, its ranges calibrated on `images`."""
    from rgal.models.build import resolve_weights_path
    from rgal.models.weights import load_weights

    model = create_model("smallcnn", 10, 1)
    load_weights(model, resolve_weights_path("builtin", "fashion-mnist", "smallcnn"))
    q = QuantizedModel(model.eval(), wbits, abits).eval()
    with torch.no_grad(), q.calibration(True):
        q(with_normalize(torch.nn.Identity(), STATS)(images))
    q.freeze_ranges()
    return q


@pytest.mark.parametrize(("wbits", "abits"), [(4, 4), (3, 3), (8, 8)])
def test_quantized_export_is_a_qdq_graph_on_the_exact_grids(tmp_path, real_test, wbits, abits):
    images, labels = real_test[0][:500], real_test[1][:500]
    q = _calibrated(wbits, abits, real_test[0][-256:])
    path = export_quantized_onnx(q, _images(2), tmp_path / "q.onnx", normalize=STATS)
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    relus = len(q.act_quant)
    assert ops.count("QuantizeLinear") == relus  # one activation grid per ReLU call
    assert ops.count("DequantizeLinear") == relus + len(q.layer_bits)  # + every weight
    assert ops.count("Clip") == (relus if abits < 8 else 0)
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    weight_dq = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert len(weight_dq) == len(q.layer_bits)
    for node in weight_dq:  # integer codes on the b-bit grid, per-channel along axis 0
        codes = inits[node.input[0]]
        assert codes.dtype == np.uint8 and codes.max() <= 2 ** wbits - 1
        assert inits[node.input[1]].shape == (codes.shape[0],)
        assert any(a.name == "axis" and a.i == 0 for a in node.attribute)
    # dequantized codes are the fake-quantized weights PyTorch runs
    frozen = frozen_quantized(q)
    for name, layer in q.quant_layers().items():
        got = frozen.model.get_submodule(name).weight()
        assert torch.allclose(got, layer.quantized_weight(), atol=1e-6)
    check = verify_onnx(path, q, images, labels, normalize=STATS)
    assert check.top1_agreement >= 99.5 and abs(check.ort_acc - check.torch_acc) <= 0.2, check
    if abits < 8:  # float kernels on both sides: only an activation at a rounding tie differs
        assert check.images_differ <= 10, check


def test_integer_state_round_trip_rebuilds_the_same_model(real_test):
    q = _calibrated(4, 4, real_test[0][-256:])
    state = q.integer_state_dict()
    rebuilt = quantized_from_state(create_model("smallcnn", 10, 1), state)
    x = with_normalize(torch.nn.Identity(), STATS)(real_test[0][:200])
    with torch.no_grad():
        a, b = q(x), rebuilt(x)
    assert (a.argmax(1) == b.argmax(1)).float().mean() >= 0.99
    assert torch.allclose(a, b, atol=1e-4) or (a - b).abs().amax(1).gt(1e-4).sum() <= 2
    with pytest.raises(ValueError, match="does not fit"):
        quantized_from_state(create_model("tinycnn", 10, 1), state)


def _weights(tmp_path: Path, name: str = "tinycnn") -> Path:
    path = tmp_path / f"{name}.safetensors"
    save_weights(_trained_bn(create_model(name, 10, 1)), path)
    return path


def test_cli_export_checks_and_refuses_to_overwrite(tmp_path, fake_fmnist, capsys):
    weights, out = _weights(tmp_path), tmp_path / "student.onnx"
    argv = ["export", "--model", "tinycnn", "--weights", str(weights), "--dataset",
            "fashion-mnist", "--data-root", str(fake_fmnist), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "max abs diff" in printed and "onnxruntime" in printed and "(limit 1e-04)" in printed
    session = ort_session(out)
    assert session.run(None, {"images": _images(3).numpy()})[0].shape == (3, 10)
    before = out.read_bytes()
    assert main(argv) == 2
    assert "already exists" in _one_line_error(capsys)
    assert out.read_bytes() == before
    assert main([*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.onnx", "tinycnn.safetensors"]


@pytest.mark.parametrize(("extra", "word"), [
    (["--model", "nonet", "--weights", "W"], "unknown model"),
    (["--model", "tinycnn", "--weights", "W", "--dataset", "nodata"], "unknown dataset"),
    (["--model", "tinycnn"], "--weights"),
    (["--model", "smallcnn", "--weights", "W"], "does not fit"),
    (["--quantized", "MISSING"], "not a finished `rgal quantize` folder"),
    (["--quantized", "MISSING", "--model", "tinycnn"], "drop --model"),
    (["--model", "tinycnn", "--weights", "W", "--opset", "99"], "--opset"),
])
def test_cli_export_bad_input_is_one_line_and_writes_nothing(tmp_path, fake_fmnist, capsys,
                                                             extra, word):
    weights = _weights(tmp_path)
    extra = [str(weights) if a == "W" else str(tmp_path / "nope") if a == "MISSING" else a
             for a in extra]
    out = tmp_path / "m.onnx"
    assert main(["export", *extra, "--data-root", str(fake_fmnist), "--out", str(out)]) == 2
    assert word in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tinycnn.safetensors"]
    assert main(["export", "--model", "tinycnn", "--weights", str(weights),
                 "--out", str(tmp_path / "m.pt")]) == 2
    assert ".onnx" in _one_line_error(capsys)


def test_missing_extra_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", "tinycnn", "--weights", "builtin", "--out", str(out)]) == 2
    line = _one_line_error(capsys)
    assert "onnxruntime" in line and 'pip install "rgal[onnx]"' in line
    assert not out.exists()


class _CummaxCNN(SmallCNN):
    """A tinycnn whose output goes through an operator the ONNX exporter cannot write."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cummax(super().forward(x), 1).values


def cummax_cnn(num_classes: int = 10, in_channels: int = 1, **_) -> SmallCNN:
    return _CummaxCNN((16, 32, 64), (1, 2, 2), num_classes, in_channels)


@pytest.fixture()
def cummax_model():
    register_model(cummax_cnn)
    yield "cummax_cnn"
    _MODELS.pop("cummax_cnn")


def test_unexportable_operator_is_named_in_one_line(tmp_path, fake_fmnist, cummax_model,
                                                    capsys):
    weights = tmp_path / "c.safetensors"
    save_weights(create_model(cummax_model, 10, 1), weights)
    out = tmp_path / "c.onnx"
    assert main(["export", "--model", cummax_model, "--weights", str(weights), "--data-root",
                 str(fake_fmnist), "--out", str(out)]) == 2
    line = _one_line_error(capsys)
    assert "aten::cummax" in line and "not supported" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]
    with pytest.raises(ExportError, match="aten::cummax"):
        export_onnx(create_model(cummax_model, 10, 1), _images(2), tmp_path / "d.onnx")
    assert not (tmp_path / "d.onnx").exists()


def test_cli_exports_a_quantize_run_within_half_a_point(tmp_path, fake_fmnist, teacher_file,
                                                        capsys):
    run = tmp_path / "q"
    assert main(["quantize", "--method", "ptq-noise", "--calib-batches", "2", "--batch-size",
                 "16", "--weights", str(teacher_file), "--data-root", str(fake_fmnist),
                 "--out", str(run), "--no-progress", "--device", "cpu"]) == 0
    capsys.readouterr()
    summary = json.loads((run / "summary.json").read_text())
    out = tmp_path / "q.onnx"
    assert main(["export", "--quantized", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"quant_acc {summary['quant_acc']:.2f}%" in printed and "QuantizeLinear" in printed
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Clip"} <= ops
    # a run whose recorded accuracy the graph cannot reproduce is refused, nothing written
    summary["quant_acc"] = (summary["quant_acc"] + 50) % 100
    (run / "summary.json").write_text(json.dumps(summary))
    out2 = tmp_path / "q2.onnx"
    assert main(["export", "--quantized", str(run), "--out", str(out2)]) == 2
    assert "points from the run's quant_acc" in _one_line_error(capsys)
    assert not out2.exists()
