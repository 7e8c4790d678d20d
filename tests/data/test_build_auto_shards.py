"""Automatic shard counts (the default), ``--shard-size`` (the layout of builds made before them),
how the shard options combine, and the refusal of an old default build in ``--out``.

The builds are real CLI runs (``python -m imagenet52p.build_cli``) of a synthetic ImageNet-52P tree
with ImageNet-52P's split sizes for val (52 classes x 50 held out = 2,600), so val gets 240 shards.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from build_helpers import tree_digest
from click.testing import CliRunner

from imagenet52p.builder import BuildConfig
from imagenet52p.builder.assign import (AUTO_SHARD_LADDER, AUTO_SHARD_MULTIPLE, MIN_SHARD_SIZE, auto_shard_count,
                                        even_sizes)
from imagenet52p.builder.config import IDENTITY_OPTIONS
from imagenet52p.classes import load_class_set
from imagenet52p.cli import main as imagenet52p_main
from imagenet52p.fake import FakeSpec, make_fake_imagenet
from imagenet52p.format.readers import predict_timm, predict_wds

# 52 classes x (60 train + 5 val) tiny images: train 52 x 10 = 520, val 52 x 50 = 2,600, test 52 x 5 = 260
SPEC = FakeSpec(train_per_class=60, val_per_class=5, width=16, height=12, noise=0)
SIZES = {"train": 520, "val": 2600, "test": 260}
TARGET = {"train": 1000, "val": 250, "test": 250}
OLD = ("--shard-size", "1000", "--eval-shard-size", "250")


@pytest.mark.parametrize("n, target, count", [
    (1_281_167, 1000, 1440),  # ImageNet-1k train: 889-890 per shard
    (64_400, 1000, 240), (67_000, 1000, 240),  # ImageNet-52P train sizes
    (50_000, 250, 240),  # ImageNet-1k val
    (2600, 250, 240),  # ImageNet-52P val and test: 10-11 per shard
    (1920, 250, 240), (1919, 250, 120),  # the last size with 240 shards of >= 8, and the first below
    (200, 250, 24), (100, 1000, 12), (40, 250, 4), (16, 250, 2),
    (8, 250, 1), (7, 250, 1), (5, 250, 1), (1, 1000, 1), (0, 250, 0),
])
def test_auto_shard_count_examples(n, target, count):
    assert auto_shard_count(n, target) == count
    if n:
        sizes = even_sizes(n, count)
        assert max(sizes) - min(sizes) <= 1 and max(sizes) <= target
        assert min(sizes) >= MIN_SHARD_SIZE or count == 1


def test_auto_shard_count_rule_on_every_small_size_and_some_large():
    for target in (250, 1000):
        for n in list(range(0, 6000)) + [10**5 + 7, 640_001, 1_281_167, 2_000_000]:
            c = auto_shard_count(n, target)
            if n == 0:
                assert c == 0
                continue
            q = n // c
            assert c in AUTO_SHARD_LADDER or c % AUTO_SHARD_MULTIPLE == 0
            assert -(-n // c) <= target  # no shard above the target
            assert q >= MIN_SHARD_SIZE or (c == 1 and n < MIN_SHARD_SIZE)
            if c % AUTO_SHARD_MULTIPLE == 0:  # the smallest such multiple
                assert c == AUTO_SHARD_MULTIPLE or -(-n // (c - AUTO_SHARD_MULTIPLE)) > target
            else:  # the largest rung keeping >= 8 per shard
                bigger = [r for r in AUTO_SHARD_LADDER if r > c]
                assert all(n // r < MIN_SHARD_SIZE for r in bigger)


def test_auto_shard_count_docstring_table_lists_the_divisors():
    rows = {}
    for line in auto_shard_count.__doc__.splitlines():
        m = re.fullmatch(r"\s*(\d+)\s{2,}([\d ]+)", line)
        if m:
            rows[int(m.group(1))] = [int(g) for g in m.group(2).split()]
    assert list(rows) == list(AUTO_SHARD_LADDER)
    for count, products in rows.items():
        assert products == [g for g in range(1, count + 1) if count % g == 0]


def test_shard_modes_identities_and_contradictions(tmp_path):
    base = dict(root=tmp_path, out=tmp_path / "o")
    auto, fixed = BuildConfig(**base), BuildConfig(**base, shard_size=1000, eval_shard_size=250)
    assert (auto.shard_mode(), fixed.shard_mode(), BuildConfig(**base, shards_per_split=5).shard_mode()) == \
        ("auto", "fixed", "count")
    # a fixed-size build has exactly the identity of builds made before automatic counts
    assert list(fixed.identity_options()) == list(IDENTITY_OPTIONS)
    assert auto.identity_options() == dict(fixed.identity_options(), shard_counts="auto")
    one = BuildConfig(**base, shard_size=7).identity_options()
    assert (one["shard_size"], one["eval_shard_size"], "shard_counts" in one) == (7, 250, False)
    assert BuildConfig(**base, shards_per_split=5).identity_options()["shards_per_split"] == 5
    for kw, named in ((dict(shard_size=10), "--shard-size"), (dict(eval_shard_size=10), "--eval-shard-size"),
                      (dict(shard_size=10, eval_shard_size=3), "--shard-size / --eval-shard-size")):
        with pytest.raises(ValueError, match=f"--shards-per-split .*cannot be combined with {named} "):
            BuildConfig(**base, shards_per_split=5, **kw).validate()


def _build(root: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "imagenet52p.build_cli", "--root", str(root), "--out", str(out),
           "--workers", "2", "--quiet", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _lengths(out: Path) -> dict[str, list[int]]:
    m = json.loads((out / "manifest.json").read_text())
    return {s: [sh["num_samples"] for sh in m["splits"][s]["shards"]] for s in SIZES}


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("auto") / "src"
    return make_fake_imagenet(root, load_class_set("imagenet52p").wnids, SPEC)


@pytest.fixture(scope="module")
def default_build(src) -> Path:
    out = src.parent / "default"
    r = _build(src, out)
    assert r.returncode == 0, r.stderr
    return out


def test_default_build_follows_the_rule(default_build, src, tmp_path):
    lengths = _lengths(default_build)
    for split, n in SIZES.items():
        ls = lengths[split]
        assert sum(ls) == n and len(ls) == auto_shard_count(n, TARGET[split])
        assert max(ls) - min(ls) <= 1 and ls == sorted(ls, reverse=True)
    assert [len(lengths[s]) for s in SIZES] == [60, 240, 24]
    man = json.loads((default_build / "manifest.json").read_text())
    assert man["options"]["shard_counts"] == "auto" and "shards_per_split" not in man["options"]
    r = _build(src, tmp_path / "again")  # deterministic: byte-identical
    assert r.returncode == 0, r.stderr
    assert tree_digest(tmp_path / "again") == tree_digest(default_build)


def test_default_build_val_is_exact_for_timm_and_webdataset_at_small_ddp(default_build):
    """At W ranks x K workers in {1..4} x {1..3}, val is exact wherever its 2,600 samples allow (one rank,
    or W x K divides 2600); elsewhere timm's repeats are the least possible, except 3 x 3 (240 shards do
    not split 9 ways), and webdataset is exact wherever W divides 2600."""
    val = _lengths(default_build)["val"]
    for w in (1, 2, 3, 4):
        for k in (1, 2, 3):
            res = CliRunner().invoke(imagenet52p_main, ["info", str(default_build), "--readers",
                                                        "--world-size", str(w), "--workers", str(k)])
            assert res.exit_code == 0, res.output
            line = next(x for x in res.output.splitlines() if x.startswith("  val ("))
            timm, wds = predict_timm(val, w, k, training=False), predict_wds(val, w, k)
            assert line.endswith(f"timm: {timm.verdict()}; webdataset: {wds.verdict()}")
            assert timm.exact == (w == 1 or 2600 % (w * k) == 0), (w, k, line)
            assert wds.exact == (2600 % w == 0), (w, k, line)
            if not timm.exact and 240 % (w * k) == 0:
                assert "  val: timm's" in res.output and "least possible" in res.output


def test_shard_size_gives_the_old_layout_and_an_old_build_is_refused_with_how_to_resume(src, default_build,
                                                                                         tmp_path):
    old = tmp_path / "old"  # what a default build made before automatic counts is: fixed 1000 / 250
    r = _build(src, old, *OLD)
    assert r.returncode == 0, r.stderr
    assert _lengths(old) == {"train": [520], "val": [250] * 10 + [100], "test": [250, 10]}
    man = json.loads((old / "manifest.json").read_text())
    assert sorted(man["options"]) == sorted(IDENTITY_OPTIONS)  # the options of an old build, no new key
    digest = tree_digest(old)

    r = _build(src, old)  # today's default into the old build
    assert r.returncode == 1 and "Traceback" not in r.stderr
    msg = r.stderr.strip().splitlines()[-1]
    assert (f"--out {old} holds a different build (shards: fixed shard sizes --shard-size 1000 --eval-shard-size "
            f"250 -> automatic shard counts); to resume it as it was, pass --shard-size 1000 --eval-shard-size 250; "
            f"or choose another --out, or pass --overwrite to replace it") in msg
    assert tree_digest(old) == digest  # untouched

    r = _build(src, old, *OLD)  # resumed as it was: every shard kept, bytes unchanged
    assert r.returncode == 0, r.stderr
    assert re.search(r"^val\s+2600\s+11\s.*\s11\s+\S+$", r.stdout, re.M), r.stdout  # 11 shards, 11 reused
    assert tree_digest(old) == digest

    r = _build(src, old, "--shard-size", "1000")  # the eval size defaults to 250: the same build
    assert r.returncode == 0, r.stderr
    assert tree_digest(old) == digest

    r = _build(src, old, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert tree_digest(old) == tree_digest(default_build)


def test_other_shard_layouts_in_out_are_refused_naming_how_to_resume(src, default_build, tmp_path):
    r = _build(src, default_build, *OLD)
    assert r.returncode == 1
    assert ("(shards: automatic shard counts -> fixed shard sizes --shard-size 1000 --eval-shard-size 250); "
            "to resume it as it was, leave out --shard-size, --eval-shard-size and --shards-per-split "
            "(automatic shard counts); or choose another --out") in r.stderr
    r = _build(src, default_build, "--shards-per-split", "12", "--seed", "3")
    assert r.returncode == 1
    assert ("(seed: 0 -> 3; shards: automatic shard counts -> --shards-per-split 12); to resume it as it was, "
            "leave out --shard-size, --eval-shard-size and --shards-per-split (automatic shard counts) "
            "(and the other options above as they were); or") in r.stderr
    r = _build(src, default_build, "--seed", "3")
    assert r.returncode == 1 and "(seed: 0 -> 3); choose another --out, or pass --overwrite" in r.stderr
    counted = tmp_path / "counted"
    assert _build(src, counted, "--shards-per-split", "12").returncode == 0
    assert _lengths(counted)["val"] == [217] * 8 + [216] * 4
    r = _build(src, counted)
    assert r.returncode == 1 and "to resume it as it was, pass --shards-per-split 12;" in r.stderr


@pytest.mark.parametrize("extra, named", [(("--shard-size", "10"), "--shard-size"),
                                          (("--eval-shard-size", "10"), "--eval-shard-size"),
                                          (("--shard-size", "10", "--eval-shard-size", "5"),
                                           "--shard-size / --eval-shard-size")])
def test_a_count_with_a_size_is_refused_in_one_line(src, tmp_path, extra, named):
    r = _build(src, tmp_path / "x", "--shards-per-split", "5", *extra)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"Error: --shards-per-split (a shard count) cannot be combined with {named} "
                                f"(shard sizes): pass one or the other")
    assert not (tmp_path / "x").exists()
