"""One cell under ``torchrun`` (used by the runner with ``--nproc-per-node N``)::

    python -m torch.distributed.run --standalone --nproc-per-node=N -m benchmark.cellmain CONFIG CELL_ID --env JSON

Every rank initialises the default process group (NCCL on CUDA, else Gloo), uses
``cuda:$LOCAL_RANK``, and calls :func:`benchmark.execute.execute_cell`; the engine reduces
metrics across ranks and only rank 0 writes the run directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def main(argv=None) -> int:
    import torch
    import torch.distributed as dist

    from .config import load_config
    from .execute import CellEnv, execute_cell
    from .grid import expand_grid

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("config")
    ap.add_argument("cell_id")
    ap.add_argument("--env", required=True, help="CellEnv as JSON")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    env = CellEnv(**json.loads(a.env))
    cfg = load_config(a.config)
    cells = {c.id: c for c in expand_grid(cfg)}
    if a.cell_id not in cells:
        raise ValueError(f"cell {a.cell_id!r} is not in {cfg.source}; see `imagenet52p-bench list {a.config}`")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
            env = CellEnv(**{**json.loads(a.env), "device": f"cuda:{local}"})
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        execute_cell(cfg, cells[a.cell_id], Path(env.results_dir) / a.cell_id, env)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
