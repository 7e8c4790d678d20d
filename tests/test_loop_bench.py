"""`python -m pruning.loop.bench throughput`: our training loop against a minimal loop, run for real on CPU
(the GPU numbers come from the same code with --device cuda)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from dataset_helpers import manifest


def _bench(tmp_path, *args):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "pruning.loop.bench", "throughput", "--threads", "1", "--size", "32",
                           "--batch-size", "8", "--repeats", "1", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc.stderr


def _check_side(side, images):
    assert side["images"] == images and side["images_per_s"] > 0
    assert side["data_time_s"] >= 0 and side["compute_time_s"] > 0
    assert abs(side["data_time_s"] + side["compute_time_s"] - side["median_s"]) < 0.01


def test_throughput_on_a_build_reads_one_pass_of_its_train_split(tmp_path, built):
    _, build = built
    r, err = _bench(tmp_path, "--model", "tinyvgg", "--data", str(build))
    splits = manifest(build)["splits"]
    for side in ("baseline", "ours"):
        _check_side(r[side], splits["train"]["num_samples"])
    assert r["eval"]["images"] == splits["val"]["num_samples"]
    assert r["data"] == str(build) and r["device"].endswith("(1 threads)") and r["dtype"] == "fp32"
    assert r["ratio_ours_over_baseline"] == round(r["ours"]["images_per_s"] / r["baseline"]["images_per_s"], 3)
    assert "tinyvgg: ours" in err and "minimal loop" in err


def test_throughput_in_memory_for_several_models(tmp_path):
    rows, _ = _bench(tmp_path, "--model", "tinyvgg,resnet18", "--images", "24", "--no-eval")
    assert [r["model"] for r in rows] == ["tinyvgg", "resnet18"]
    for r in rows:
        _check_side(r["baseline"], 24)
        _check_side(r["ours"], 24)
        assert "eval" not in r


@pytest.mark.heavy
def test_gpu_bench_script_runs_every_step_in_smoke_mode(tmp_path):
    """scripts/bench_gpu.sh at toy sizes on the CPU (DEVICE=cpu SMOKE=1): every step runs and writes its file."""
    import os
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DEVICE": "cpu", "SMOKE": "1", "PYTHON": sys.executable, "WORKERS": "1"}
    proc = subprocess.run(["bash", str(root / "scripts" / "bench_gpu.sh"), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    for name in ("loop_throughput.json", "overhead.json", "loop_throughput_data.json", "speedup.json", "stats.json", "loader.json"):
        assert json.loads((out / name).read_text()), name
    assert json.loads((out / "loop_throughput_data.json").read_text())["data"] == str(out / "data" / "build")
    assert "torch" in (out / "env.txt").read_text()


def test_gpu_bench_script_refuses_without_cuda(tmp_path):
    import os
    from pathlib import Path
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(["bash", str(root / "scripts" / "bench_gpu.sh"), str(tmp_path / "out")],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "torch.cuda.is_available() is False" in proc.stderr


def test_overhead_reports_the_added_host_time_per_step():
    proc = subprocess.run([sys.executable, "-m", "pruning.loop.bench", "overhead", "--steps", "40", "--repeats", "2",
                           "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["steps"] == 40 and r["baseline_us_per_step"] > 0 and r["ours_us_per_step"] > 0
    assert abs(r["added_us_per_step"] - (r["ours_us_per_step"] - r["baseline_us_per_step"])) <= 0.11
