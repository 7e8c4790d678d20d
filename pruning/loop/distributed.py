"""torch.distributed from torchrun's environment: backend choice, the collectives' timeout, initialisation."""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def dist_backend(device: str | None, cuda_available: bool) -> str:
    """``nccl`` when the run trains on CUDA (``device`` None with CUDA present, or ``cuda[:i]``), else ``gloo``
    (``--device cpu`` on a GPU machine must not get NCCL, which cannot reduce CPU tensors)."""
    on_cuda = cuda_available if device is None else torch.device(device).type == "cuda"
    return "nccl" if on_cuda else "gloo"


#: Minutes a collective may wait (``IMAGENET52P_DIST_TIMEOUT_MIN``).  Scoring runs on rank 0 alone while
#: the other ranks wait in a broadcast; scoring a whole ImageNet training split (the paper configs) takes
#: far longer than torch's defaults (10 min for NCCL, 30 for Gloo), after which the job would be killed.
DIST_TIMEOUT_MIN = 720


def dist_timeout() -> "datetime.timedelta":
    """The collectives' timeout: ``$IMAGENET52P_DIST_TIMEOUT_MIN`` minutes (default :data:`DIST_TIMEOUT_MIN`)."""
    import datetime

    raw = os.environ.get("IMAGENET52P_DIST_TIMEOUT_MIN", str(DIST_TIMEOUT_MIN))
    try:
        minutes = float(raw)
    except ValueError:
        minutes = -1.0
    if not minutes > 0:
        raise ValueError(f"IMAGENET52P_DIST_TIMEOUT_MIN={raw!r} must be a positive number of minutes")
    return datetime.timedelta(minutes=minutes)


def init_distributed(device: str | None = None) -> None:
    """Initialise torch.distributed from torchrun's environment when ``WORLD_SIZE > 1``, with the backend
    for ``device`` (:func:`dist_backend`) and :func:`dist_timeout`."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = dist_backend(device, torch.cuda.is_available())
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        torch.distributed.init_process_group(backend, timeout=dist_timeout())
        log.info("process group: %s, rank %d of %d", backend, torch.distributed.get_rank(),
                 torch.distributed.get_world_size())
