"""report.html: one self-contained page per run folder (distill, quantize, incremental, bench),
built from the folder's files; it renders in a real headless browser."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from rgal.cli import main
from rgal.engine.html_report import REPORT, detect_kind, write_report

TINY = ["--epochs", "2", "--g-steps", "2", "--kd-steps", "2", "--batch-size", "8",
        "--synthesis-batch-size", "16", "--set", "ngf=8", "--set", "nz=16", "--set",
        "diversity_samples=32", "--no-progress", "--device", "cpu"]
CHROMIUM = Path("/usr/bin/chromium")


class _Page(HTMLParser):
    """Every tag and attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]

    def handle_data(self, data):
        self.text.append(data)


def self_contained(path: Path) -> _Page:
    """Parse a report and check it needs nothing outside itself; return the parsed page."""
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text  # no URL of any server
    page = _Page()
    page.feed(text)
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(page.tags)
    for tag, key, value in page.attrs:
        if key == "src":  # every image inlined, and a real PNG
            assert tag == "img" and value.startswith("data:image/png;base64,"), value[:60]
            Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[1]))).verify()
        if key == "href":  # links only to files beside it
            assert ":" not in value and not value.startswith("/"), value
    assert ("meta", "http-equiv", "Content-Security-Policy") in page.attrs
    return page


def _images(page: _Page) -> list[bytes]:
    return [base64.b64decode(v.split(",", 1)[1]) for t, k, v in page.attrs if k == "src"]


@pytest.fixture(scope="module")
def distill_run(tmp_path_factory, fake_fmnist, teacher_file) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    assert main(["distill", "--data-root", str(fake_fmnist), "--teacher-weights",
                 str(teacher_file), "--out", str(out), *TINY]) == 0
    return out


def test_distill_run_report_holds_summary_plots_grid_and_config(distill_run):
    path = distill_run / REPORT
    assert path.is_file() and detect_kind(distill_run) == "distill"
    page = self_contained(path)
    text = " ".join(page.text)
    summary = json.loads((distill_run / "summary.json").read_text())
    assert f"{summary['final_acc']:.2f}%" in text and f"{summary['teacher_acc']:.2f}%" in text
    for section in ("Summary", "Accuracy", "Loss curves", "Latest synthetic images", "Config"):
        assert section in text, section
    for key in summary["config"]:  # the whole resolved config
        assert key in text, key
    images = _images(page)
    assert (distill_run / "accuracy.png").read_bytes() in images
    assert (distill_run / "grids" / "epoch_002.png").read_bytes() in images  # the latest grid
    assert len(images) == 3  # + the loss curves drawn from metrics.jsonl
    curves = Image.open(io.BytesIO(images[1]))
    assert curves.width >= 600 and len(curves.convert("RGB").getcolors(1 << 20)) > 20


def test_report_of_an_unfinished_run_is_built_from_what_is_there(distill_run, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(distill_run, partial)
    (partial / "summary.json").unlink()
    (partial / REPORT).unlink()
    lines = (partial / "metrics.jsonl").read_text().splitlines()
    (partial / "metrics.jsonl").write_text(lines[0] + "\n" + lines[1][:20])  # torn last line
    page = self_contained(write_report(partial))
    assert "the run has not finished" in " ".join(page.text)


def test_quantize_incremental_and_bench_reports(tmp_path, fake_fmnist, teacher_file):
    q = tmp_path / "q"
    assert main(["quantize", "--method", "ptq-noise", "--calib-batches", "2", "--batch-size",
                 "16", "--weights", str(teacher_file), "--data-root", str(fake_fmnist),
                 "--out", str(q), "--no-progress", "--device", "cpu"]) == 0
    assert detect_kind(q) == "quantize"
    page = self_contained(q / REPORT)
    summary = json.loads((q / "summary.json").read_text())
    text = " ".join(page.text)
    assert f"{summary['quant_acc']:.2f}%" in text and "W4 A4" in text and "Quantizers" in text
    assert (q / "synthetic.png").read_bytes() in _images(page)

    incr = tmp_path / "incr"
    assert main(["incremental", "--data-root", str(fake_fmnist), "--method", "lwf", "--tasks",
                 "2", "--epochs", "0.5", "--batch-size", "8", "--no-progress", "--device",
                 "cpu", "--out", str(incr)]) == 0
    assert detect_kind(incr) == "incremental"
    page = self_contained(incr / REPORT)
    assert (incr / "acc_matrix.png").read_bytes() in _images(page)
    assert "average forgetting" in " ".join(page.text)

    bench = tmp_path / "bench"
    assert main(["bench", "--methods", "rgal", "--seeds", "1", "--out", str(bench),
                 "--data-root", str(fake_fmnist), "--no-progress",
                 "--set", f"teacher_weights={teacher_file}", "--set", "epochs=1",
                 "--set", "g_steps=1", "--set", "kd_steps=1", "--set", "batch_size=8",
                 "--set", "synthesis_batch_size=16", "--set", "ngf=8", "--set", "nz=16",
                 "--set", "diversity_samples=16", "--set", "device=cpu"]) == 0
    assert detect_kind(bench) == "bench"
    page = self_contained(bench / REPORT)
    assert (bench / "accuracy_vs_epoch.png").read_bytes() in _images(page)
    links = [v for t, k, v in page.attrs if k == "href"]
    assert links == ["runs/rgal/seed0/report.html"]
    assert (bench / links[0]).is_file()
    assert "student acc (%)" in " ".join(page.text)  # the results.md table


def test_report_command(distill_run, tmp_path, capsys):
    (distill_run / REPORT).unlink()
    assert main(["report", str(distill_run)]) == 0
    assert (distill_run / REPORT).is_file()
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(distill_run, tmp_path):
    shot = tmp_path / "report.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1200,2000",
           (distill_run / REPORT).resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    assert shot.is_file()
    with Image.open(shot) as im:
        assert im.size == (1200, 2000)
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
    # not blank: text, plots and images give thousands of colours; no single colour covers
    # nearly everything
    assert colours is not None and len(colours) > 500
    assert max(n for n, _ in colours) < 0.9 * 1200 * 2000
