"""Every RNG a run and its data pipeline may draw from: capture, restore, and a block that leaves them as it
found them.  The captured state is weights_only-safe (tensors, numbers, strings, lists), so checkpoints
(:mod:`pruning.loop.rundir`) store it as it is."""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch


def rng_state() -> dict:
    """Torch CPU, CUDA (all devices, when initialised), NumPy and Python ``random`` states."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]),
                   "gauss": None if py_state[2] is None else float(py_state[2])},
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = list(torch.cuda.get_rng_state_all())
    return out


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Run the block and then put every RNG back as it was (what the block draws does not move them)."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)
