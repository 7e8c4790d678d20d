"""Fine-tuning: SGD with momentum and weight decay, an image-counted LR schedule,
gradient accumulation, bf16 autocast + channels_last on CUDA, and DDP.

Definitions
  *Optimizer step*: ``accum_steps`` micro-batches; the loss of each is the sum
  of per-image cross-entropies divided by the number of images in the whole
  step, so accumulation gives the same gradient as one big batch.
  *Schedule*: the learning rate of a step is a function of ``t``, the number of
  images the phase had consumed before it (:func:`lr_at`), so fractional epochs
  and resuming at a pass boundary need no scheduler state.
  *Data time*: wall time spent waiting for the next batch (including the
  host-to-device copy call); *compute time*: the rest of the phase's wall time
  (the device is synchronised at the end of every chunk, not per batch).
  *images/s*: images trained on / chunk wall time, summed over ranks.

Under ``torch.distributed`` the model is wrapped in ``DistributedDataParallel``
for training (re-wrapped after every surgery), ``no_sync`` skips the gradient
all-reduce for all but the last micro-batch, and ranks with uneven data are
handled by DDP's ``Join`` context.  Counts and loss sums are all-reduced.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.algorithms.join import Join

from .data import DataStream, dist_info

log = logging.getLogger(__name__)


def check_device(device) -> torch.device:
    """``torch.device(device)`` of a device this machine has; a ``ValueError`` naming the valid ones otherwise."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    valid = "cpu" + (f", cuda, cuda:0..cuda:{n - 1}" if n else " (no CUDA device here)")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"device={device!r} is not a torch device; valid devices: {valid}") from None
    if dev.type not in ("cpu", "cuda") and not (dev.type == "mps" and torch.backends.mps.is_available()):
        raise ValueError(f"device={device!r} is not available on this machine; valid devices: {valid}")
    if dev.type == "cuda" and n and dev.index is not None and dev.index >= n:
        raise ValueError(f"device={device!r}: this machine has {n} CUDA device(s); valid devices: {valid}")
    return dev


@dataclass
class Runtime:
    """Device placement and speed options of a run (see ``RunOptions``)."""

    device: torch.device
    amp: bool = False  # bf16 autocast; ``create`` turns it on for CUDA (a hand-built CPU Runtime stays fp32)
    channels_last: bool = False
    normalize: object = None  # callable on the device batch (e.g. imagenet52p.transforms.Normalize())

    @classmethod
    def create(cls, device: str | None = None, amp: bool = True, channels_last: bool = True,
               deterministic: bool = False) -> "Runtime":
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = check_device(device)
        if dev.type == "cuda" and dev.index is None and torch.distributed.is_initialized():
            # the GPU of this process on its node (torchrun's LOCAL_RANK), as init_distributed chose it
            local = int(os.environ.get("LOCAL_RANK", torch.distributed.get_rank()))
            dev = torch.device("cuda", local % torch.cuda.device_count())
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device={device!r} but CUDA is not available; use --device cpu")
            torch.cuda.set_device(dev)
            torch.backends.cudnn.benchmark = not deterministic
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if deterministic:
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True, warn_only=True)
        on_cuda = dev.type == "cuda"
        return cls(dev, amp=amp and on_cuda, channels_last=channels_last and on_cuda)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """bf16 autocast on the runtime's device when ``amp`` (``create`` enables it on CUDA only;
        a ``Runtime`` built by hand may use it on CPU, which is how the CUDA path is tested)."""
        if self.amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, model: nn.Module) -> nn.Module:
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def images_to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of images on the device, normalised (``normalize``, else uint8 / 255), in the memory format."""
        x = x.to(self.device, non_blocking=True)
        if self.normalize is not None:
            x = self.normalize(x)
        elif x.dtype == torch.uint8:
            x = x.float().div_(255)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def to_device(self, x: torch.Tensor, y: torch.Tensor):
        return self.images_to_device(x), y.to(self.device, non_blocking=True)

    def sync(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over ranks (identity without a process group)."""
    _, world = dist_info()
    if world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def make_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float,
                   nesterov: bool = False) -> torch.optim.SGD:
    """SGD over every trainable parameter, weight decay on all of them."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov and momentum > 0)


def lr_at(t: float, total: float, base_lr: float, schedule: str, epoch_images: float,
          step_epochs: float = 4.0, gamma: float = 0.1) -> float:
    """Learning rate after ``t`` of ``total`` images of a phase.

    ``constant``: ``base_lr``.  ``cosine``: ``base_lr * (1 + cos(pi * t / total)) / 2``.
    ``step``: ``base_lr * gamma ** floor(t / (step_epochs * epoch_images))``.
    """
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t / max(1.0, total))))
    if schedule == "step":
        return base_lr * gamma ** math.floor(t / max(1.0, step_epochs * epoch_images))
    raise ValueError(f"schedule={schedule!r}; choose constant, cosine or step")


def wrap_ddp(model: nn.Module, runtime: Runtime) -> nn.Module:
    """``DistributedDataParallel(model)`` under a process group, else ``model``."""
    _, world = dist_info()
    if world == 1:
        return model
    ids = [runtime.device.index] if runtime.is_cuda else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


@dataclass
class TrainStats:
    """Totals of one chunk of training, summed over ranks."""

    images: int = 0
    optimizer_steps: int = 0  # this rank's (DDP ranks step together; with Join, a rank out of data stops early)
    loss: float = float("nan")  # mean per-image training loss
    data_time: float = 0.0  # seconds, rank 0
    compute_time: float = 0.0  # seconds, rank 0
    wall_time: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_time if self.wall_time > 0 else 0.0

    def to_dict(self) -> dict:
        return {"images": self.images, "optimizer_steps": self.optimizer_steps, "loss": self.loss,
                "data_time_s": round(self.data_time, 4), "compute_time_s": round(self.compute_time, 4),
                "wall_time_s": round(self.wall_time, 4), "images_per_s": round(self.images_per_s, 2)}


def train_chunk(model: nn.Module, stream: DataStream, pass_index: int, budget: int,
                optimizer: torch.optim.Optimizer, runtime: Runtime, accum_steps: int = 1,
                lr_fn=None, images_before: int = 0, progress=None) -> TrainStats:
    """Train on at most ``budget`` images (over ranks) of pass ``pass_index`` of ``stream``.

    ``lr_fn(t)`` sets the LR of each optimizer step from ``t = images_before +``
    images trained so far in this chunk (global count estimated as local x world).
    ``progress``: a tqdm bar updated with images.
    """
    _, world = dist_info()
    ddp = wrap_ddp(model, runtime)
    ddp.train()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    loss_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
    n_images = n_steps = 0
    data_time = 0.0
    t_start = time.perf_counter()
    it = stream.batches(pass_index, budget)
    join = Join([ddp]) if world > 1 else contextlib.nullcontext()
    with join:
        done = False
        while not done:
            micro = []
            t0 = time.perf_counter()
            for _ in range(accum_steps):
                try:
                    x, y = next(it)
                except StopIteration:
                    done = True
                    break
                micro.append(runtime.to_device(x, y))
            data_time += time.perf_counter() - t0
            if not micro:
                break
            step_images = sum(len(y) for _, y in micro)
            if lr_fn is not None:
                lr = lr_fn(images_before + n_images * world)
                for g in optimizer.param_groups:
                    g["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            for j, (x, y) in enumerate(micro):
                sync = j == len(micro) - 1 or world == 1
                ctx = contextlib.nullcontext() if sync else ddp.no_sync()
                with ctx, runtime.autocast():
                    loss = loss_fn(ddp(x).float(), y)
                (loss / step_images).backward()
                loss_sum += loss.detach().double()
            optimizer.step()
            n_images += step_images
            n_steps += 1
            if progress is not None:
                progress.update(step_images * world)
    runtime.sync()
    wall = time.perf_counter() - t_start
    tot_images, tot_loss = all_reduce_sum([float(n_images), loss_sum.item()], runtime.device)
    return TrainStats(images=int(tot_images), optimizer_steps=n_steps,
                      loss=tot_loss / tot_images if tot_images else float("nan"),
                      data_time=data_time, compute_time=wall - data_time, wall_time=wall)
