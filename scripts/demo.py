#!/usr/bin/env python
"""`make demo`: the whole pipeline on a built-in default, on 2 CPU cores in a few minutes.

1. Generate a SYNTHETIC ImageNet tree (unless --root gives a real one) for the 104 classes of
   ImageNet-52P + the random-52 control set.  The images are generated (each class has its own
   colour, grating and blob), not photographs.
2. `build-imagenet52p` it twice: the ImageNet-52P build (52 classes) and a "full" build.  On a
   real copy the full set is ImageNet-1k; on synthetic data generating 1000 classes would take
   too long, so the demo's full set is ImageNet-52P + random-52 (104 classes): a superset in which
   ImageNet-52P is a proper subset, which is all class-specific pruning needs.
3. Run the `demo` benchmark config (benchmark/configs/demo.toml): tinyvgg trained by the runner
   on the full build, then pruned layer by layer with 4 criteria at 25% and 50%, fine-tuned and
   tested on the full set vs on ImageNet-52P only.
4. Print the leaderboard and write it as Markdown, CSV, JSON and a self-contained HTML report.

Everything is reused on a second run (builds are checked by their manifest, finished cells are
skipped, an interrupted cell resumes from its checkpoint).
"""
import argparse
import logging
import sys
import time
from pathlib import Path

from imagenet52p.classes import load_class_set
from imagenet52p.tables import format_table
from imagenet52p.fake import FakeSpec, make_fake_imagenet

SYNTHETIC_NOTE = ("SYNTHETIC DATA: every number below comes from generated images (tinyvgg on 104 synthetic "
                  "classes), not from ImageNet. It shows that the pipeline works, not what the paper measured.")
SPEC = FakeSpec(train_per_class=30, val_per_class=6, width=40, height=32, seed=0)
VAL_PER_CLASS = 6  # train images per class held out as the build's val split (the tree's val becomes test)
TINY_SPEC = FakeSpec(train_per_class=8, val_per_class=3, width=40, height=32, seed=0)  # --tiny (CI)
TINY_VAL_PER_CLASS = 3


def _build(root: Path, out: Path, classes: str, val_per_class: int, progress: bool = True) -> None:
    import json
    import shutil

    from imagenet52p.builder import BuildConfig, build_dataset

    if (out / "manifest.json").is_file():
        want = load_class_set(classes).sha256
        if json.loads((out / "manifest.json").read_text())["class_set"]["sha256"] == want:
            print(f"  reusing build {out}")
            return
        print(f"  {out} holds another class list (made by an earlier version): rebuilding it")
        shutil.rmtree(out)
    t = time.perf_counter()
    build_dataset(BuildConfig(root=root, out=out, classes=classes, val_per_class=val_per_class, seed=0,
                              shard_size=2000, eval_shard_size=1000, workers=2, progress=progress))
    print(f"  built {out} ({time.perf_counter() - t:.1f}s)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out")
    p.add_argument("--root", default=None, help="a real ImageNet copy (default: generate a synthetic one)")
    p.add_argument("--quiet", action="store_true", help="no class table, no progress bars")
    p.add_argument("--tiny", action="store_true",
                   help=f"a much smaller synthetic tree ({TINY_SPEC.train_per_class}+{TINY_SPEC.val_per_class} "
                        "images per class) in separate folders, for CI; same config and cells")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: a small CNN gains little from more, and on a busy "
                        "machine oversubscribed threads are many times slower)")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    out = Path(a.out)
    sfx = "_tiny" if a.tiny else ""
    data = _prepare_builds(out, a, sfx)
    counts, results = _run_demo_grid(out, data, sfx, a.quiet)
    print(f"HTML report: {(out / f'report{sfx}.html').resolve()}")
    print(f"(also {out / f'leaderboard{sfx}.md'}, .csv, .json; total {time.perf_counter() - t0:.0f}s)")
    return 1 if counts.get("failed") else 0


def _prepare_builds(out: Path, a, sfx: str) -> Path:
    """Steps 1-2: the synthetic tree (unless ``--root``) and the two builds; returns the data root."""
    cs = load_class_set("imagenet52p")
    r52 = load_class_set("random52")
    if not a.quiet:
        print(format_table(cs))
    full_wnids = sorted(set(cs.wnids) | set(r52.wnids))
    spec, vpc = (TINY_SPEC, TINY_VAL_PER_CLASS) if a.tiny else (SPEC, VAL_PER_CLASS)
    root = Path(a.root) if a.root else out / f"fake_imagenet{sfx}"
    if a.root is None:
        t = time.perf_counter()
        if not all((root / split / w).is_dir() for split in ("train", "val") for w in full_wnids):
            make_fake_imagenet(root, full_wnids, spec)  # new, or made for another class list
        print(f"\n[1/4] synthetic ImageNet tree (NOT real images), {len(full_wnids)} classes x "
              f"{spec.train_per_class}+{spec.val_per_class} images at {root} ({time.perf_counter() - t:.1f}s)")
    data = out / f"data{sfx}"
    full_list = out / "full_wnids.txt"
    full_list.parent.mkdir(parents=True, exist_ok=True)
    text = "# demo full set: imagenet52p + random52\n" + "\n".join(full_wnids) + "\n"
    if not full_list.is_file() or full_list.read_text() != text:
        full_list.write_text(text)
    print("[2/4] build-imagenet52p: the full set (104 classes) and ImageNet-52P (52 classes)")
    _build(root, data / "demo_full", str(full_list), vpc, not a.quiet)
    _build(root, data / "demo_imagenet52p", "imagenet52p", vpc, not a.quiet)
    return data


def _run_demo_grid(out: Path, data: Path, sfx: str, quiet: bool):
    """Steps 3-4: the shipped ``demo`` config through the runner, then every leaderboard format."""
    from benchmark.config import load_config
    from benchmark.grid import expand_grid
    from benchmark.leaderboard import build_leaderboard
    from benchmark.report import render
    from benchmark.resolve import CellEnv
    from benchmark.runner import run_grid

    cfg = load_config("demo")
    results = out / f"results{sfx}"
    env = CellEnv(results_dir=str(results), data_root=str(data), device="cpu", progress=not quiet)
    print(f"[3/4] imagenet52p-bench run demo: {len(expand_grid(cfg))} cells (resumable) -> {results}")
    t = time.perf_counter()
    counts = run_grid(cfg, env, resume=True)
    print(f"  {counts} ({time.perf_counter() - t:.1f}s)")
    print("[4/4] leaderboard\n")
    board = build_leaderboard(results)  # one scan of the run directories for every format
    for fmt, name in (("md", "leaderboard"), ("csv", "leaderboard"), ("json", "leaderboard"), ("html", "report")):
        text = render(results, fmt, SYNTHETIC_NOTE, board)
        (out / f"{name}{sfx}.{fmt}").write_text(text, encoding="utf-8")
        if fmt == "md":
            print(text)
    print(SYNTHETIC_NOTE)
    return counts, results


if __name__ == "__main__":
    sys.exit(main())
