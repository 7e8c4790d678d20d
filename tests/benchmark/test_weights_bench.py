"""A grid cell starting from torchvision weights named in the config: found in a TORCH_HOME laid out as
torchvision's, recorded (canonical name and sha256) in cell.json and the leaderboard, synonyms one cell, a
missing file refused up front naming it, and other bytes under the same name refused on reuse."""
import json
import os
import subprocess

import pytest
import torch
import torchvision

from conftest import cli
from test_shared_results import build_full

NAME = "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
CONFIG = """name = "named_weights"
[data]
full = "full"
image_size = 32
resize = 32
train_scale_min = 0.7
latency_batch_size = 2
num_workers = 0

[model]
name = "mobilenet_v3_small"
weights = "{weights}"
num_classes = 1000

[base]
layers = "all"
p = 0.1
q = 0.1
lr = 0.001
batch_size = 8

[baseline]
unpruned = false

[[grid]]
criterion = ["l1"]
ratio = [0.5]
"""


def _place(home, seed):
    entry = torchvision.models.get_model_weights("mobilenet_v3_small").IMAGENET1K_V1
    torch.manual_seed(seed)
    path = home / "hub" / "checkpoints" / os.path.basename(entry.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    return path


def _bench(env, *args):
    return subprocess.run([cli("imagenet52p-bench"), *map(str, args)], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    root = tmp_path_factory.mktemp("named")
    build_full(root)
    env = {**os.environ, "TORCH_HOME": str(root / "th"), "IMAGENET52P_OFFLINE": "1"}
    path = _place(root / "th", seed=0)
    for w in ("IMAGENET1K_V1", "DEFAULT"):
        (root / f"{w}.toml").write_text(CONFIG.format(weights=w))
    run = ["--out", root / "results", "--data-root", root / "data", "--device", "cpu", "--no-progress",
           "--threads", "1"]
    proc = _bench(env, "run", root / "IMAGENET1K_V1.toml", *run)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return {"root": root, "env": env, "path": path, "run": run}


def test_the_cell_records_the_weights_canonical_name_and_sha256(named):
    import hashlib

    (cell_dir,) = [d for d in (named["root"] / "results").iterdir() if (d / "cell.json").is_file()]
    doc = json.loads((cell_dir / "cell.json").read_text())
    assert doc["weights"] == {"kind": "torchvision", "name": NAME, "file": named["path"].name,
                              "sha256": hashlib.sha256(named["path"].read_bytes()).hexdigest()}
    assert doc["context"]["model"]["weights"] == NAME  # the identity holds the canonical spelling
    board = _bench(named["env"], "leaderboard", named["root"] / "results", "--format", "json")
    assert board.returncode == 0, board.stderr[-2000:]
    entries = [e for t in json.loads(board.stdout)["tables"] for e in t["entries"]]
    assert entries and all(e["weights"] == [NAME] for e in entries)
    md = _bench(named["env"], "leaderboard", named["root"] / "results")
    assert md.returncode == 0 and "Weights" in md.stdout and NAME in md.stdout


def test_synonyms_are_one_cell(named):
    ids = []
    for w in ("IMAGENET1K_V1", "DEFAULT"):
        out = _bench(named["env"], "list", named["root"] / f"{w}.toml", "--json")
        assert out.returncode == 0, out.stderr[-2000:]
        ids.append(sorted(c["id"] for c in json.loads(out.stdout)))
    assert ids[0] == ids[1]
    # DEFAULT's run finds the cell done: nothing is recomputed
    (summary,) = (named["root"] / "results").glob("*/summary.json")
    before = summary.stat().st_mtime_ns
    again = _bench(named["env"], "run", named["root"] / "DEFAULT.toml", *named["run"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert summary.stat().st_mtime_ns == before


def test_other_bytes_under_the_same_name_are_refused_and_a_missing_file_is_named(named):
    path = named["path"]
    kept = path.read_bytes()
    try:
        _place(named["root"] / "th", seed=1)  # the same file name, other weights
        proc = _bench(named["env"], "run", named["root"] / "IMAGENET1K_V1.toml", *named["run"])
        assert proc.returncode != 0
        assert "computed from other starting weights" in proc.stderr and NAME in proc.stderr
        assert "Traceback" not in proc.stderr
        path.unlink()
        missing = _bench(named["env"], "run", named["root"] / "IMAGENET1K_V1.toml", "--out",
                         named["root"] / "fresh", *named["run"][2:])
        assert missing.returncode != 0 and "Traceback" not in missing.stderr
        assert str(path) in missing.stderr and str(path.parent) in missing.stderr
        assert not (named["root"] / "fresh").exists() or not any((named["root"] / "fresh").iterdir())
    finally:
        path.write_bytes(kept)


def test_imagenet52p_prune_offline_names_the_file_and_writes_nothing(named, tmp_path):
    env = {**named["env"], "TORCH_HOME": str(tmp_path / "empty_th")}
    out = tmp_path / "run"
    base = [cli("imagenet52p"), "prune", "--criterion", "l1", "--ratio", "0.5", "--data",
            str(named["root"] / "data" / "full"), "--out", str(out), "--device", "cpu"]
    proc = subprocess.run(base + ["--model", "mobilenet_v3_small", "--weights", "DEFAULT"], capture_output=True,
                          text=True, env=env)
    expected = tmp_path / "empty_th" / "hub" / "checkpoints" / named["path"].name
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert str(expected) in proc.stderr and "writable" not in proc.stderr
    missing = subprocess.run(base + ["--model", "mobilenet_v3_small", "--weights", "nofile.pt"],
                             capture_output=True, text=True, env=env)
    assert missing.returncode == 1 and "not a weight name" in missing.stderr and "IMAGENET1K_V1" in missing.stderr
    assert not out.exists()


def test_a_model_without_prunable_convs_is_one_clear_line():
    proc = subprocess.run([cli("imagenet52p"), "layers", "timm/vit_tiny_patch16_224"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "has no conv this library can prune" in proc.stderr and "model-families.md" in proc.stderr
