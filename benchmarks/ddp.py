"""One process against two (torchrun, gloo, CPU) on the Fashion-MNIST default.

Runs `rgal distill` (the embedded default: the demo) once as a plain process and once as
`torchrun --standalone --nproc_per_node=2 -m rgal distill`, for each seed, then writes
`benchmarks/ddp.md`: final and best student accuracy, wall time, and the files each run
wrote (only rank 0 writes, so both runs must write the same set of files).

    OMP_NUM_THREADS=1 python benchmarks/ddp.py [--seeds 0,1] [--out runs/ddp] [--distill-args ...]

Finished runs are kept: run it again and only the missing ones run (`--report-only` just
tabulates). Each process uses one thread, so the two-process run uses two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROCS = (1, 2)


def command(nproc: int, seed: int, out: Path, extra: list[str] = ()) -> list[str]:
    """The command line of one run."""
    args = ["-m", "rgal", "distill", "--seed", str(seed), "--out", str(out), "--device", "cpu",
            "--no-progress", *extra]
    if nproc == 1:
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", *args]


def finished(out: Path) -> dict | None:
    """What a finished run (one with `summary.json`) measured, or None."""
    summary = out / "summary.json"
    if not summary.is_file():
        return None
    s = json.loads(summary.read_text())
    return {"final": s["final_acc"], "best": s["best_acc"], "epochs": s["epochs"],
            "wall_s": s["wall_s"], "processes": s["processes"],
            "files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())}


def report(results: dict[tuple[int, int], dict], seeds: list[int],
           distill_args: str = "") -> str:
    """The markdown table."""
    lines = ["# One process against two (torchrun, gloo, CPU)", "",
             "Fashion-MNIST default (`rgal distill` with no config: the demo), one thread per "
             "process. Regenerate: `OMP_NUM_THREADS=1 python benchmarks/ddp.py`."
             + (f" Extra flags: `{distill_args}`." if distill_args else ""), "",
             "| processes | seed | final acc (%) | best acc (%) | epochs | wall (s) | files written |",
             "|---|---|---|---|---|---|---|"]
    for nproc in PROCS:
        for seed in seeds:
            r = results.get((nproc, seed))
            if r is None:
                lines.append(f"| {nproc} | {seed} | not run | | | | |")
                continue
            lines.append(f"| {r['processes']} | {seed} | {r['final']:.2f} | {r['best']:.2f} | "
                         f"{r['epochs']} | {r['wall_s']:.0f} | {len(r['files'])} |")
    for seed in seeds:
        a, b = results.get((1, seed)), results.get((2, seed))
        if a and b:
            same = "the same files" if a["files"] == b["files"] else \
                f"different files: {sorted(set(a['files']) ^ set(b['files']))}"
            lines.append(f"\nSeed {seed}: 2 processes - 1 process = "
                         f"{b['final'] - a['final']:+.2f} points final; both runs wrote {same}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1", help="comma list of seeds (default 0,1)")
    p.add_argument("--out", default=str(ROOT / "runs" / "ddp"))
    p.add_argument("--report", default=str(ROOT / "benchmarks" / "ddp.md"))
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--distill-args", default="",
                   help="extra `rgal distill` flags for every run, e.g. '--epochs 2'")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"ddp.py: --seeds must be integers, got {args.seeds!r}") from None
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    results = {}
    for seed in seeds:
        for nproc in PROCS:
            out = Path(args.out) / f"np{nproc}_seed{seed}"
            r = finished(out)
            if r is None and not args.report_only:
                print(f"running {nproc} process(es), seed {seed} -> {out}", flush=True)
                extra = args.distill_args.split()
                if (out / "checkpoint.pt").is_file():
                    extra.append("--resume")
                code = subprocess.call(command(nproc, seed, out, extra), env=env, cwd=ROOT)
                if code != 0:
                    print(f"ddp.py: run {out} exited {code}", file=sys.stderr)
                    return code
                r = finished(out)
            if r is not None:
                results[(nproc, seed)] = r
    text = report(results, seeds, args.distill_args)
    print(text)
    Path(args.report).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
