"""``batch_size`` is the global batch: the same images per optimizer step, the same scoring batches and so
the same plans and (up to float rounding) the same weights on 1 or 2 real DDP ranks (torchrun, Gloo) and
with gradient accumulation."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from pruning.loop import LoopConfig, RunOptions, prune_finetune
from benchmark.synthetic import synthetic_splits

# A small CNN without BatchNorm: a micro-batch's own statistics do not enter training, so splitting the
# global batch over ranks or accumulation steps changes nothing but the order of float additions.
SCRIPT = r'''
import json, sys, torch
from torch import nn
torch.set_num_threads(1)
from pruning.loop import RunOptions, prune_finetune
from pruning.loop.distributed import init_distributed
from benchmark.synthetic import synthetic_splits
init_distributed("cpu")
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


class NoBN(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.classifier = nn.Linear(64, n)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


train, val, _ = synthetic_splits(4, 16, 4, 4, size=16, seed=0, noise=30.0)   # 64 train images
out = {}
for crit in sys.argv[2].split(","):
    torch.manual_seed(0)
    model = NoBN(4)
    s = prune_finetune(model, crit, 0.5, ["features.3", "features.0"], train, val, p=0.5, q=1, batch_size=16,
                       accum_steps=int(sys.argv[1]), lr=0.05, schedule="constant",
                       options=RunOptions(progress=False, device="cpu"))
    out[crit] = {"plan": s["plan"], "world": s["world_size"],
                 "steps": [[st["finetune_images"], st["optimizer_steps"], st["score_images"]] for st in s["steps"]],
                 "final": [[r["images"], r["optimizer_steps"]] for r in s["final"]["epochs"]],
                 "weights": {k: v.flatten().tolist() for k, v in model.state_dict().items()}}
if rank == 0:
    print("RESULT " + json.dumps(out))
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
'''
CRITERIA = "l1,entropy,taylor,sensitivity"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path, accum: int, ranks: int) -> dict:
    script = tmp_path / "global_batch.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    if ranks == 1:
        cmd = [sys.executable, str(script)]
    else:
        cmd = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node", str(ranks),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script)]
    proc = subprocess.run(cmd + [str(accum), CRITERIA], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("global_batch")
    return {(a, w): _run(tmp, a, w) for a, w in [(1, 1), (2, 1), (1, 2)]}


def test_images_per_optimizer_step_are_the_global_batch_on_any_world_size(runs):
    for (accum, world), out in runs.items():
        for crit, r in out.items():
            assert r["world"] == world
            # p = 0.5 epoch of 64 images = 32 images = 2 optimizer steps of 16; q = 1 epoch = 4 steps
            assert [s[:2] for s in r["steps"]] == [[32, 2], [32, 2]], (accum, world, crit)
            assert r["final"] == [[64, 4]], (accum, world, crit)


def test_same_plans_on_one_or_two_ranks_and_with_accumulation(runs):
    """Scoring reads batches of the global batch_size (rank 0, in pieces of the micro-batch): entropy (all
    images' range), taylor (per-batch gradients) and sensitivity give the same plan in every setting."""
    ref = runs[(1, 1)]
    for key, out in runs.items():
        for crit in CRITERIA.split(","):
            assert out[crit]["plan"] == ref[crit]["plan"], (key, crit)
            assert [s[2] for s in out[crit]["steps"]] == [s[2] for s in ref[crit]["steps"]]


def test_same_weights_on_one_or_two_ranks_up_to_float_rounding(runs):
    """1 rank, 1 rank with 2 accumulation steps and 2 ranks train on the same images per optimizer step with
    the same mean-loss gradient; only the order of float additions differs (DDP's all-reduce, accumulation),
    so the final weights agree to 1e-4 absolute (they are O(0.1-1)); `scripts/test_margins.py global-batch`
    measures at most 3e-8."""
    ref = runs[(1, 1)]
    for key, out in runs.items():
        for crit in CRITERIA.split(","):
            for name, values in ref[crit]["weights"].items():
                a, b = torch.tensor(values), torch.tensor(out[crit]["weights"][name])
                assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4, rtol=0), (key, crit, name,
                                                                                       (a - b).abs().max())


def test_a_training_dataloader_must_yield_the_micro_batch():
    train, val, _ = synthetic_splits(2, 8, 2, 2, size=16, seed=0)
    from pruning.loop import make_model
    loader = DataLoader(train, batch_size=16)  # batch_size=8 global with accum 2 needs micro-batches of 4
    with pytest.raises(ValueError, match=r"batch_size=8 is the global batch: 8 / \(accum_steps=2 x world size=1\) "
                                         r"= 4 images per process; build the DataLoader with batch_size=4"):
        prune_finetune(make_model("tinyvgg", 2), "l1", 0.5, "all", loader, val, p=0, q=0, batch_size=8,
                       accum_steps=2, options=RunOptions(progress=False, device="cpu"))


def test_a_global_batch_that_does_not_divide_is_refused():
    cfg = LoopConfig("l1", 0.5, batch_size=12, accum_steps=2)
    assert cfg.micro_batch(1) == 6 and cfg.micro_batch(3) == 2
    with pytest.raises(ValueError, match="batch_size=12 is the global batch .* accum_steps x world size = 2 x 4 = 8"):
        cfg.micro_batch(4)


def test_collectives_wait_for_rank_0_scoring(monkeypatch):
    """Only rank 0 scores; the others wait in a broadcast, so the process group's timeout must outlast a
    whole-training-split scoring pass (torch's NCCL default, 10 minutes, does not)."""
    from pruning.loop.distributed import DIST_TIMEOUT_MIN, dist_timeout
    monkeypatch.delenv("IMAGENET52P_DIST_TIMEOUT_MIN", raising=False)
    assert dist_timeout().total_seconds() == DIST_TIMEOUT_MIN * 60 >= 6 * 3600
    monkeypatch.setenv("IMAGENET52P_DIST_TIMEOUT_MIN", "90")
    assert dist_timeout().total_seconds() == 5400
    monkeypatch.setenv("IMAGENET52P_DIST_TIMEOUT_MIN", "soon")
    with pytest.raises(ValueError, match="IMAGENET52P_DIST_TIMEOUT_MIN='soon' must be a positive number"):
        dist_timeout()
