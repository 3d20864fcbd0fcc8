"""Every data-free method and reference on the shared loop; diversity measures; `rgal bench`."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from rgal.cli import main
from rgal.config import ConfigError
from rgal.data.datasets import DatasetInfo
from rgal.methods import create_method, distill_config, list_methods, method_defaults
from rgal.models import create_model
from rgal.train.distill import run_distillation
from rgal.train.diversity import diversity_measures
from rgal.train.prepare import prepare_distillation

TINY = {"epochs": 1, "g_steps": 2, "kd_steps": 2, "batch_size": 8, "synthesis_batch_size": 16,
        "ngf": 8, "nz": 16, "device": "cpu", "progress": False, "diversity_samples": 32}

EXPECTED_TERMS = {
    "rgal": {"loss_bn", "loss_oh", "loss_adv", "loss_rel_syn", "loss_kd", "loss_cd",
             "loss_rel_stu"},
    "deepinv": {"loss_bn", "loss_oh", "loss_adv", "loss_tv", "loss_kd"},
    "cmi": {"loss_bn", "loss_oh", "loss_adv", "loss_cr", "loss_kd"},
    "cmi+rgal": {"loss_bn", "loss_oh", "loss_adv", "loss_cr", "loss_rel_syn", "loss_kd",
                 "loss_cd", "loss_rel_stu"},
    "fast": {"loss_bn", "loss_oh", "loss_adv", "loss_kd"},
    "fast+rgal": {"loss_bn", "loss_oh", "loss_adv", "loss_rel_syn", "loss_kd", "loss_cd",
                  "loss_rel_stu"},
    "nayer": {"loss_bn", "loss_oh", "loss_adv", "loss_kd"},
    "nayer+rgal": {"loss_bn", "loss_oh", "loss_adv", "loss_rel_syn", "loss_kd", "loss_cd",
                   "loss_rel_stu"},
    "dafl": {"loss_oh", "loss_act", "loss_ie", "loss_kd"},
    "zskt": {"loss_adv", "loss_kd", "loss_at"},
    "dfad": {"loss_adv", "loss_l1"},
    "dfq": {"loss_bn", "loss_oh", "loss_adv", "loss_balance", "loss_kd"},
    "kd-real": {"loss_kd"},
    "scratch": {"loss_ce"},
}
ABSENT_TERMS = {"deepinv": {"loss_rel_syn", "loss_rel_stu", "loss_cd"},
                "cmi": {"loss_rel_syn", "loss_rel_stu"}, "fast": {"loss_rel_syn"},
                "dafl": {"loss_adv", "loss_bn"}, "scratch": {"loss_kd"}}


def test_every_method_is_covered():
    assert set(EXPECTED_TERMS) == set(list_methods()) == set(method_defaults())


@pytest.mark.parametrize("method", sorted(EXPECTED_TERMS))
def test_one_tiny_epoch_has_finite_named_losses_and_changes_the_student(
        tmp_path, fake_fmnist, teacher_file, method):
    cfg = distill_config(TINY, {"method": method, "data_root": str(fake_fmnist),
                                "teacher_weights": str(teacher_file),
                                "out": str(tmp_path / method)})
    setup = prepare_distillation(cfg)
    before = {k: v.clone() for k, v in setup.student.state_dict().items()}
    summary = run_distillation(setup, log=lambda _m: None)
    record = json.loads((tmp_path / method / "metrics.jsonl").read_text().splitlines()[-1])
    losses = {k for k in record if k.startswith("loss_")}
    assert EXPECTED_TERMS[method] <= losses, losses
    assert not ABSENT_TERMS.get(method, set()) & losses
    for k in losses:
        assert math.isfinite(record[k]), (k, record[k])
    after = setup.student.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
    assert summary["final_acc"] == record["test_acc"]
    assert all(k in record for k in ("div_intra", "div_entropy", "div_margin"))
    if method in ("kd-real", "scratch"):
        assert summary["images_synthesized"] == 0
    else:
        assert summary["images_synthesized"] > 0
        assert (tmp_path / method / "grids" / "epoch_001.png").exists()


def test_method_defaults_apply_under_user_settings():
    cfg = distill_config({"method": "fast"})
    assert cfg.g_steps == method_defaults()["fast"]["g_steps"] and cfg.bn_momentum == 0.9
    assert distill_config({"method": "fast"}, {"g_steps": 7}).g_steps == 7
    assert distill_config({"method": "zskt"}).zskt.w_at == 250.0
    assert distill_config({"method": "zskt"}, {"zskt": {"w_at": 10}}).zskt.w_at == 10.0
    cfg = distill_config({})
    assert cfg.method == "rgal" and set(cfg.sections) == {"rgal"}
    # a key of another method's section is refused, naming its methods
    with pytest.raises(ConfigError, match="w_at.*zskt"):
        distill_config({"w_at": 1.0})
    assert distill_config({"w_at": 1.0}, lenient=True).method == "rgal"
    # renamed keys keep their old names as aliases
    assert distill_config({"w_tri": 0.3, "w_stri": 0.4}).rgal.w_rel_syn == 0.3
    assert distill_config({"w_tri": 0.3, "w_stri": 0.4}).rgal.w_rel_stu == 0.4


def test_fast_meta_updates():
    """Reptile moves the meta generator towards the adapted copy; first-order MAML steps it with
    the sum of the inner gradients (with one inner step: that step's gradient)."""
    torch.manual_seed(0)
    teacher, student = create_model("smallcnn", 10, 1), create_model("tinycnn", 10, 1)
    info = DatasetInfo("tiny", 10, 1, 28, (0.5,), (0.5,), 2, False)
    syn = create_method("fast", teacher, student, info, nz=8, ngf=8, synthesis_batch_size=8,
                        g_steps=3, lr_g=5e-3, meta_update="reptile", progress=False)
    meta = syn.generator
    start = {k: v.clone() for k, v in meta.state_dict().items()}
    syn.synthesize()
    inner = {k: v.clone() for k, v in syn.fast.state_dict().items()}
    assert any(not torch.equal(start[k], p) for k, p in syn.fast.named_parameters())
    k = "l1.weight"
    assert (inner[k] - meta.state_dict()[k]).norm() < (inner[k] - start[k]).norm()
    # each phase starts from the meta generator, not from the previous copy
    syn.phase_generator()
    assert torch.equal(syn.fast.l1.weight, meta.l1.weight)
    state = syn.run_state()
    assert "meta_optimizer" in state and not any(k.startswith("fast.") for k in state)

    syn = create_method("fast", teacher, student, info, nz=8, ngf=8, synthesis_batch_size=8,
                        g_steps=1, lr_g=5e-3, progress=False)
    assert syn.cfg.fast.meta_update == "fomaml"
    seen = {}
    step = syn.meta_optimizer.step

    def record(*a, **kw):
        seen.update({n: p.grad.clone() for n, p in syn.generator.named_parameters()})
        return step(*a, **kw)

    syn.meta_optimizer.step = record
    syn.synthesize()
    fast_grads = dict(syn.fast.named_parameters())
    assert seen and all(torch.allclose(seen[n], fast_grads[n].grad) for n in seen)


def test_fast_bn_statistics_average_earlier_epochs():
    """Epoch 1 compares the plain batch statistics; from epoch 2 on every inner step compares
    0.1 x its own + 0.9 x the average of earlier epochs' last inner steps (never reset)."""
    from rgal.losses import BNStatistics

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3)).eval()
    stats = BNStatistics(net, momentum=0.9)
    a, b, c = (torch.randn(4, 1, 8, 8) * s for s in (1.0, 2.0, 3.0))
    with torch.no_grad():
        za, zb, zc = (net[0](x) for x in (a, b, c))

    def plain(z, mean, var):
        bn = net[1]
        return float((mean - bn.running_mean).norm() + (var - bn.running_var).norm())

    def moments(z):
        return z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=False)

    net(a)
    assert float(stats.loss()) == pytest.approx(plain(za, *moments(za)), rel=1e-5)
    stats.update_momentum()  # end of epoch 1: the average is batch a's statistics
    net(b)
    (ma, va), (mb, vb) = moments(za), moments(zb)
    assert float(stats.loss()) == pytest.approx(plain(zb, 0.1 * mb + 0.9 * ma,
                                                      0.1 * vb + 0.9 * va), rel=1e-5)
    net(c)  # another inner step of the same epoch: the average has not moved
    mc, vc = moments(zc)
    assert float(stats.loss()) == pytest.approx(plain(zc, 0.1 * mc + 0.9 * ma,
                                                      0.1 * vc + 0.9 * va), rel=1e-5)
    stats.update_momentum()  # folds in c, the epoch's last batch: 0.9 a + 0.1 c
    restored = BNStatistics(net, momentum=0.9)
    restored.load_state_dict(stats.state_dict())
    assert torch.allclose(restored._ema[0][0], 0.9 * ma + 0.1 * mc, atol=1e-6)


def test_diversity_measures_on_hand_built_embeddings():
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    uniform = torch.zeros(4, 4)
    m = diversity_measures(f, labels, uniform)
    assert m["div_intra"] == pytest.approx(0.0)
    assert m["div_nearest_other"] == pytest.approx(math.sqrt(2))
    assert m["div_entropy"] == pytest.approx(math.log(4))
    assert m["div_margin"] == pytest.approx(0.0)
    # spread classes, one close pair across classes; confident predictions
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    confident = torch.eye(4)[[0, 0, 1, 1]] * 100
    m = diversity_measures(f * 3.0, labels, confident)  # scale-free: features are normalised
    assert m["div_intra"] == pytest.approx(math.sqrt(2))
    assert m["div_nearest_other"] == pytest.approx((math.sqrt(2) + 0 + 0 + math.sqrt(2)) / 4)
    assert m["div_entropy"] == pytest.approx(0.0, abs=1e-6)
    assert m["div_margin"] == pytest.approx(1.0)


@pytest.mark.slow
def test_bench_on_a_tiny_budget_writes_all_its_files(tmp_path, fake_fmnist, teacher_file,
                                                     capsys):
    out = tmp_path / "bench"
    argv = ["bench", "--out", str(out), "--seeds", "2", "--data-root", str(fake_fmnist),
            "--methods", "rgal,dfad,kd-real,rgal-code,rgal:w_tri=0.5;margin=0.3",
            "--no-progress", "--set", f"teacher_weights={teacher_file}"]
    argv += [x for k, v in TINY.items() if k != "progress" for x in ("--set", f"{k}={v}")]
    assert main(argv) == 0, capsys.readouterr().err
    for name in ("results.csv", "results.md", "accuracy_vs_epoch.png", "accuracy_vs_time.png",
                 "samples.png"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 10
    assert {"method", "seed", "test_acc", "wall_s"} <= set(rows[0])
    assert {r["method"] for r in rows} == {"rgal", "dfad", "kd-real", "rgal-code",
                                           "rgal:w_tri=0.5;margin=0.3"}
    md = (out / "results.md").read_text()
    assert "| rgal-code |" in md and "±" in md
    cfg = json.loads((out / "runs" / "rgal_w_tri_0.5_margin_0.3" / "seed1" / "summary.json")
                     .read_text())["config"]
    assert cfg["rgal"]["w_rel_syn"] == 0.5 and cfg["rgal"]["margin"] == 0.3
    assert cfg["seed"] == 1
    capsys.readouterr()
    # an existing bench is refused unless resumed; resuming reuses finished runs
    assert main(argv) == 2 and "--resume" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    capsys.readouterr()
    # a finished run is reused only under the same settings
    assert main(argv + ["--resume", "--set", "kd_steps=3"]) == 2
    assert "kd_steps (2 -> 3)" in capsys.readouterr().err


def test_bench_bad_entries_exit_2(tmp_path, capsys):
    for methods in ("nosuch", "rgal:no_key=1", "rgal,rgal", "rgal:epochs=-1"):
        assert main(["bench", "--out", str(tmp_path / "b"), "--methods", methods]) == 2
        err = capsys.readouterr().err
        assert err.startswith("rgal: error:") and err.count("\n") == 1, (methods, err)
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_every_method_config_for_cifar_runs_end_to_end(tmp_path):
    """configs/methods/*.yaml: valid, one per method, and each runs (tiny budget, random teacher)."""
    from pathlib import Path

    from test_data import _make_cifar10

    from rgal.config import load_yaml
    from rgal.models.weights import save_weights

    _make_cifar10(tmp_path / "data", per_batch=8)
    torch.manual_seed(0)
    teacher = tmp_path / "wrn40_2.safetensors"
    save_weights(create_model("wrn40_2", 10, 3), teacher)
    files = sorted((Path(__file__).resolve().parent.parent / "configs" / "methods").glob("*.yaml"))
    assert {load_yaml(f)["method"] for f in files} == set(list_methods()) - {"rgal"}
    for f in files:
        cfg = distill_config(load_yaml(f), {
            "data_root": str(tmp_path / "data"), "teacher_weights": str(teacher),
            "out": str(tmp_path / f.stem), "epochs": 1, "g_steps": 1, "kd_steps": 1,
            "batch_size": 4, "synthesis_batch_size": 8, "ngf": 8, "device": "cpu",
            "progress": False, "download": False, "diversity_samples": 16, "bank_size": 64},
            lenient=True)
        assert (cfg.dataset, cfg.teacher, cfg.student, cfg.epochs) == ("cifar10", "wrn40_2",
                                                                       "wrn16_1", 1)
        summary = run_distillation(prepare_distillation(cfg), log=lambda _m: None)
        last = json.loads((tmp_path / f.stem / "metrics.jsonl").read_text().splitlines()[-1])
        assert summary["final_acc"] == last["test_acc"], f.name
        assert summary["config"]["method"] == load_yaml(f)["method"]


def test_holdout_evaluates_on_unseen_training_images(tmp_path, fake_fmnist, teacher_file):
    from rgal.data.datasets import load_dataset

    base = {**TINY, "data_root": str(fake_fmnist), "teacher_weights": str(teacher_file),
            "out": str(tmp_path / "h")}
    train = load_dataset("fashion-mnist", fake_fmnist, train=True, download=False)
    setup = prepare_distillation(distill_config(base, {"method": "kd-real", "holdout": 20}))
    assert torch.equal(setup.test.images, train.images[-20:])
    assert torch.equal(setup.train.images, train.images[:-20])
    setup = prepare_distillation(distill_config(base, {"holdout": 20}))
    assert len(setup.test) == 20
    with pytest.raises(ConfigError, match="holdout"):
        prepare_distillation(distill_config(base, {"holdout": len(train)}))


def test_a_holdout_run_says_held_out_not_test(tmp_path, fake_fmnist, teacher_file, capsys):
    """Accuracies on held-out training images are never labelled as test accuracies."""
    out = tmp_path / "h"
    argv = ["distill", "--out", str(out), "--data-root", str(fake_fmnist), "--no-progress",
            "--set", f"teacher_weights={teacher_file}", "--set", "holdout=20"]
    assert main(argv + [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]) == 0
    printed = capsys.readouterr().out
    assert "student held-out acc (last)" in printed and "test acc" not in printed
    page = (out / "report.html").read_text()
    assert "teacher held-out acc" in page and "test acc" not in page


def test_bench_table_times_when_each_entry_reaches_rgal_accuracy():
    from rgal.train.bench import results_table, time_to_accuracy

    assert time_to_accuracy([10, 20, 30], [50, 70, 80], 70) == 20
    assert time_to_accuracy([10, 20, 30], [50, 60, 65], 70) is None

    def row(method, seed, curve):
        return {"method": method, "seed": seed, "test_acc": curve[-1][2], "wall_s": curve[-1][1],
                "synthesis_s": 1.0, "distill_s": 1.0, "eval_s": 1.0, "images_synthesized": 10,
                **{k: 0.5 for k in ("div_intra", "div_nearest_other", "div_entropy",
                                    "div_margin")}, "curve": curve}

    rows = [row("rgal", 0, [(1, 50, 60), (2, 100, 80)]), row("rgal", 1, [(1, 50, 60), (2, 100, 78)]),
            row("fast+rgal", 0, [(1, 10, 79), (2, 20, 85)]),
            row("fast+rgal", 1, [(1, 10, 81), (2, 20, 83)]),  # mean 80 >= 79 at 10 s
            row("dafl", 0, [(1, 30, 40), (2, 60, 50)])]
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")]
             for line in results_table(rows).splitlines()}
    column = next(i for i, c in enumerate(cells["method"]) if "reaches rgal's acc at" in c)
    assert cells["fast+rgal"][column] == "10 (0.10)"
    assert cells["rgal"][column] == "100 (1.00)"
    assert cells["dafl"][column] == "never"
    assert "reaches" not in results_table(rows[4:])  # no rgal: no column


def test_gradient_shares_are_logged_and_leave_training_unchanged(tmp_path, fake_fmnist,
                                                                 teacher_file):
    from rgal.models.weights import load_weights

    base = {**TINY, "epochs": 2, "data_root": str(fake_fmnist), "grid_every": 0,
            "teacher_weights": str(teacher_file), "w_rel_syn": 1.0, "w_rel_stu": 1.0}
    weights = {}
    for every in (0, 1):
        out = tmp_path / f"g{every}"
        run_distillation(prepare_distillation(distill_config(base, {"grad_shares": every,
                                                                    "out": str(out)})),
                         log=lambda _m: None)
        student = create_model("tinycnn", 10, 1)
        load_weights(student, out / "student.safetensors")
        weights[every] = student.state_dict()
        last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        shares = {k: v for k, v in last.items() if k.startswith("share_")}
        if every == 0:
            assert not shares
            continue
        syn = [shares[f"share_{k}"] for k in ("loss_bn", "loss_oh", "loss_adv", "loss_rel_syn")]
        stu = [shares[f"share_{k}"] for k in ("loss_kd", "loss_cd", "loss_rel_stu")]
        assert sum(syn) == pytest.approx(1.0, abs=1e-4)
        assert sum(stu) == pytest.approx(1.0, abs=1e-4)
        assert all(0 <= v <= 1 for v in shares.values())
        from rgal.train.bench import result_row  # a bench row carries the epoch-mean shares

        row = result_row("rgal", 0, out)
        assert sum(row[f"share_{k}"] for k in ("loss_kd", "loss_cd", "loss_rel_stu")) == \
            pytest.approx(1.0, abs=1e-4)
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_readme_method_table_is_the_registry_table():
    """README's method table is `rgal methods --markdown`, generated from the registry."""
    from pathlib import Path

    from rgal.methods.registry import method_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("<!-- rgal methods --markdown -->\n") + len(
        "<!-- rgal methods --markdown -->\n")
    end = readme.index("<!-- end of rgal methods --markdown -->")
    assert readme[start:end] == method_table()
    for name in list_methods():
        assert f"| `{name}` |" in readme[start:end]


def test_bench_shares_table_averages_each_terms_share_per_entry():
    """A bench with `grad_shares` reports each term's share per entry (mean over seeds); an
    entry without a term shows a dash; a bench without shares has no such section."""
    from rgal.train.bench import shares_table

    rows = [{"method": "rgal", "seed": 0, "share_loss_kd": 0.8, "share_loss_rel_stu": 0.2},
            {"method": "rgal", "seed": 1, "share_loss_kd": 0.6, "share_loss_rel_stu": 0.4},
            {"method": "rgal-no-rel", "seed": 0, "share_loss_kd": 1.0}]
    table = shares_table(rows)
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in table.splitlines() if line.startswith("| ")}
    assert cells["method"] == ["kd", "rel_stu"]
    assert cells["rgal"] == ["0.700", "0.300"]
    assert cells["rgal-no-rel"] == ["1.000", "–"]
    assert shares_table([{"method": "rgal", "seed": 0, "test_acc": 80.0}]) == ""


def test_bench_pairs_each_plus_rgal_entry_with_its_plain_method():
    """results.md gives `X+rgal` minus `X` paired by seed, whatever overrides the entry has,
    and nothing when the plain method is absent."""
    from rgal.train.bench import combination_table

    def rows(entry, accs):
        return [{"method": entry, "seed": s, "test_acc": a} for s, a in enumerate(accs)]

    table = combination_table(rows("nayer", [80, 81, 79]) + rows("nayer+rgal:lr_g=0.002",
                                                                 [82, 83, 81]))
    line = next(x for x in table.splitlines() if x.startswith("| nayer+rgal"))
    assert [c.strip() for c in line.split("|")[1:-1]] == [
        "nayer+rgal:lr_g=0.002", "nayer", "+2.00 ± 0.00", "better"]
    assert combination_table(rows("cmi+rgal", [1, 2]) + rows("nayer", [1, 2])) == ""
