"""One cell under ``torchrun`` (used by the runner with ``--nproc-per-node N``)::

    python -m torch.distributed.run --standalone --nproc-per-node=N -m benchmark.cellmain CONFIG CELL_ID --env JSON

Every rank initialises the default process group (NCCL when the cell trains on CUDA, else Gloo;
:func:`pruning.loop.distributed.init_distributed`), uses ``cuda:$LOCAL_RANK`` on CUDA, and calls :func:`benchmark.execute.execute_cell`; the engine reduces
metrics across ranks and only rank 0 writes the run directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv=None) -> int:
    import torch.distributed as dist

    from pruning.loop.distributed import init_distributed

    from .config import load_config
    from .execute import execute_cell
    from .resolve import CellEnv
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
    # under torchrun: NCCL on this process's GPU (LOCAL_RANK) when the cell trains on CUDA, Gloo for
    # --device cpu (pruning.loop.distributed.init_distributed; the loop's Runtime picks the same GPU)
    init_distributed(env.device)
    try:
        execute_cell(cfg, cells[a.cell_id], Path(env.results_dir) / a.cell_id, env)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
