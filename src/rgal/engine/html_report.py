"""`report.html`: one self-contained page per run folder, built from the folder's own files.

The page is made only from what a run leaves on disk (summary.json, metrics.jsonl, the PNGs,
results.md of a bench), so it can be rebuilt at any time:

    python -m rgal.engine.html_report runs/demo        # or: rgal report runs/demo

It holds the summary table, the accuracy plot, the loss curves (drawn here from
metrics.jsonl), the latest synthetic grid and the config. Every image is inlined as a
`data:` URI and the style sheet is inline; there is no script, and a Content-Security-Policy
forbids any network access, so the file opens anywhere, offline, with no server.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPORT = "report.html"


def split_name(holdout: int | None) -> str:
    """What a run's accuracies are measured on: "held-out" (training images set aside with
    `holdout`) or "test"."""
    return "held-out" if holdout else "test"

# Fields of a metrics record that are positions, times or counters, not curves of the
# optimisation (they are listed in the per-epoch table, not drawn as loss curves).
_NOT_CURVES = ("epoch", "task", "steps", "test_acc", "acc_seen", "pool_size",
               "images_synthesized", "elapsed_s", "synthesis_s", "distill_s", "eval_s",
               "train_s", "inversion_s")

_CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #d9dee4; --bg: #f5f7fa; --card: #ffffff;
        --accent: #2f6fb0; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 28px 28px 60px; }
header { border-bottom: 3px solid var(--accent); padding-bottom: 12px; margin-bottom: 22px; }
.kind { text-transform: uppercase; letter-spacing: .08em; font-size: 12px; font-weight: 600;
        color: var(--accent); }
h1 { font-size: 26px; margin: 4px 0 4px; font-weight: 650; }
.where { color: var(--muted); font-size: 13px; font-family: ui-monospace, Menlo, Consolas,
         monospace; word-break: break-all; }
h2 { font-size: 18px; margin: 34px 0 12px; padding-bottom: 6px;
     border-bottom: 1px solid var(--line); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr));
         gap: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
        padding: 12px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
               letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 650; margin-top: 2px;
               font-variant-numeric: tabular-nums; }
.card .note { color: var(--muted); font-size: 12px; }
figure { margin: 0 0 18px; background: var(--card); border: 1px solid var(--line);
         border-radius: 8px; padding: 12px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figure img.pixels { image-rendering: pixelated; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 8px; text-align: center; }
.row { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 14px; }
table { border-collapse: collapse; background: var(--card); font-size: 13px;
        font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 9px; text-align: right; }
th { background: #eef1f5; font-weight: 600; }
td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
.scroll { overflow-x: auto; max-width: 100%; }
.kv td:first-child { font-family: ui-monospace, Menlo, Consolas, monospace; color: var(--muted); }
.kv td, .kv th { text-align: left; }
details { margin: 10px 0; }
summary { cursor: pointer; color: var(--accent); font-weight: 600; }
.columns { column-width: 330px; column-gap: 18px; }
.columns table { width: 100%; break-inside: avoid; margin-bottom: 0; }
p.text { max-width: 820px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
a { color: var(--accent); }
"""


# ------------------------------------------------------------------------ reading the folder

def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if isinstance(record, dict):
            records.append(record)
    return records


def detect_kind(run_dir: Path) -> str:
    """`bench`, `quantize`, `incremental` or `distill`, from the files in the folder."""
    summary = _read_json(run_dir / "summary.json") or {}
    if (run_dir / "results.md").is_file() or (run_dir / "results.csv").is_file():
        return "bench"
    if "quant_acc" in summary or (run_dir / "quantized_int.safetensors").is_file():
        return "quantize"
    if "acc_matrix" in summary or (run_dir / "acc_matrix.png").is_file():
        return "incremental"
    return "distill"


# ------------------------------------------------------------------------ html pieces

def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _image(path: Path | None, caption: str, pixels: bool = False) -> str:
    """A PNG as an inline figure; `pixels`: a picture of small images, shown enlarged 1.5x
    with sharp pixels."""
    if path is None or not path.is_file():
        return ""
    data = path.read_bytes()
    attrs = ""
    if pixels:
        width = _png_width(data)
        attrs = ' class="pixels"' + (f' style="width: {int(width * 1.5)}px"' if width else "")
    return (f'<figure><img{attrs} alt="{_esc(caption)}" src="{_png_uri(data)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _png_width(data: bytes) -> int | None:
    """The width in a PNG header (None if the bytes are not a PNG)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big")


def _figure_bytes(png: bytes | None, caption: str) -> str:
    if not png:
        return ""
    return (f'<figure><img alt="{_esc(caption)}" src="{_png_uri(png)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:,.{max(digits - 2, 2)}f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v, digits) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v, digits)}" for k, v in value.items())
    return str(value)


def _cards(items: Sequence[tuple[str, str, str]]) -> str:
    cells = "".join(f'<div class="card"><div class="label">{_esc(label)}</div>'
                    f'<div class="value">{_esc(value)}</div>'
                    + (f'<div class="note">{_esc(note)}</div>' if note else "") + "</div>"
                    for label, value, note in items)
    return f'<div class="cards">{cells}</div>'


def _inline(text: str) -> str:
    """Escaped text with markdown's `code` and **bold** spans as html."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(text))
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "",
           markdown: bool = False) -> str:
    cell = _inline if markdown else _esc
    head = "".join(f"<th>{cell(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(_fmt(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return (f'<div class="scroll"><table{attr}><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _config_section(config: dict[str, Any] | None) -> str:
    if not config:
        return ""
    items = [(k, v if isinstance(v, str) else "–" if v is None else json.dumps(v))
             for k, v in config.items()]  # values as written in a config file
    per = math.ceil(len(items) / 3) if len(items) > 12 else len(items)
    tables = "".join(_table(("key", "value"), items[i:i + per], "kv")
                     for i in range(0, len(items), per))
    return (f"<h2>Config</h2><details open><summary>{len(items)} keys, as resolved for this "
            f'run</summary><div class="columns">{tables}</div></details>')


def _seconds(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "–"
    s = float(s)
    if s < 120:
        return f"{s:.0f} s"
    return f"{int(s // 60)} min {s % 60:.0f} s" if s < 3600 else f"{s / 3600:.1f} h"


def _pct(v: Any) -> str:
    return f"{v:.2f}%" if isinstance(v, (int, float)) else "–"


# ------------------------------------------------------------------------ curves

def curve_keys(records: list[dict[str, Any]]) -> list[str]:
    """The numeric fields of the records drawn as curves (losses, diversity, learning rate)."""
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            if k in _NOT_CURVES or k in keys or isinstance(v, bool):
                continue
            if isinstance(v, (int, float)) or v is None:
                keys.append(k)
    return [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in records)]


def _curve_group(key: str) -> int:
    """1: losses and other terms, 2: diversity measures, 3: learning rates."""
    if key.startswith("div_"):
        return 2
    if key == "lr" or key.startswith("lr_"):
        return 3
    return 1


def curves_png(records: list[dict[str, Any]], x_key: str) -> bytes | None:
    """Small multiples, one panel per curve field of `records`, as PNG bytes (None if none)."""
    keys = sorted(curve_keys(records), key=_curve_group)  # stable: the records' own order
    if not keys or not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.05 * rows), dpi=110,
                             squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys, strict=False):
        pts = [(r.get(x_key, i + 1), r[key]) for i, r in enumerate(records)
               if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        ax.set_visible(True)
        colour = {1: "#2f6fb0", 2: "#2e8b57", 3: "#b5651d"}[_curve_group(key)]
        ax.plot(xs, ys, color=colour, lw=1.4, marker="o" if len(xs) <= 40 else None, ms=2.5)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(set(xs)) == 1:  # a single point: an axis around it, one tick
            ax.set_xlim(xs[0] - 1, xs[0] + 1)
            ax.set_xticks([xs[0]])
        ax.grid(alpha=0.3)
        positive = all(y > 0 for y in ys)
        if positive and len(ys) > 1 and max(ys) / min(ys) > 100:
            ax.set_yscale("log")
    for ax in axes[-1]:
        if ax.get_visible():
            ax.set_xlabel(x_key, fontsize=8)
    # fixed margins in inches (tight_layout would double the drawing time)
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.55 / width, right=1 - 0.12 / width, top=1 - 0.3 / height,
                        bottom=0.45 / height, wspace=0.42, hspace=0.55)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _records_table(records: list[dict[str, Any]], x_key: str, limit: int = 200) -> str:
    if not records:
        return ""
    keys: list[str] = []
    for r in records:
        keys += [k for k, v in r.items()
                 if k not in keys and k != x_key and not isinstance(v, (list, dict))]
    rows = [[r.get(x_key, i + 1), *(r.get(k) for k in keys)]
            for i, r in enumerate(records[-limit:])]
    return (f"<details><summary>every {x_key} ({len(records)} rows of metrics.jsonl)</summary>"
            + _table([x_key, *keys], rows) + "</details>")


def _latest(paths: list[Path]) -> Path | None:
    return sorted(paths)[-1] if paths else None


# ------------------------------------------------------------------------ the kinds of run

def _distill_body(run_dir: Path, summary: dict[str, Any], records: list[dict[str, Any]]
                  ) -> tuple[str, str]:
    cfg = summary.get("config") or {}
    title = (f"{cfg.get('method', 'distill')}: {cfg.get('teacher', '?')} → "
             f"{cfg.get('student', '?')} on {cfg.get('dataset', '?')}") if cfg else "distill run"
    last = records[-1] if records else {}
    done = summary.get("epochs")
    split = split_name(cfg.get("holdout"))
    cards = [
        (f"teacher {split} acc", _pct(summary.get("teacher_acc")),
         f"{summary['teacher_params'] / 1e6:.2f}M params" if "teacher_params" in summary else ""),
        ("student acc (last)", _pct(summary.get("final_acc", last.get("test_acc"))),
         f"epoch {last.get('epoch')}" if last else ""),
        ("student acc (best)", _pct(summary.get("best_acc")),
         f"epoch {summary.get('best_epoch')}" if "best_epoch" in summary else ""),
        ("epochs", f"{len(records)}" + (f" / {done}" if done else ""),
         "" if summary else "no summary.json: the run has not finished"),
        ("wall time", _seconds(summary.get("wall_s", last.get("elapsed_s"))),
         (f"synthesis {_seconds(summary.get('synthesis_s'))}, student "
          f"{_seconds(summary.get('distill_s'))}, eval {_seconds(summary.get('eval_s'))}")
         if "synthesis_s" in summary else ""),
        ("images synthesized", f"{summary.get('images_synthesized', last.get('images_synthesized', '–'))}",
         ""),
    ]
    if "student_params" in summary:
        cards.append(("student size", f"{summary['student_params'] / 1e6:.3f}M params", ""))
    if (run_dir / "student.onnx").is_file():
        cards.append(("ONNX export", "student.onnx",
                      f"{(run_dir / 'student.onnx').stat().st_size / 1024:.0f} KiB"))
    grid = _latest(list((run_dir / "grids").glob("epoch_*.png")))
    parts = ["<h2>Summary</h2>", _cards(cards),
             "<h2>Accuracy</h2>", _image(run_dir / "accuracy.png",
                                         f"student {split} accuracy per epoch; dashed: teacher"),
             "<h2>Loss curves</h2>",
             _figure_bytes(curves_png(records, "epoch"),
                           "per-epoch means from metrics.jsonl: losses (blue), diversity of the "
                           "synthetic set (green), learning rate (brown)"),
             _records_table(records, "epoch")]
    if grid is not None:
        parts += ["<h2>Latest synthetic images</h2>",
                  _image(grid, f"{grid.parent.name}/{grid.name}: one row per class "
                               "(the teacher's label)", pixels=True)]
    parts.append(_config_section(cfg))
    return title, "".join(parts)


def _quantize_body(run_dir: Path, summary: dict[str, Any], records: list[dict[str, Any]]
                   ) -> tuple[str, str]:
    cfg = summary.get("config") or {}
    title = (f"{summary.get('method', cfg.get('method', '?'))}: {summary.get('model', '?')} at "
             f"W{summary.get('wbits', '?')}A{summary.get('abits', '?')} on "
             f"{summary.get('dataset', '?')}")
    split = summary.get("eval_split", "test")
    cards = [
        ("full precision acc", _pct(summary.get("fp_acc")), f"{split} split"),
        ("quantized acc", _pct(summary.get("quant_acc")), "weights and activations"),
        ("weights-only acc", _pct(summary.get("weights_only_acc")), "fake-quant weights, float "
                                                                     "activations"),
        ("bits", f"W{summary.get('wbits', '?')} A{summary.get('abits', '?')}",
         "first/last kept at 8 bit" if cfg.get("keep_first_last_8bit") else ""),
        ("wall time", _seconds(summary.get("wall_s")),
         f"training {_seconds(summary.get('train_s'))}" if "train_s" in summary else ""),
    ]
    if (run_dir / "quantized.onnx").is_file():
        cards.append(("ONNX export", "quantized.onnx", "QDQ"))
    parts = ["<h2>Summary</h2>", _cards(cards)]
    if records:
        parts += ["<h2>Loss curves</h2>",
                  _figure_bytes(curves_png(records, "epoch"),
                                "per-epoch means from metrics.jsonl: g_* generator terms, q_* "
                                "quantized-model terms (q_agree: agreement with the "
                                "full-precision model), learning rate"),
                  _records_table(records, "epoch")]
    parts += ["<h2>Synthetic images</h2>",
              _image(run_dir / "synthetic.png", "generator images, one row per class "
                                                "(ptq methods: the calibration batch)",
                     pixels=True)]
    ranges = summary.get("activation_ranges") or []
    layer_bits = summary.get("layer_bits") or {}
    if layer_bits or ranges:
        parts.append("<h2>Quantizers</h2><div class=\"row\">")
        if layer_bits:
            parts.append(_table(("layer", "weight bits"), list(layer_bits.items())))
        if ranges:
            parts.append(_table(("ReLU call", "lo", "hi", "bits"),
                                [(i, r.get("lo"), r.get("hi"), r.get("bits"))
                                 for i, r in enumerate(ranges)]))
        parts.append("</div>")
    parts.append(_config_section(cfg))
    return title, "".join(parts)


def _incremental_body(run_dir: Path, summary: dict[str, Any], records: list[dict[str, Any]]
                      ) -> tuple[str, str]:
    cfg = summary.get("config") or {}
    title = (f"{summary.get('method', cfg.get('method', '?'))}: {summary.get('model', '?')} on "
             f"{summary.get('dataset', '?')}, {summary.get('tasks', '?')} tasks")
    cards = [
        ("final accuracy", _pct(summary.get("final_acc")),
         f"{summary.get('evaluated_on', 'test')} images, all classes seen"),
        ("average incremental acc", _pct(summary.get("avg_inc_acc")), ""),
        ("average forgetting", _fmt(summary.get("forgetting"), 4), "points"),
        ("tasks", f"{len(records)} / {summary.get('tasks', '?')}", ""),
        ("wall time", _seconds(summary.get("wall_s")), ""),
    ]
    order = summary.get("class_order")
    grid = _latest(list((run_dir / "grids").glob("replay_task*.png")))
    parts = ["<h2>Summary</h2>", _cards(cards)]
    if order:
        parts.append(f'<p class="text">Class order (one group per task): '
                     f'{_esc(" | ".join(",".join(map(str, t)) for t in order))}</p>')
    parts += ["<h2>Accuracy</h2>", '<div class="row">',
              _image(run_dir / "accuracy.png", "accuracy on the classes seen so far"),
              _image(run_dir / "acc_matrix.png", "row i: after task i; column j: on task j"),
              "</div>",
              "<h2>Loss curves</h2>",
              _figure_bytes(curves_png(records, "task"), "per-task means from metrics.jsonl"),
              _records_table(records, "task")]
    if grid is not None:
        parts += ["<h2>Latest replay images</h2>",
                  _image(grid, f"{grid.parent.name}/{grid.name}: images inverted from the "
                               "frozen model, replayed in the next task", pixels=True)]
    parts.append(_config_section(cfg))
    return title, "".join(parts)


def _markdown_blocks(text: str) -> str:
    """The headings, paragraphs and pipe tables of a simple markdown file, as html."""
    out, table, para = [], [], []

    def flush() -> None:
        if para:
            out.append(f'<p class="text">{_inline(" ".join(para))}</p>')
            para.clear()
        if table:
            rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table]
            rows = [r for r in rows if not all(set(c) <= set("-: ") for c in r)]
            if rows:
                out.append(_table(rows[0], rows[1:], markdown=True))
            table.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            if para:
                flush()
            table.append(line)
        elif not line.strip():
            flush()
        elif line.startswith("#"):
            flush()
        else:
            if table:
                flush()
            para.append(line.strip())
    flush()
    return "".join(out)


def _bench_run_folder(entry: str, seed: str) -> Path:
    """Where `rgal bench` keeps the run of an entry and seed, relative to the bench folder."""
    safe = "".join(c if c.isalnum() or c in "+-_." else "_" for c in entry)
    return Path("runs") / safe / f"seed{seed}"


def _bench_body(run_dir: Path) -> tuple[str, str]:
    rows = []
    if (run_dir / "results.csv").is_file():
        with (run_dir / "results.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
    md = next((p.read_text() for p in (run_dir / "results.md", run_dir / "search.md")
               if p.is_file()), "")
    heading = next((ln.lstrip("# ").strip() for ln in md.splitlines() if ln.startswith("#")),
                   "")
    title = (heading.replace("Benchmark: ", "bench: ").replace("Hyper-parameter search: ",
                                                                "bench search: ")
             if heading else "bench")
    methods = list(dict.fromkeys(r.get("method", "?") for r in rows))
    cards = [("entries", str(len(methods)), ", ".join(methods)[:80]),
             ("runs", str(len(rows)), "")]
    split = "held-out" if "held-out training images" in md else "test"
    if rows and rows[0].get("teacher_acc"):
        cards.insert(0, (f"teacher {split} acc", _pct(float(rows[0]["teacher_acc"])), ""))
    parts = ["<h2>Summary</h2>", _cards(cards), "<h2>Results</h2>", _markdown_blocks(md)]
    charts = (_image(run_dir / "accuracy_vs_epoch.png", "mean over seeds, per epoch") +
              _image(run_dir / "accuracy_vs_time.png", "mean over seeds, against wall time"))
    if charts:
        parts += ["<h2>Accuracy</h2>", f'<div class="row">{charts}</div>']
    samples = _image(run_dir / "samples.png", "each entry's last grid (first seed)")
    if samples:
        parts += ["<h2>Latest synthetic images</h2>", samples]
    if rows:
        links = []
        for r in rows:
            rel = _bench_run_folder(r.get("method", ""), r.get("seed", ""))
            target = (f'<a href="{_esc((rel / REPORT).as_posix())}">{_esc(rel.as_posix())}</a>'
                      if (run_dir / rel / REPORT).is_file() else _esc(rel.as_posix()))
            links.append(f"<tr><td>{_esc(r.get('method'))}</td><td>{_esc(r.get('seed'))}</td>"
                         f"<td>{_esc(r.get('test_acc'))}</td><td>{target}</td></tr>")
        parts.append("<h2>Runs</h2><div class=\"scroll\"><table><thead><tr><th>entry</th>"
                     f"<th>seed</th><th>{split} acc</th><th>run folder</th></tr></thead><tbody>"
                     + "".join(links) + "</tbody></table></div>")
        first = run_dir / _bench_run_folder(rows[0].get("method", ""), rows[0].get("seed", ""))
        cfg = (_read_json(first / "summary.json") or {}).get("config")
        if cfg:
            shared = {k: v for k, v in cfg.items() if k not in ("method", "seed", "out")}
            parts.append(_config_section(shared).replace(
                "as resolved for this run",
                f"of the first run ({_esc(rows[0].get('method'))}, seed "
                f"{_esc(rows[0].get('seed'))}); each entry overrides its own keys"))
    return title, "".join(parts)


# ------------------------------------------------------------------------ the page

def render_report(run_dir: str | Path) -> str:
    """The html text of the report of `run_dir`."""
    run_dir = Path(run_dir)
    kind = detect_kind(run_dir)
    summary = _read_json(run_dir / "summary.json") or {}
    records = _read_jsonl(run_dir / "metrics.jsonl")
    if kind == "bench":
        title, body = _bench_body(run_dir)
    elif kind == "quantize":
        title, body = _quantize_body(run_dir, summary, records)
    elif kind == "incremental":
        title, body = _incremental_body(run_dir, summary, records)
    else:
        title, body = _distill_body(run_dir, summary, records)
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)} · rgal {kind}</title><style>{_CSS}</style></head><body><main>"
        f'<header><div class="kind">rgal {kind}</div><h1>{_esc(title)}</h1>'
        f'<div class="where">{_esc(run_dir.resolve())}</div></header>'
        f"{body}"
        f"<footer>Written {stamp} from the files in this folder "
        f"(rebuild: <code>rgal report {_esc(run_dir)}</code>).</footer>"
        "</main></body></html>\n")


def write_report(run_dir: str | Path) -> Path:
    """Write `run_dir/report.html` (atomically) from the folder's files; return its path."""
    from ..utils import atomic_path

    run_dir = Path(run_dir)
    text = render_report(run_dir)
    path = run_dir / REPORT
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


def finish_run(out: str | Path, tensorboard: bool = False, step: int = 0,
               final: dict[str, Any] | None = None, grid: Path | None = None) -> Path:
    """End of a quantize or incremental run: its final figures (and `grid`) as TensorBoard
    events at `step` when asked, then report.html; returns the report's path."""
    if tensorboard and final:
        from .tensorboard import TensorBoardWriter

        tb = TensorBoardWriter(out, fresh=False, purge=False)  # add to the epochs' events
        try:
            tb.log_epoch(step, final, grid if grid is not None and Path(grid).is_file() else None)
        finally:
            tb.close()
    return write_report(out)


if __name__ == "__main__":  # python -m rgal.engine.html_report RUN_DIR [RUN_DIR ...]
    for arg in sys.argv[1:] or ["runs/demo"]:
        print(write_report(arg))
