#!/usr/bin/env python
"""`make detect-demo`: the detection pipeline (paper sec. 6) end to end on 2 CPU cores in a few minutes.

1. The backbones: the `demo` config's classification cells (tinyvgg, `make demo`), reused from
   ``OUT/results`` when done, else run here first (scripts/demo.py, a few CPU-minutes).
2. A SYNTHETIC VOC tree (``imagenet52p.voc.make_fake_voc``: generated shapes, not photographs) in
   ``OUT/voc/VOCdevkit``, readable by torchvision's VOCDetection.
3. The `detect_demo` config (benchmark/configs/detect_demo.toml) through the runner: the unpruned and the
   random / l1 50% backbones plugged into a tiny Faster R-CNN and trained, the trained unpruned detector
   pruned directly (random, 50%), each evaluated with the VOC07 and VOC2010+ mAP and timed.
4. The leaderboard as Markdown, CSV, JSON and a self-contained HTML report (``OUT/detect_*``).

Everything is reused on a second run (finished cells are skipped, an interrupted one resumes).
"""
import argparse
import importlib.util
import logging
import sys
import time
from pathlib import Path

SYNTHETIC_NOTE = ("SYNTHETIC DATA: every number below comes from generated VOC-like images (a tiny Faster R-CNN "
                  "with tinyvgg backbones), not from PASCAL VOC. It shows that the pipeline works, not what the "
                  "paper measured.")
VOC_IMAGES = {"trainval": 48, "test": 24}  # synthetic VOC 2007 images per set
VOC_CLASSES = ("bird", "car", "cat", "dog", "person")  # the synthetic tree's classes (a subset of VOC's 20)


def _demo_module():
    spec = importlib.util.spec_from_file_location("demo", Path(__file__).with_name("demo.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _backbones(out: Path, quiet: bool) -> Path:
    """Step 1: the demo's results folder, with the upstream cells the detect_demo grid names done."""
    from benchmark.config import load_config
    from benchmark.grid import expand_grid
    from benchmark.results import cell_state

    results = out / "results"
    wanted = {c.up_id for c in expand_grid(load_config("detect_demo"))}
    if all(cell_state(results / i) == "done" for i in wanted):
        print(f"[1/4] backbones: reusing the demo's cells in {results}")
        return results
    print(f"[1/4] backbones: running `make demo` first (its cells {', '.join(sorted(wanted))} are not done)")
    rc = _demo_module().main(["--out", str(out)] + (["--quiet"] if quiet else []))
    if rc:
        raise SystemExit(f"the classification demo failed (exit {rc}); see its output above")
    return results


def _voc(out: Path) -> Path:
    """Step 2: the synthetic VOC tree (made once)."""
    from imagenet52p.voc import make_fake_voc

    root = out / "voc"
    if not (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").is_file():
        t = time.perf_counter()
        make_fake_voc(root, years=("2007",), trainval=VOC_IMAGES["trainval"], test=VOC_IMAGES["test"],
                      classes=VOC_CLASSES, seed=0)
        print(f"[2/4] synthetic VOC 2007 tree (NOT real images), {VOC_IMAGES} images, classes "
              f"{', '.join(VOC_CLASSES)} at {root} ({time.perf_counter() - t:.1f}s)")
    else:
        print(f"[2/4] reusing the synthetic VOC tree at {root}")
    return root


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out", help="the demo's folder (make demo's --out)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    out = Path(a.out)
    upstream = _backbones(out, a.quiet)
    _voc(out)
    counts = _run(out, upstream, a.quiet)
    print(f"HTML report: {(out / 'detect_report.html').resolve()}")
    print(f"(also {out / 'detect_leaderboard.md'}, .csv, .json; total {time.perf_counter() - t0:.0f}s)")
    return 1 if counts.get("failed") else 0


def _run(out: Path, upstream: Path, quiet: bool) -> dict:
    """Steps 3-4: the shipped ``detect_demo`` config through the runner, then every leaderboard format."""
    from benchmark.config import load_config
    from benchmark.grid import expand_grid
    from benchmark.leaderboard import build_leaderboard
    from benchmark.report import render
    from benchmark.resolve import CellEnv
    from benchmark.runner import run_grid

    cfg = load_config("detect_demo")
    results = out / "detect_results"
    env = CellEnv(results_dir=str(results), data_root=str(out), device="cpu", progress=not quiet,
                  upstream={"demo": str(upstream)})
    print(f"[3/4] imagenet52p-bench run detect_demo: {len(expand_grid(cfg))} cells (resumable) -> {results}")
    t = time.perf_counter()
    counts = run_grid(cfg, env, resume=True)
    print(f"  {counts} ({time.perf_counter() - t:.1f}s)")
    print("[4/4] leaderboard\n")
    board = build_leaderboard(results)
    for fmt, name in (("md", "detect_leaderboard"), ("csv", "detect_leaderboard"), ("json", "detect_leaderboard"),
                      ("html", "detect_report")):
        text = render(results, fmt, SYNTHETIC_NOTE, board)
        (out / f"{name}.{fmt}").write_text(text, encoding="utf-8")
        if fmt == "md":
            print(text)
    print(SYNTHETIC_NOTE)
    return counts


if __name__ == "__main__":
    sys.exit(main())
