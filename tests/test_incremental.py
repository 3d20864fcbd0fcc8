"""Class-incremental learning: split, data isolation, metrics, methods end to end, CLI errors."""

from __future__ import annotations

import json
import math
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F

from rgal.cli import main
from rgal.data.base import ImageTensors
from rgal.incremental import runner
from rgal.incremental.config import METHODS
from rgal.incremental.learners import ABD, TaskContext, class_balance_weights
from rgal.incremental.protocol import TaskStream, incremental_metrics, split_classes
from rgal.losses.priors import class_balance_loss
from rgal.models import create_model
from rgal.models.features import FeatureExtractor, freeze

TINY = ["--epochs", "0.5", "--batch-size", "8", "--inv-steps", "2", "--inv-batch-size", "8",
        "--replay-size", "16", "--nz", "8", "--ngf", "8", "--no-progress", "--device", "cpu"]


@pytest.mark.parametrize("classes,tasks", [(10, 5), (10, 3), (7, 7), (100, 20), (10, 1)])
def test_split_is_a_seeded_partition(classes, tasks):
    split = split_classes(classes, tasks, seed=3)
    assert len(split) == tasks and all(split)
    flat = [c for task in split for c in task]
    assert sorted(flat) == list(range(classes))  # every class exactly once
    assert max(map(len, split)) - min(map(len, split)) <= 1
    assert split_classes(classes, tasks, seed=3) == split
    if tasks > 1:
        assert any(split_classes(classes, tasks, seed=s) != split for s in range(4, 8))


def test_split_rejects_more_tasks_than_classes():
    with pytest.raises(ValueError):
        split_classes(10, 11, seed=0)


def _stream() -> TaskStream:
    labels = torch.arange(60) % 6
    images = labels.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).to(torch.uint8).clone()
    return TaskStream(ImageTensors(images, labels), [[4, 1], [0, 5], [2, 3]])


def test_stream_serves_only_the_current_task_and_guards_the_past():
    stream = _stream()
    g = torch.Generator().manual_seed(0)
    for t in range(3):
        for x, y in stream.batches(t, 7, 20, g):
            assert ((y >= stream.first(t)) & (y < stream.seen(t))).all()
            # relabelled in task order: the image (original class) matches the split
            orig = x[:, 0, 0, 0].long()
            assert all(stream.split[t][int(lab) - stream.first(t)] == int(o)
                       for lab, o in zip(y, orig, strict=True))
    with pytest.raises(AssertionError):  # a past task's real batch is refused
        stream.check_batch(torch.tensor([0, 5]))
    with pytest.raises(AssertionError):  # and tasks never go back
        next(stream.batches(1, 4, 1, g))
    assert stream.labels_served == [{0, 1}, {2, 3}, {4, 5}]
    joint = _stream()
    for t in range(3):
        served = set()
        for _, y in joint.batches(t, 7, 30, g, include_past=True):
            served.update(y.tolist())
        assert served == set(range(joint.seen(t)))


def test_metrics_from_a_hand_built_matrix():
    m = [[90.0], [60.0, 80.0], [40.0, 70.0, 100.0]]
    r = incremental_metrics(m)
    assert r["final_acc"] == pytest.approx(70.0)
    assert r["avg_inc_acc"] == pytest.approx((90 + 70 + 70) / 3)
    assert r["forgetting"] == pytest.approx(((90 - 40) + (80 - 70)) / 2)
    r = incremental_metrics(m, acc_seen=[90.0, 71.0, 69.0])  # class-count-weighted rows
    assert r["final_acc"] == 69.0 and r["avg_inc_acc"] == pytest.approx(230 / 3)
    assert incremental_metrics([[55.0]]) == {"final_acc": 55.0, "avg_inc_acc": 55.0,
                                             "forgetting": 0.0}


def test_class_balance_terms():
    y = torch.tensor([0, 0, 0, 1, 2, 2])
    w = class_balance_weights(y, 3)
    assert w.sum() == pytest.approx(1.0)
    for c in range(3):
        assert w[y == c].sum() == pytest.approx(1 / 3)
    assert float(class_balance_loss(torch.zeros(8, 4), normalized=True)) == pytest.approx(
        0.0, abs=1e-6)
    assert float(class_balance_loss(torch.tensor([[9.0, 0, 0]] * 8), normalized=True)) > 0.9
    # the nats form (DAFL, DFQ) is the normalised one times log K
    logits = torch.randn(16, 5)
    assert float(class_balance_loss(logits)) == pytest.approx(
        float(class_balance_loss(logits, normalized=True)) * math.log(5), abs=1e-6)


def test_abd_head_loss_reaches_only_the_head_and_old_model_stays_frozen():
    torch.manual_seed(0)
    model = create_model("tinycnn", 10, 1)
    old = FeatureExtractor(freeze(create_model("tinycnn", 10, 1)))
    before = [p.clone() for p in old.model.parameters()]
    learner = ABD(model, w_fkd=1.0)
    learner.begin_task(TaskContext(1, 4, 6, old, None))
    x, xs = torch.randn(8, 1, 28, 28), torch.randn(8, 1, 28, 28)
    y, ys = torch.randint(4, 6, (8,)), torch.randint(0, 4, (8,))
    terms = learner.losses(x, y, xs, ys)
    assert set(terms) == {"loss_ce_new", "loss_ce_head", "loss_fkd"}
    terms["loss_ce_head"].backward()
    assert model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("fc."))
    model.zero_grad(set_to_none=True)
    terms = learner.losses(x, y, xs, ys)
    (terms["loss_ce_new"] + terms["loss_fkd"]).backward()
    assert model.fc.weight.grad[:4].abs().sum() == 0  # new-class CE: new logits only
    assert all(p.grad is None for p in old.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, old.model.parameters(), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_and_never_sees_past_real_images(method, tmp_path, fake_fmnist,
                                                           monkeypatch):
    served: list[tuple[int, int, int, list[int]]] = []

    class SpyStream(TaskStream):
        def check_batch(self, labels, include_past=False):
            super().check_batch(labels, include_past)
            served.append((self.current_task, self.first(self.current_task),
                           self.seen(self.current_task), labels.tolist()))

    monkeypatch.setattr(runner, "TaskStream", SpyStream)
    out = tmp_path / "run"
    assert main(["incremental", "--data-root", str(fake_fmnist), "--method", method,
                 "--out", str(out), *TINY]) == 0
    for name in ("summary.json", "metrics.jsonl", "acc_matrix.png", "accuracy.png",
                 "model.safetensors"):
        assert (out / name).is_file(), name
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == method and s["tasks"] == 5 and s["wall_s"] > 0
    assert len(s["acc_matrix"]) == 5 and all(len(r) == 5 for r in s["acc_matrix"])
    assert all(v is None for i, r in enumerate(s["acc_matrix"]) for v in r[i + 1:])
    assert s["final_acc"] == s["acc_seen"][-1]
    assert s["avg_inc_acc"] == pytest.approx(sum(s["acc_seen"]) / 5)
    assert s["forgetting"] == pytest.approx(incremental_metrics(
        [r[:i + 1] for i, r in enumerate(s["acc_matrix"])], s["acc_seen"])["forgetting"])
    assert {t for t, *_ in served} == set(range(5))
    for _task, first, seen, labels in served:
        lo = 0 if method == "joint" else first
        assert all(lo <= lab < seen for lab in labels)
    grids = sorted(p.name for p in (out / "grids").glob("*.png")) if (out / "grids").exists() \
        else []
    replay = method in ("deepinv-replay", "abd", "abd+rgal")
    assert grids == ([f"replay_task{t}.png" for t in range(1, 5)] if replay else [])


@pytest.mark.parametrize("argv,needle", [
    (["--tasks", "11"], "exceeds the 10 classes"),
    (["--tasks", "0"], "tasks"),
    (["--method", "icarl"], "method"),
    (["--model", "nosuchnet"], "unknown model"),
    (["--set", "mu=-1"], "w_fkd"),
])
def test_bad_arguments_exit_2_and_write_nothing(argv, needle, tmp_path, fake_fmnist, capsys):
    out = tmp_path / "run"
    assert main(["incremental", "--data-root", str(fake_fmnist), "--out", str(out),
                 *TINY, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rgal: error:") and needle in err and err.count("\n") == 1
    assert not out.exists()


def test_existing_run_is_refused(tmp_path, fake_fmnist, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    assert main(["incremental", "--data-root", str(fake_fmnist), "--out", str(out),
                 *TINY]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == "{}"


def test_inversion_batches_cover_the_seen_classes():
    from rgal.data.augment import Augment
    from rgal.incremental.inversion import ModelInversion
    from rgal.models.generator import Generator

    torch.manual_seed(0)
    model = create_model("tinycnn", 10, 1)
    inv = ModelInversion(model, Generator(8, 8, 28, 1), Augment((0.5,), (0.5,), 2), 4,
                         steps=3, batch_size=16, w_rel_syn=0.1)
    losses = inv.fit()
    assert {"loss_oh", "loss_balance", "loss_bn", "loss_tv", "loss_rel_syn"} <= set(losses)
    x, y = inv.sample(40)
    assert x.shape == (40, 1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert int(y.max()) < 4
    assert all(not p.requires_grad for p in model.parameters()) and not model.training
    assert F.softmax(model(x), 1).shape == (40, 10)


@pytest.mark.parametrize("tasks", [5, 10, 20])
def test_published_setting_configs_load(tasks):
    from pathlib import Path

    from rgal.config import build_config, load_yaml
    from rgal.incremental.config import IncrementalConfig

    path = Path(__file__).resolve().parent.parent / "configs" / "incremental" / \
        f"cifar100_resnet32_{tasks}tasks.yaml"
    cfg = build_config(IncrementalConfig, load_yaml(path))
    assert (cfg.dataset, cfg.model, cfg.tasks) == ("cifar100", "resnet32", tasks)
    # ABD's recipe (its scripts): 250 epochs per task, SGD 0.1, batch 128, wd 2e-4, feature
    # distillation 0.1, BN statistics weight 50, smoothness 1e-3, 10k generator steps
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.weight_decay) == (250, 0.1, 128, 2e-4)
    assert (cfg.w_fkd, cfg.w_bn, cfg.w_tv, cfg.inv_steps) == (0.1, 50.0, 1e-3, 10_000)
    # every run of the published setting can be resumed, and a typo in it would be refused
    assert set(load_yaml(path)) <= {f.name for f in fields(IncrementalConfig)}


def test_balanced_replay_selection():
    from rgal.incremental.inversion import balanced_indices

    y = torch.tensor([0] * 10 + [1] * 2 + [2] * 5 + [3] * 0)
    pick = balanced_indices(y, 9, 4)
    assert len(set(pick.tolist())) == 9
    assert torch.bincount(y[pick], minlength=4).tolist() == [4, 2, 3, 0]  # rare class kept whole
    assert sorted(balanced_indices(y, 100, 4).tolist()) == list(range(17))


def test_generator_replay_draws_fresh_batches_labelled_by_the_frozen_model():
    from rgal.data.augment import Augment
    from rgal.incremental.inversion import GeneratorReplay, ModelInversion, PoolReplay
    from rgal.models.generator import Generator

    torch.manual_seed(0)
    model = create_model("tinycnn", 10, 1)
    augment = Augment((0.5,), (0.5,), 2)
    inv = ModelInversion(model, Generator(8, 8, 28, 1), augment, 4, steps=2, batch_size=16)
    inv.fit()
    g = torch.Generator().manual_seed(0)
    source = GeneratorReplay(inv)
    (x1, y1), (x2, _) = source.draw(12, g), source.draw(12, g)
    assert x1.shape == (12, 1, 28, 28) and not torch.equal(x1, x2)  # a new batch each step
    assert not x1.requires_grad and 0 <= float(x1.min()) and float(x1.max()) <= 1
    assert torch.equal(y1, model(augment.normalize(x1))[:, :4].argmax(1))
    # the fixed pool only ever serves its own images
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 2, 2).clone()
    pool = PoolReplay(images, torch.arange(5))
    xp, yp = pool.draw(50, g)
    assert torch.equal(xp[:, 0, 0, 0] * 255, yp.float()) and set(yp.tolist()) <= set(range(5))


def test_generator_replay_runs_end_to_end(tmp_path, fake_fmnist):
    out = tmp_path / "run"
    assert main(["incremental", "--data-root", str(fake_fmnist), "--method", "abd+rgal",
                 "--tasks", "2", "--set", "replay=generator", "--out", str(out), *TINY]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["config"]["replay"] == "generator" and len(s["acc_seen"]) == 2
    assert (out / "grids" / "replay_task1.png").is_file()
