"""benchmarks/throughput.py: its FLOP-counting rule and a tiny end-to-end run."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import BENCHMARKS, load_benchmark
from torch import nn


@pytest.fixture(scope="module")
def throughput():
    mod = load_benchmark("throughput")
    yield mod
    sys.modules.pop(mod.__name__, None)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(100, 2))


# conv: 2 images x 4 x 5 x 5 outputs x 3 x 3 x 3 MACs; linear: 2 x 2 outputs x 100 MACs
CONV, LIN = 2 * (2 * 4 * 25 * 27), 2 * (2 * 2 * 100)


def test_flop_rule_frozen_model_with_image_gradients(throughput):
    """Synthesis case: frozen weights, input requires grad -> backward = forward."""
    net = _net().requires_grad_(False)
    counter = throughput.FlopCounter({"t": net})
    with counter.measure() as c:
        net(torch.rand(2, 3, 5, 5, requires_grad=True)).sum().backward()
    assert c.forward == {"t": CONV + LIN} and c.backward == {"t": CONV + LIN}


def test_flop_rule_trained_model_on_data(throughput):
    """Student case: data input (no grad) -> first layer weight grad only, later layers both."""
    net = _net()
    counter = throughput.FlopCounter({"s": net})
    with counter.measure() as c:
        net(torch.rand(2, 3, 5, 5)).sum().backward()
    assert c.forward == {"s": CONV + LIN} and c.backward == {"s": CONV + 2 * LIN}
    with counter.measure() as c, torch.no_grad():
        net(torch.rand(2, 3, 5, 5))
    assert c.forward == {"s": CONV + LIN} and c.backward == {}
    counter.remove()
    with counter.measure() as c:
        net(torch.rand(2, 3, 5, 5))
    assert c.forward == {}


def test_tiny_run_writes_the_table(throughput, tmp_path):
    out = tmp_path / "throughput.md"
    assert throughput.main(["--tiny", "--settings", "fmnist", "--out", str(out)]) == 0
    text = out.read_text()
    for row in ("median synthesis step", "synthesis images/s", "median distillation step",
                "synthesis / matmul rate", "I/O (files)", "matmul rate", "checkpoint"):
        assert row in text
    assert "Fashion-MNIST default" in text and "TINY MODE" in text
    rows = [(cells[1].strip(), cells[2].strip()) for cells in
            (line.split("|") for line in text.splitlines())
            if len(cells) == 4 and cells[0] == ""]
    table = dict(rows)
    assert float(table["synthesis step GFLOP (fwd + bwd)"]) > 0
    wall, cpu = table["synthesis achieved GFLOP/s (wall / CPU time)"].split(" / ")
    assert float(wall) > 0 and float(cpu) > 0
    i = [label for label, _ in rows].index("short epoch wall")
    split = rows[i + 1:i + 6]
    assert [label for label, _ in split] == ["synthesis", "distillation", "evaluation",
                                             "I/O (files)", "host (other)"]
    shares = [float(value.split("(")[1].rstrip("%)")) for _, value in split]
    assert abs(sum(shares) - 100) < 1.0


def test_speed_options_are_timed_against_fp32(throughput, tmp_path):
    out = tmp_path / "throughput.md"
    assert throughput.main(["--tiny", "--settings", "fmnist", "--out", str(out),
                            "--options", "bf16,channels_last,fused"]) == 0
    text = out.read_text()
    section = text.split("## Speed options", 1)[1]
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| option")}
    assert list(rows) == ["fp32", "bf16", "channels_last", "fused"]  # fp32: the reference
    assert all("(x1.00)" in cell for cell in rows["fp32"])
    for cells in rows.values():
        for cell in cells:
            assert float(cell.split("(x")[1].rstrip(") ")) > 0


def test_unknown_speed_option_is_refused(throughput, tmp_path):
    with pytest.raises(SystemExit, match="unknown option"):
        throughput.main(["--tiny", "--options", "fp64", "--out", str(tmp_path / "t.md")])


@pytest.mark.slow
def test_gpu_check_runs_tiny_on_cpu(tmp_path):
    """benchmarks/gpu_check.sh --device cpu --tiny: every step runs and lands in its report."""
    import os
    import subprocess

    script = BENCHMARKS / "gpu_check.sh"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(script), "--device", "cpu", "--tiny", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = (tmp_path / "gpu_check.md").read_text()
    for heading in ("## Device", "## Tests on the device", "## Throughput, CIFAR setting",
                    "## Two epochs of the seed's recipe"):
        assert heading in report, heading
    assert "native bf16:" in report and " passed" in report and "failed" not in report
    assert "| bf16 |" in report  # the bf16 row of the options table
    assert "Projected wall time of the seed's 200-epoch recipe" in report
    assert "tests exit status 0" in report
    # a bad argument is refused with one line and exit status 2
    bad = subprocess.run([str(script), "--nope"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
