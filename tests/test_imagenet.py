"""ImageNet scale: torchvision-layout models, the 224x224 generator, the ImageNet folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rgal.config import load_yaml
from rgal.data.base import DatasetError
from rgal.data.datasets import describe_dataset, load_dataset
from rgal.methods import distill_config
from rgal.models import FeatureExtractor, create_model, list_models
from rgal.models.generator import Generator, default_upsamples
from rgal.models.weights import WeightsError, load_weights

ROOT = Path(__file__).resolve().parent.parent

# torchvision's parameter counts with 1000 classes (sum of p.numel() over parameters()).
TORCHVISION_PARAMS = {
    "resnet18_imagenet": 11_689_512,
    "resnet34_imagenet": 21_797_672,
    "resnet50_imagenet": 25_557_032,
    "mobilenetv2_imagenet": 3_504_872,
}
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_resnet_keys(depths: tuple[int, ...], bottleneck: bool) -> dict[str, tuple]:
    """torchvision's ResNet state-dict keys and shapes, written out from its layout."""
    keys: dict[str, tuple] = {"conv1.weight": (64, 3, 7, 7)}
    keys.update({f"bn1.{b}": (64,) for b in BN})
    expansion = 4 if bottleneck else 1
    cin = 64
    for s, (planes, n) in enumerate(zip((64, 128, 256, 512), depths, strict=True), start=1):
        for i in range(n):
            p = f"layer{s}.{i}"
            stride = 2 if (i == 0 and s > 1) else 1
            if bottleneck:
                convs = [(planes, cin, 1), (planes, planes, 3), (planes * 4, planes, 1)]
            else:
                convs = [(planes, cin, 3), (planes, planes, 3)]
            for j, (co, ci, k) in enumerate(convs, start=1):
                keys[f"{p}.conv{j}.weight"] = (co, ci, k, k)
                keys.update({f"{p}.bn{j}.{b}": (co,) for b in BN})
            cout = planes * expansion
            if stride != 1 or cin != cout:
                keys[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
                keys.update({f"{p}.downsample.1.{b}": (cout,) for b in BN})
            cin = cout
    keys["fc.weight"], keys["fc.bias"] = (1000, 512 * expansion), (1000,)
    return keys


def torchvision_mobilenetv2_keys() -> dict[str, tuple]:
    """torchvision's mobilenet_v2 state-dict keys and shapes (width 1.0)."""
    def conv_bn(p: str, co: int, ci: int, k: int) -> dict[str, tuple]:
        out = {f"{p}.0.weight": (co, ci, k, k)}
        out.update({f"{p}.1.{b}": (co,) for b in BN})
        return out

    keys = conv_bn("features.0", 32, 3, 3)
    cin, idx = 32, 1
    for t, c, n, _s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for _ in range(n):
            hid, p, j = cin * t, f"features.{idx}.conv", 0
            if t != 1:
                keys.update(conv_bn(f"{p}.0", hid, cin, 1))
                j = 1
            keys.update(conv_bn(f"{p}.{j}", hid, 1, 3))  # depthwise
            keys[f"{p}.{j + 1}.weight"] = (c, hid, 1, 1)
            keys.update({f"{p}.{j + 2}.{b}": (c,) for b in BN})
            cin, idx = c, idx + 1
    keys.update(conv_bn("features.18", 1280, 320, 1))
    keys["classifier.1.weight"], keys["classifier.1.bias"] = (1000, 1280), (1000,)
    return keys


EXPECTED_KEYS = {
    "resnet18_imagenet": lambda: torchvision_resnet_keys((2, 2, 2, 2), False),
    "resnet34_imagenet": lambda: torchvision_resnet_keys((3, 4, 6, 3), False),
    "resnet50_imagenet": lambda: torchvision_resnet_keys((3, 4, 6, 3), True),
    "mobilenetv2_imagenet": torchvision_mobilenetv2_keys,
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_layout_matches_torchvision(name):
    model = create_model(name, num_classes=1000)
    assert name in list_models()
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = {k: tuple(s) for k, s in EXPECTED_KEYS[name]().items()}
    assert list(got) == list(want)  # same names, in torchvision's order
    assert got == {k: (s if not k.endswith("num_batches_tracked") else ()) for k, s in
                   want.items()}


@pytest.mark.parametrize("wrap", [True, False])
def test_torchvision_style_checkpoint_loads_strictly(tmp_path, wrap):
    torch.manual_seed(1)
    src = create_model("resnet18_imagenet", num_classes=1000).state_dict()
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save({"state_dict": src} if wrap else src, path)
    model = load_weights(create_model("resnet18_imagenet", num_classes=1000), path)
    assert all(torch.equal(v, src[k]) for k, v in model.state_dict().items())
    with pytest.raises(WeightsError, match="does not fit"):  # the CIFAR layout is refused
        load_weights(create_model("resnet18", num_classes=1000), path)


@pytest.mark.parametrize("name,sizes", [
    ("resnet18_imagenet", [56, 28, 14, 7]),
    ("resnet34_imagenet", [56, 28, 14, 7]),
    ("resnet50_imagenet", [56, 28, 14, 7]),
    ("mobilenetv2_imagenet", [112, 56, 28, 14, 7]),
])
def test_forward_backward_224(name, sizes):
    torch.manual_seed(0)
    model = create_model(name, num_classes=1000)
    ext = FeatureExtractor(model)
    x = torch.rand(2, 3, 224, 224, requires_grad=True)
    f = ext(x)
    assert f.logits.shape == (2, 1000)
    assert [s.shape[-1] for s in f.stages] == sizes
    assert f.feature.shape[1] == model.state_dict()[ext.classifier_name + ".weight"].shape[1]
    f.logits.logsumexp(1).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_generator_depth_follows_image_size():
    assert [default_upsamples(s) for s in (28, 32, 64, 128, 224, 256)] == [2, 2, 2, 5, 5, 6]
    g = Generator(nz=64, ngf=8, img_size=224, channels=3)
    assert (g.init_size, g.num_upsamples) == (7, 5)
    out = g(torch.randn(2, 64))
    assert out.shape == (2, 3, 224, 224) and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match="multiple of 4"):
        Generator(img_size=30)


@pytest.mark.parametrize("size,channels", [(32, 3), (28, 1)])
def test_small_generator_is_the_reference_layout(size, channels):
    """Up to 64 px: Linear to 2ngf x s/4, BN, 2 x (up, conv, BN, LeakyReLU), conv, sigmoid."""
    g = Generator(nz=256, ngf=64, img_size=size, channels=channels)
    shapes = {k: tuple(v.shape) for k, v in g.state_dict().items()
              if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    s = size // 4
    assert shapes == {
        "l1.weight": (128 * s * s, 256), "l1.bias": (128 * s * s,),
        "conv_blocks.0.weight": (128,), "conv_blocks.0.bias": (128,),
        "conv_blocks.2.weight": (128, 128, 3, 3),
        "conv_blocks.3.weight": (128,), "conv_blocks.3.bias": (128,),
        "conv_blocks.6.weight": (64, 128, 3, 3),
        "conv_blocks.7.weight": (64,), "conv_blocks.7.bias": (64,),
        "conv_blocks.9.weight": (channels, 64, 3, 3), "conv_blocks.9.bias": (channels,),
    }
    assert g(torch.randn(2, 256)).shape == (2, channels, size, size)


WNIDS = [f"n{i:08d}" for i in range(1000)]


def write_imagenet(root: Path, per_class: int = 2) -> Path:
    """val/<1000 wnids>/ with a few bordered images in classes 0, 7 and 999 (PNG and JPEG)."""
    for w in WNIDS:
        (root / "val" / w).mkdir(parents=True)
    for label in (0, 7, 999):
        for j in range(per_class):
            arr = np.full((256, 320, 3), (200, 30, 30), dtype=np.uint8)  # red, 320 wide
            arr[16:240, 48:272] = (label % 256, 90, 160)  # the central 224 square
            ext = "png" if j % 2 == 0 else "JPEG"
            Image.fromarray(arr).save(root / "val" / WNIDS[label] / f"img_{j}.{ext}",
                                      quality=95)
    return root


def test_imagenet_folder_val_split(tmp_path):
    root = write_imagenet(tmp_path / "imagenet")
    info = describe_dataset("imagenet", root)
    assert (info.num_classes, info.image_size, info.channels) == (1000, 224, 3)
    assert info.classes == tuple(WNIDS)
    assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.229, 0.224, 0.225)
    test = load_dataset("imagenet", root, train=False)
    assert test.images.shape == (6, 3, 224, 224) and test.images.dtype == torch.uint8
    assert test.labels.tolist() == [0, 0, 7, 7, 999, 999]
    png = test.images[0].float()  # shorter side 256 already: the 224 crop drops the red border
    assert png[0].eq(0).all() and png[1].eq(90).all() and png[2].eq(160).all()
    jpeg = test.images[1].float()  # lossy (edges blur), but no red border (200) left either
    assert jpeg[0].max() < 100 and jpeg[0].mean() < 5 and (jpeg[1] - 90).abs().mean() < 5
    subset = load_dataset("imagenet", root, train=False, max_per_class=1)
    assert subset.labels.tolist() == [0, 7, 999]


def test_imagenet_folder_refusals(tmp_path):
    with pytest.raises(DatasetError, match="needs a root"):
        load_dataset("imagenet", None, train=False)
    small = tmp_path / "small"
    for w in WNIDS[:5]:
        (small / "val" / w).mkdir(parents=True)
    with pytest.raises(DatasetError, match="1000 class folders"):
        describe_dataset("imagenet", small)
    root = write_imagenet(tmp_path / "imagenet", per_class=1)
    (root / "train").mkdir()
    for w in WNIDS:
        (root / "train" / w).mkdir()
    with pytest.raises(DatasetError, match="train split"):
        load_dataset("imagenet", root, train=True)


def test_imagenet_config_is_valid():
    cfg = distill_config(load_yaml(ROOT / "configs" / "imagenet_resnet50_resnet18.yaml"))
    assert (cfg.dataset, cfg.teacher, cfg.student) == ("imagenet", "resnet50_imagenet",
                                                        "resnet18_imagenet")
    assert {cfg.teacher, cfg.student} <= set(list_models())


def test_one_synthesis_and_student_step_at_224():
    """The library's own synthesis and student steps run at 224 with 1000 classes."""
    from rgal.data.datasets import dataset_info
    from rgal.data.pool import ImagePool
    from rgal.methods import create_method
    from rgal.models.features import freeze
    from rgal.train.student import StudentPhase

    torch.manual_seed(0)
    info = dataset_info("imagenet")
    teacher = freeze(create_model("resnet18_imagenet", info.num_classes))
    student = create_model("mobilenetv2_imagenet", info.num_classes)
    synth = create_method("rgal", teacher, student, info, nz=32, ngf=8, synthesis_batch_size=4,
                          g_steps=1, tau=5.0, progress=False)
    assert synth.generator.num_upsamples == 5  # 224 px: five stages from a 7x7 map
    result = synth.synthesize()
    assert result.images.shape == (4, 3, 224, 224)
    assert all(np.isfinite(v) for v in result.losses.values())
    pool = ImagePool(3, 224)
    pool.add(result.images, result.labels)
    opt = torch.optim.SGD(list(student.parameters()) + synth.student_parameters(), lr=0.01)
    phase = StudentPhase(synth, synth.teacher, synth.student, synth.augment, opt, batch_size=2)
    terms = phase.step(pool)
    assert torch.isfinite(terms["loss_student"])
