"""DDP through torchrun (2 CPU processes, Gloo): ranks stay identical, metrics are reduced over ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

SCRIPT = r'''
import hashlib, json, sys, torch
torch.set_num_threads(1)
from pruning.loop import RunOptions, make_model, prune_finetune
from pruning.loop.distributed import init_distributed
from benchmark.synthetic import synthetic_splits
init_distributed("cpu")
d = synthetic_splits(4, 15, 5, 5, size=20, seed=0, noise=30.0)   # 60 train, 20 val, 20 test
model = make_model("tinyvgg", 4, seed=0)
s = prune_finetune(model, "mean_activation", 0.5, ["features.8", "features.4"], d[0], d[1], d[2], p=0.5, q=2,
                   batch_size=16, lr=0.05, out_dir=sys.argv[1], options=RunOptions(progress=False, device="cpu"))
digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values())).hexdigest()
digests = [None, None]
torch.distributed.all_gather_object(digests, digest)
if torch.distributed.get_rank() == 0:
    print("RESULT " + json.dumps({"digests": digests, "summary": s}))
torch.distributed.destroy_process_group()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_ranks_on_cpu(tmp_path):
    pytest.importorskip("torch.distributed")
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                           str(_free_port()), str(script), str(tmp_path / "run")], env=env, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    s = result["summary"]
    assert result["digests"][0] == result["digests"][1]  # same plans, same weights on both ranks
    assert s["world_size"] == 2
    assert s["baseline"]["val"]["images"] == 20 and s["test"]["images"] == 20  # all-reduced over ranks
    assert s["images"]["train_images_per_epoch"] == 60
    assert [st["finetune_images"] for st in s["steps"]] == [30, 30]
    assert [st["score_images"] for st in s["steps"]] == [60, 60]  # rank 0 scores on the whole scoring set
    assert [r["images"] for r in s["final"]["epochs"]] == [60, 60]
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["final"] == s["final"]
    assert len((tmp_path / "run" / "events.jsonl").read_text().splitlines()) == 1 + 2 + 2 + 1  # rank 0 writes once


@pytest.mark.parametrize("device, cuda, backend", [
    (None, True, "nccl"), (None, False, "gloo"), ("cuda", True, "nccl"), ("cuda:1", True, "nccl"),
    ("cpu", True, "gloo"), ("cpu", False, "gloo"),
])
def test_backend_follows_the_requested_device(device, cuda, backend):
    from pruning.loop.distributed import dist_backend
    assert dist_backend(device, cuda) == backend
