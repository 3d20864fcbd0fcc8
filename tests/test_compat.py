"""The authors' own command line runs as `rgal distill` with the same flags."""

from __future__ import annotations

import pytest
import torch

from rgal import compat
from rgal.cli import build_parser, main
from rgal.cliargs import config_layers
from rgal.methods import distill_config
from rgal.models import create_model

# the seed README's command, `python main.py` replaced by `rgal distill`
SEED = """--epochs 200 --dataset cifar10 --batch_size 128 --synthesis_batch_size 256
--teacher wrn40_2 --student wrn16_1 --lr 0.1 --kd_steps 400 --ep_steps 400 --g_steps 400
--lr_g 1e-3 --adv 1.0 --bn 1.0 --oh 1.0 --act 0.001 --gpu 0 --seed 0 --T 20
--save_dir run/scratch1 --log_tag scratch1 --cd_loss 0.1 --gram_loss 0
--teacher_weights best_model/cifar10_wrn40_2.pth --custom_steps 1.0 --print_freq 50
--triplet_target student --pair_sample --striplet_feature global --start_layer 2 --triplet 0.1
--striplet 0.1 --balanced_sampling --balance 0.1""".split()


def _config(args: list[str]):
    argv, notes = compat.translate(args)
    return distill_config(*config_layers(build_parser().parse_args(argv))), notes


def test_the_seed_command_maps_onto_the_rgal_method():
    cfg, notes = _config(SEED)
    r = cfg.rgal
    assert (cfg.dataset, cfg.teacher, cfg.student, cfg.epochs, cfg.g_steps, cfg.kd_steps) == (
        "cifar10", "wrn40_2", "wrn16_1", 200, 400, 400)
    assert (cfg.batch_size, cfg.synthesis_batch_size, cfg.lr, cfg.lr_g, cfg.tau) == (
        128, 256, 0.1, 1e-3, 20.0)
    assert (cfg.w_adv, cfg.w_bn, cfg.w_oh, r.w_cd, r.w_rel_syn, r.w_rel_stu) == (
        1.0, 1.0, 1.0, 0.1, 0.1, 0.1)
    assert (r.pair_sampling, r.syn_sampler, r.syn_relation_model, r.relation_stages) == (
        "true", "focal", "student", "2:4")
    assert (r.stu_relation_feature, r.syn_relation_feature, r.cd_start_stage) == (
        "penultimate", "stages", 0)
    assert (cfg.out, cfg.teacher_weights, cfg.nz, cfg.ngf, cfg.reset_generator) == (
        "run/scratch1", "best_model/cifar10_wrn40_2.pth", 256, 64, True)
    text = " ".join(notes)
    assert "--gpu" in text and "--log_tag" in text and "--print_freq" in text
    assert "--act" in text and "--balance" in text


def test_left_out_flags_take_the_reference_parsers_defaults():
    cfg, _ = _config(["--kd_steps", "5", "--teacher_weights", "t.pth"])
    assert (cfg.kd_steps, cfg.w_bn, cfg.w_adv, cfg.w_oh, cfg.tau, cfg.g_steps) == (
        5, 0.0, 0.0, 0.0, 1.0, 1)
    assert (cfg.dataset, cfg.rgal.pair_sampling, cfg.rgal.syn_sampler) == (
        "cifar100", "false", "distance")
    assert (cfg.rgal.syn_relation_model, cfg.rgal.stu_relation_feature) == ("teacher", "stages")
    assert cfg.synthesis_batch_size == cfg.batch_size == 128
    cfg, _ = _config(["--dataset", "cifar10", "--teacher", "resnet34"])
    assert cfg.teacher_weights == "checkpoints/pretrained/cifar10_resnet34.pth"
    # --cmi: CMI's synthesizer with RGAL's student phase, as the reference runs it
    cfg, notes = _config(["--cmi", "--cr", "0.8", "--cr_T", "0.1", "--triplet", "0.1"])
    assert cfg.method == "cmi+rgal" and cfg.cmi.w_cr == 0.8 and cfg.rgal.w_rel_syn == 0.0
    assert any("--triplet" in n for n in notes)


@pytest.mark.parametrize(("extra", "word"), [
    (["--fmix"], "FMix"), (["--resume", "run/x.pth"], "--resume"),
    (["--gram_loss", "0.1"], "gram"), (["--ep_steps", "800"], "rounds per epoch"),
    (["--striplet_feature", "nothing"], "striplet_feature"), (["--adv", "lots"], "--adv"),
])
def test_unsupported_reference_flags_exit_2_in_one_line(extra, word, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["distill", *SEED, *extra, "--save_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rgal: error:") and word in err[-1]
    assert not out.exists()


@pytest.mark.slow
def test_the_seed_command_runs_end_to_end(tmp_path, capsys):
    from test_data import _make_cifar10

    _make_cifar10(tmp_path / "data", per_batch=8)
    torch.manual_seed(0)
    weights = tmp_path / "cifar10_wrn40_2.pth"
    torch.save({"state_dict": create_model("wrn40_2", 10, 3).state_dict()}, weights)
    out = tmp_path / "scratch1"
    small = ["--epochs", "1", "--kd_steps", "2", "--ep_steps", "2", "--g_steps", "1",
             "--batch_size", "4", "--synthesis_batch_size", "8", "--data_root",
             str(tmp_path / "data"), "--teacher_weights", str(weights), "--save_dir", str(out)]
    code = main(["distill", *SEED, *small, "--device", "cpu", "--no-progress", "--set",
                 "ngf=8", "--set", "diversity_samples=16"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "reference code's command line" in captured.err and "--gpu" in captured.err
    assert (out / "student.safetensors").is_file() and (out / "summary.json").is_file()


def test_a_bad_reference_command_line_gets_one_error_line(capsys):
    assert main(["distill", "--g-steps", "--cmi"]) == 2  # --cmi is a reference flag
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("rgal: error:"), lines
