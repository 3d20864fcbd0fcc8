"""The config layer: typed values, ranges, YAML and overrides; random input never crashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rgal.cli import main
from rgal.config import (
    ConfigError,
    DistillConfig,
    build_config,
    config_fields,
    load_yaml,
    parse_set,
)
from rgal.methods import distill_config
from rgal.methods.registry import all_keys

FIELDS = all_keys()

values = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                        max_size=2))


def _in_range(name: str, value) -> bool:
    meta = FIELDS[name].metadata
    if meta.get("choices") and value not in meta["choices"]:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if meta.get("lo") is not None and value < meta["lo"]:
            return False
        if meta.get("hi") is not None and value > meta["hi"]:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(FIELDS)), value=values)
def test_random_values_are_accepted_typed_or_refused_with_config_error(name, value):
    try:
        cfg = distill_config({name: value}, lenient=True)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e)
        return
    if name not in {f.name for f in config_fields(DistillConfig)} and name not in cfg.rgal.__dict__:
        return  # a key of another method's section: skipped under lenient
    got = getattr(cfg, name) if name in cfg.__dict__ else getattr(cfg.rgal, name)
    assert _in_range(name, got)
    default = FIELDS[name].default
    if default is not None and got is not None:
        assert isinstance(got, type(default))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(FIELDS)), raw=st.text(max_size=10))
def test_random_command_lines_exit_2_without_traceback(tmp_path, capsys, name, raw):
    out = tmp_path / "never"
    # an unknown teacher guarantees an exit before any work, whatever the random value does
    argv = ["distill", "--teacher", "no-such-net", "--out", str(out),
            "--" + name.replace("_", "-"), raw]
    if name in ("teacher", "out"):
        argv = ["distill", "--teacher", "no-such-net", "--out", str(out), "--set", f"{name}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rgal: error:") and err.count("\n") == 1
    assert not out.exists()


def test_layers_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 7\nlr: 0.5\nstudent: resnet8\n")
    cfg = distill_config(load_yaml(path), {"lr": "0.25"},
                         parse_set(["epochs=9", "relation_direction=code"]))
    assert (cfg.epochs, cfg.lr, cfg.student, cfg.rgal.relation_direction) == (
        9, 0.25, "resnet8", "code")
    assert cfg.g_steps == DistillConfig().g_steps
    assert build_config(DistillConfig, {"lr": 0.5}).lr == 0.5  # the shared keys alone


@pytest.mark.parametrize("text", ["- a\n- b\n", "epochs: [unclosed\n", "just a string\n"])
def test_bad_yaml_files_are_config_errors(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_yaml(path)


def test_shipped_configs_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "configs"
    files = sorted(root.glob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        cfg = distill_config(load_yaml(path))
        assert cfg.method == "rgal", path
    seed = distill_config(load_yaml(root / "cifar10_wrn40_2_wrn16_1.yaml"))
    assert (seed.epochs, seed.g_steps, seed.kd_steps, seed.synthesis_batch_size, seed.tau,
            seed.teacher, seed.student, seed.reset_generator) == (
        200, 400, 400, 256, 20.0, "wrn40_2", "wrn16_1", True)
    demo = distill_config(load_yaml(root / "fmnist_demo.yaml"))
    assert demo == distill_config({})  # the YAML documents exactly the embedded default


ROOT = Path(__file__).resolve().parent.parent


def _bench_run_at_35(entry: str, seed: int) -> DistillConfig:
    """The config `rgal bench --set epochs=35 --methods ENTRY` trains for `seed` on the
    Fashion-MNIST suite (the bench's defaults, the packaged tuned settings, the entry)."""
    from rgal.train import bench

    tuned = bench.load_tuned(bench.tuned_path("fashion-mnist", "smallcnn", "tinycnn"))
    (_, _, ran), = bench.plan_runs([entry], [seed], Path("b"),
                                   [dict(bench.DEFAULT_BUDGET), {"epochs": 35}],
                                   tuned=tuned["methods"])
    return ran


def _keys_that_differ(a: dict, b: dict) -> set[str]:
    return {k for k, v in a.items() if b[k] != v}


def test_g60_config_is_the_bench_run_it_names():
    """configs/fmnist_g60.yaml trains exactly what `rgal bench --set epochs=35 --methods
    'rgal:g_steps=60'` trains (the bench's defaults, rgal's tuned settings, the entry)."""
    ran = _bench_run_at_35("rgal:g_steps=60", 3)
    shipped = distill_config(load_yaml(ROOT / "configs" / "fmnist_g60.yaml"),
                             {"seed": 3, "out": ran.out, "progress": False})
    assert shipped == ran
    demo = distill_config(load_yaml(ROOT / "configs" / "fmnist_demo.yaml"))
    assert _keys_that_differ(demo.to_dict(), shipped.to_dict()) == {
        "synthesis_batch_size", "kd_steps", "batch_size", "mix", "rgal", "seed", "out",
        "progress"}
    assert _keys_that_differ(demo.to_dict()["rgal"], shipped.to_dict()["rgal"]) == {
        "pair_sampling"}


def test_demo_config_is_the_bench_run_it_was_chosen_as():
    """The embedded default is what `rgal bench --set epochs=35 --methods
    'rgal:g_steps=60;synthesis_batch_size=64;pair_sampling=single;mix=cutmix;batch_size=64;
    kd_steps=100'` trains (research.md sections 27, 32 and 41)."""
    ran = _bench_run_at_35("rgal:g_steps=60;synthesis_batch_size=64;pair_sampling=single;"
                           "mix=cutmix;batch_size=64;kd_steps=100", 0)
    demo = distill_config(load_yaml(ROOT / "configs" / "fmnist_demo.yaml"),
                          {"out": ran.out, "progress": False})
    assert demo == ran


def test_bf16_config_is_the_bench_run_it_was_measured_as():
    """configs/fmnist_demo_bf16.yaml trains what `rgal bench --set epochs=35 --methods
    'rgal:g_steps=90;synthesis_batch_size=64;pair_sampling=single;mix=cutmix;precision=bf16'`
    trains (research.md sections 35 and 37), and differs from the demo only there."""
    entry = "rgal:g_steps=90;synthesis_batch_size=64;pair_sampling=single;mix=cutmix;precision=bf16"
    ran = _bench_run_at_35(entry, 2)
    shipped = distill_config(load_yaml(ROOT / "configs" / "fmnist_demo_bf16.yaml"),
                             {"seed": 2, "out": ran.out, "progress": False})
    assert shipped == ran
    demo = distill_config(load_yaml(ROOT / "configs" / "fmnist_demo.yaml"),
                          {"seed": 2, "out": ran.out, "progress": False})
    # measured with the student phase of its time (50 steps of 128), kept as measured
    assert _keys_that_differ(demo.to_dict(), shipped.to_dict()) == {
        "g_steps", "precision", "kd_steps", "batch_size"}
    assert (shipped.kd_steps, shipped.batch_size) == (50, 128)
    assert (shipped.g_steps, shipped.precision) == (90, "bf16")


def test_bench_keeps_its_shared_synthesis_setting_below_each_methods_own():
    """The suites run 15 generator steps on 128 images at lr_g 0.001, with two views per pool
    image, whatever the embedded default, while a method's own defaults and tuned settings
    still win over that."""
    from rgal.train import bench

    default = distill_config({})
    assert (default.g_steps, default.synthesis_batch_size, default.rgal.pair_sampling,
            default.mix, default.kd_steps, default.batch_size) == (
        60, 64, "single", "cutmix", 100, 64)
    tuned = {"rgal": {"lr_g": 0.003}}
    runs = {e: cfg for e, _, cfg in bench.plan_runs(
        ["rgal", "dfad", "fast", "nayer", "nayer+rgal", "cmi+rgal", "rgal:g_steps=30",
         "rgal-single-views"], [0], Path("b"), [dict(bench.DEFAULT_BUDGET)], tuned=tuned)}
    assert (runs["rgal"].g_steps, runs["rgal"].synthesis_batch_size,
            runs["rgal"].lr_g) == (15, 128, 0.003)
    # the student phase of the suites' budget: 50 steps of 128 pool images, for every method
    assert all((cfg.kd_steps, cfg.batch_size) == (50, 128) for cfg in runs.values())
    for entry in ("rgal", "nayer+rgal", "cmi+rgal", "rgal:g_steps=30"):
        assert runs[entry].rgal.pair_sampling == "true", entry
    assert all(cfg.mix == "none" for cfg in runs.values())  # no suite entry mixes
    assert runs["rgal-single-views"].rgal.pair_sampling == "single"  # the ablation's own key
    # the suites' setting applies where it means something, lenient or not
    assert distill_config({"method": "dfad"}, under=bench.SUITE_SHARED).g_steps == 15
    assert (runs["dfad"].lr_g, runs["dfad"].synthesis_batch_size) == (1e-3, 128)
    assert runs["fast"].g_steps == 5 and runs["fast"].lr_g == 3e-3  # Fast's own defaults
    assert runs["nayer"].lr_g == 4e-3
    assert runs["rgal:g_steps=30"].g_steps == 30  # an entry's own keys win
    for method in ("cmi", "cmi+rgal", "dfq", "zskt", "dfad"):  # their authors' rate, not the demo's
        assert distill_config({"method": method}).lr_g == 1e-3, method


def test_only_rgal_mixes_pool_images_by_default():
    """CutMix is the demo's choice for rgal (research.md section 32); every other method keeps
    its paper's unmixed student batches unless the user asks, and the paper's rgal configs
    say none."""
    from rgal.methods import list_methods

    for method in list_methods():
        want = "cutmix" if method == "rgal" else "none"
        assert distill_config({"method": method}).mix == want, method
    assert distill_config({"method": "cmi", "mix": "cutmix"}).mix == "cutmix"  # the user wins
    demo_recipes = {"fmnist_demo.yaml", "fmnist_demo_bf16.yaml"}
    shipped = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p.name not in demo_recipes)
    assert len(shipped) >= 6  # the CIFAR and ImageNet configs and fmnist_g60
    for path in shipped + sorted((ROOT / "configs" / "methods").glob("*.yaml")):
        assert distill_config(load_yaml(path)).mix == "none", path.name
