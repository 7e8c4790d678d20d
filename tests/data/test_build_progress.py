"""The build's progress bar (imagenet52p/builder/progress.py): it moves per image, shows img/s and
MB/s, counts the shards a resume keeps as done, and never changes a byte of the output.

Real builds through ``python -m imagenet52p.build_cli`` in a subprocess; tqdm's frames are read
from its stderr (tqdm separates them with carriage returns when stderr is not a terminal).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from build_helpers import WNIDS, build, tree_digest

from imagenet52p.builder.writer import THROTTLE_ENV
from imagenet52p.fake import FakeSpec, make_fake_imagenet

# 4 classes x 12 train (2 held out as val) + 3 test images: 40 train in shards of 8, 8 val and 12 test in
# shards of 4.
TOTAL = 60
FRAME = re.compile(r"(?:train|val|test):\s+\d+%\|[^|]*\| (\d+)/(\d+) \[([^\]]*)\]")


@pytest.fixture(scope="module")
def src(tmp_path_factory, class_file):
    base = tmp_path_factory.mktemp("progress")
    make_fake_imagenet(base / "src", WNIDS, FakeSpec(train_per_class=12, val_per_class=3, width=40, height=32))
    ref = base / "ref"
    build(base / "src", ref, class_file, val_per_class=2, shard_size=8, eval_shard_size=4)  # progress off
    return base / "src", ref


def shard_sizes(out: Path) -> dict[str, int]:
    man = json.loads((out / "manifest.json").read_text())
    return {sh["path"]: sh["num_samples"] for split in man["splits"].values() for sh in split["shards"]}


def whole_shard_counts(out: Path) -> set[int]:
    """Every count the bar could show if it moved per shard: the sums of any set of whole shards."""
    sums = {0}
    for n in shard_sizes(out).values():
        sums |= {s + n for s in sums}
    return sums


def cli_build(root: Path, out: Path, classes: Path, workers: int, throttle: float = 0.0) -> list[tuple]:
    """Build with the progress bar on; return its frames as (n, total, "elapsed<left, rates")."""
    env = dict(os.environ, **{THROTTLE_ENV: str(throttle)})
    args = [sys.executable, "-m", "imagenet52p.build_cli", "--root", root, "--out", out, "--classes", classes,
            "--val-per-class", 2, "--shard-size", 8, "--eval-shard-size", 4, "--workers", workers]
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    frames = [(int(n), int(t), rest) for n, t, rest in FRAME.findall(r.stderr)]
    assert frames, r.stderr
    return frames


@pytest.mark.parametrize("workers", [1, 2])
def test_bar_moves_per_image_with_rates_and_bytes_equal_a_quiet_build(src, class_file, tmp_path, workers):
    root, ref = src
    frames = cli_build(root, tmp_path / "out", class_file, workers, throttle=0.03)
    assert {t for _, t, _ in frames} == {TOTAL}  # the total is images, not shards
    counts = [n for n, _, _ in frames]
    assert counts == sorted(counts) and counts[-1] == TOTAL
    per_shard = whole_shard_counts(tmp_path / "out")
    assert set(counts) - per_shard, f"the bar only moved at shard boundaries: {counts}"
    last = frames[-1][2]
    assert re.search(r"[\d.]+img/s, [\d.]+ MB/s$", last), last
    assert float(re.search(r"([\d.]+) MB/s", last).group(1)) > 0
    assert tree_digest(tmp_path / "out") == tree_digest(ref)  # shards, manifest, _info.json: byte for byte


def test_resume_counts_kept_shards_as_done(src, class_file, tmp_path):
    root, ref = src
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    shards = sorted((out / "train").glob("*.tar"))
    shards[0].unlink()  # rebuilt: not counted at the start
    damaged = bytearray(shards[1].read_bytes())
    damaged[700] ^= 0xFF  # same size: expected kept (counted at the start), then rewritten and counted once
    shards[1].write_bytes(bytes(damaged))
    frames = cli_build(root, out, class_file, workers=2)
    assert frames[0][0] == TOTAL - shard_sizes(ref)[f"train/{shards[0].name}"]
    assert [n for n, _, _ in frames][-1] == TOTAL
    assert max(n for n, _, _ in frames) == TOTAL
    assert tree_digest(out) == tree_digest(ref)
