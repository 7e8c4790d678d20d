"""What one Algorithm 1 run works with: :class:`RunContext`, fixed when the engine opens the run (its state,
what the stages advance, is :class:`~pruning.loop.state.LoopState`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    from torch import nn

    from .config import LoopConfig, RunOptions
    from .data import DataStream
    from .models import FullHead
    from .rundir import RunDir
    from .tensorboard import TensorBoardLog
    from .train import Runtime


@dataclass(frozen=True)
class RunContext:
    """What a run works with, fixed for the run (``model`` is pruned in place, never replaced).

    ``train`` / ``train_final`` are the fine-tuning streams of the layer steps and of the final fine-tune
    (the same object unless ``final_data_fraction`` differs), ``score`` the scoring stream (rank 0, batches
    of the global ``batch_size``), ``micro`` the per-rank micro-batch, ``logit_subset`` the logits that
    evaluation takes the arg-max over (None = all), ``score_head`` a ``FullHead`` for the scoring loss,
    ``tensorboard`` the TensorBoard copy of the events (rank 0 with ``RunOptions.tensorboard``, else None).
    """

    config: LoopConfig
    options: RunOptions
    meta: dict
    run_hash: str
    world: int
    is_main: bool
    runtime: Runtime
    out: RunDir
    model: nn.Module
    train: DataStream
    train_final: DataStream
    val: DataStream
    test: DataStream | None
    score: DataStream
    micro: int
    logit_subset: list[int] | None = None
    score_head: FullHead | None = None
    tensorboard: TensorBoardLog | None = None
