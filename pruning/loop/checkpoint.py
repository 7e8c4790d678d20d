"""Checkpoints that ``torch.load(weights_only=True)`` can read, with every RNG.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:

``format``          1
``run_hash``        the run's hash (a checkpoint of another run is refused)
``position``        where the loop stands: ``{"stage": "steps"|"final"|"done",
                    "step": i, "chunk": j, "pass_index": k, ...}``
``plans``           JSON text: the list of per-step pruning plans, in order
                    (replayed on a fresh model to rebuild the architecture)
``model``           ``state_dict`` of the (pruned) model
``optimizer``       optimizer ``state_dict`` or None (a new one starts each phase)
``best``            model selection state of the final fine-tune (or None)
``rng``             torch CPU, CUDA (all devices), NumPy and Python ``random``
                    states, as uint8 tensors and lists
``events``          number of lines of ``events.jsonl`` written so far
``state``           JSON text: the loop's own bookkeeping (accuracies so far)

Writing is atomic (temporary file + ``os.replace``), so a crash leaves either the
previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

FORMAT = 1


def rng_state() -> dict:
    """Every RNG the loop and its data pipeline may draw from, weights_only-safe."""
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


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Atomically write ``payload`` (plus ``format``) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, run_hash: str | None = None) -> dict:
    """Read a checkpoint with ``weights_only=True``; check format and run hash."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; start the run without resume")
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if ck.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} has format {ck.get('format')!r}, this code reads {FORMAT}")
    if run_hash is not None and ck.get("run_hash") != run_hash:
        raise ValueError(f"checkpoint {path} belongs to run {ck.get('run_hash')}, not {run_hash}: the "
                         f"configuration changed; use a new run directory or delete {path.parent}")
    return ck


def state_dict_cpu(model: torch.nn.Module) -> dict:
    """A detached CPU copy of ``model.state_dict()`` (safe to keep while training continues)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def optimizer_state_cpu(opt: torch.optim.Optimizer) -> dict:
    sd = opt.state_dict()

    def conv(o):
        if torch.is_tensor(o):
            return o.detach().to("cpu", copy=True)
        if isinstance(o, dict):
            return {k: conv(v) for k, v in o.items()}
        if isinstance(o, list):
            return [conv(v) for v in o]
        return o

    return conv(sd)
