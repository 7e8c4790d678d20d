"""Where one Algorithm 1 run stands: :class:`LoopState`, the typed state of the engine.

The state is everything the stages (:mod:`pruning.loop.stages`) advance and a checkpoint
(:mod:`pruning.loop.rundir`) saves: the :class:`Position`, the :class:`Record` of what has been measured,
the :class:`Timing`, the per-step plans, the best final weights, and the optimizer.  Record and timing are
JSON; the summary (:mod:`pruning.loop.summary`) is assembled from the record.  What the run works with
(config, streams, model, device, run directory) is its :class:`~pruning.loop.context.RunContext`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    import torch

STAGES = ("baseline", "steps", "final", "done")


@dataclass
class Position:
    """Where the run stands: ``stage`` (one of :data:`STAGES`), the layer step ``step`` (or, in the final
    stage, the number of steps done), the ``chunk`` (at most one epoch) of the current phase, and
    ``pass_index``, the number of training passes started so far (each pass's order is a function of it)."""

    stage: str = "baseline"
    step: int = 0
    chunk: int = 0
    pass_index: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Position":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def _from_json(cls, text: str, legacy: tuple = ()):
    d = json.loads(text)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known - set(legacy))
    if unknown:
        raise ValueError(f"a checkpoint's {cls.__name__} has unknown fields {unknown}; known: {sorted(known)}")
    return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Record:
    """What the run has measured (JSON-able; the summary is assembled from it).

    ``baseline``: ``{"val": accuracy, "params", "macs"}`` of the unpruned network; ``steps``: one entry per
    finished layer step (the ``layer_step`` event's fields); ``partial``: the entry of the step in progress;
    ``final``: one row per final fine-tune epoch (the ``epoch`` event's fields); ``best``: ``{"epoch",
    "top1", "loss"}`` of the selected final epoch so far; ``layers``: the target convs in pruning order;
    ``input_size``: ``[C, H, W]`` of the val images; ``train_pass_images`` / ``final_pass_images``: images
    per pass of the two fine-tuning streams, counted once at the baseline and reused on resume.
    """

    baseline: dict | None = None
    steps: list = field(default_factory=list)
    final: list = field(default_factory=list)
    partial: dict | None = None
    best: dict | None = None
    layers: list | None = None
    input_size: list | None = None
    train_pass_images: int | None = None
    final_pass_images: int | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Record":
        """The record of a checkpoint; one written before the typed state (with an unused ``"test"``) too."""
        return _from_json(cls, text, legacy=("test",))


@dataclass
class Timing:
    """Wall-clock timings: one dict per finished layer step and per final epoch, and the step in progress."""

    steps: list = field(default_factory=list)
    final: list = field(default_factory=list)
    partial: dict | None = None

    def to_dict(self) -> dict:
        """What ``timing.json`` holds (``partial`` only while a step is in progress)."""
        out = {"steps": self.steps, "final": self.final}
        if self.partial is not None:
            out["partial"] = self.partial
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | None) -> "Timing":
        """The timing of a checkpoint (an early checkpoint without one gives empty timings)."""
        return cls() if not text else _from_json(cls, text)


@dataclass
class LoopState:
    """Everything a run advances (module docstring).  ``plans``: the plan ``{conv: kept indices}`` of every
    finished pruning, in order (replayed on a fresh model to rebuild the architecture); ``best_state``: a CPU
    ``state_dict`` of the selected final epoch while it is not the current weights; ``optimizer``: the live
    optimizer of the current phase (None between phases); ``optimizer_state``: a checkpoint's optimizer
    ``state_dict``, loaded into the phase's next optimizer; ``events_written`` / ``checkpoints_written``:
    counts so far (the events file is cut back to its count on resume)."""

    position: Position = field(default_factory=Position)
    record: Record = field(default_factory=Record)
    timing: Timing = field(default_factory=Timing)
    plans: list = field(default_factory=list)
    best_state: dict | None = None
    optimizer: torch.optim.Optimizer | None = None
    optimizer_state: dict | None = None
    events_written: int = 0
    checkpoints_written: int = 0
