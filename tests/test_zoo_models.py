"""The CIFAR model zoo matches the DataFree zoo's checkpoint layout and loads such files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from rgal.models import create_model, list_models
from rgal.models.weights import load_weights

# Keys, shapes and parameter counts of the DataFree zoo checkpoints (10 classes, 3x32x32).
REFERENCE = Path(__file__).resolve().parent / "data" / "datafree_zoo_state_dicts.json"

# Parameter counts of the reference architectures (10 classes), so the count check runs
# even where the reference JSON is not available.
PARAMS = {
    "wrn16_1": 175066, "wrn16_2": 691674, "wrn40_1": 563930, "wrn40_2": 2243546,
    "resnet8": 78042, "resnet20": 272474, "resnet32": 466906, "resnet56": 855770,
    "resnet110": 1730714, "resnet8x4": 1210410, "resnet32x4": 7410730,
    "resnet18": 11173962, "resnet34": 21282122, "resnet50": 23520842,
    "vgg8": 3918858, "vgg11": 9231114, "vgg13": 9416010,
    "mobilenetv2": 2236682, "shufflenetv2": 1263278,
}
ZOO = sorted(PARAMS)
SMALL = ["wrn16_1", "resnet8", "resnet20", "vgg8", "mobilenetv2", "shufflenetv2"]


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny batches: intra-op threads only add contention (30-100x slower on a busy box).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and non-trivial BN running statistics, so eval differs from init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
    return model


def test_all_zoo_names_registered():
    assert set(ZOO) <= set(list_models())


def test_reference_lists_the_same_architectures(reference):
    assert set(reference) == set(ZOO)


@pytest.mark.parametrize("name", ZOO)
def test_layout_matches_reference(name, reference):
    model = create_model(name, 10)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    ref = reference[name]["state_dict"]
    assert sorted(ours) == sorted(ref)
    assert {k: ours[k] for k in ref} == ref
    assert sum(p.numel() for p in model.parameters()) == reference[name]["params"]


@pytest.mark.parametrize("name", ZOO)
def test_shapes_and_params(name):
    model = create_model(name, 10).eval()
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert create_model(name, 100).eval()(torch.randn(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize("name", SMALL)
def test_grayscale_28px(name):
    model = create_model(name, 10, in_channels=1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ZOO)
def test_dataparallel_checkpoint_roundtrip(name, tmp_path):
    torch.manual_seed(0)
    src = _randomise(create_model(name, 10)).eval()
    path = tmp_path / f"cifar10_{name}.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()},
                "epoch": 3, "best_acc1": 90.0}, path)
    dst = load_weights(create_model(name, 10), path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = src(x), dst(x)
    assert torch.allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ZOO)
def test_stage_and_classifier_names(name):
    model = create_model(name, 10).eval()
    assert len(model.stage_names) >= 3
    stages = [model.get_submodule(s) for s in model.stage_names]
    head = model.get_submodule(model.classifier_name)
    assert isinstance(head, nn.Linear)
    seen: list[torch.Tensor] = []
    captured: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _i, o: seen.append(o)) for m in stages]
    handles.append(head.register_forward_pre_hook(
        lambda _m, inp: captured.__setitem__("feature", inp[0])))
    try:
        with torch.no_grad():
            logits = model(torch.randn(2, 3, 32, 32))
    finally:
        for h in handles:
            h.remove()
    # Each stage module runs exactly once, in order, and the last one is the map that is
    # pooled into the classifier's input (for WRN: after the final BN-ReLU, since its stages
    # are the raw block outputs, as the reference code's WRN returns them).
    assert len(seen) == len(stages)
    assert all(s.dim() == 4 and s.shape[0] == 2 for s in seen)
    assert captured["feature"].shape == (2, head.in_features)
    last = seen[-1]
    if name.startswith("wrn"):
        assert model.stage_names[-1] == "block3"
        with torch.no_grad():
            last = model.relu(model.bn1(last))
    assert torch.allclose(last.mean((2, 3)), captured["feature"], atol=1e-6)
    assert torch.allclose(head(captured["feature"]), logits, atol=1e-6)
