"""A grid cell resolved once, against this machine: its builds, their class lists, weights, sizes, workers.

:class:`CellEnv` holds what is machine-specific (never part of a cell's identity: results folder, data
root, ``--data`` overrides, device, workers).  :func:`resolve_cell` turns a :class:`~benchmark.grid.Cell`
and an env into a :class:`ResolvedCell`: the build paths are computed once, the class lists read once
(when first needed), and everything downstream (pretraining, the run path, the runner's provenance)
reads them from there.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from .config import ExperimentConfig
from .data import Transforms
from .grid import Cell


@dataclass(frozen=True)
class CellEnv:
    """Machine-specific options (never part of a cell's identity)."""

    results_dir: str
    data_root: str | None = None
    data: dict = field(default_factory=dict)  # --data NAME=PATH overrides
    weights: str | None = None  # --weights override of [model].weights
    device: str | None = None
    num_workers: int | None = None
    progress: bool = False
    deterministic: bool = True
    stop_after: int | None = None  # RunOptions.stop_after (tests)
    upstream: dict = field(default_factory=dict)  # detection: --upstream NAME=PATH results folders

    def options(self, progress: bool | None = None):
        """The engine's :class:`pruning.loop.RunOptions` for this machine."""
        from pruning.loop import RunOptions
        return RunOptions(device=self.device, deterministic=self.deterministic,
                          progress=self.progress if progress is None else progress, stop_after=self.stop_after)


def build_classes(build: Path):
    """The build's ``classes.json``, checked against its manifest (:func:`imagenet52p.dataset.load_classes`)."""
    from imagenet52p.dataset import load_classes
    from imagenet52p.format import load_manifest
    return load_classes(build, load_manifest(build))


@dataclass(frozen=True)
class ResolvedCell:
    """``cell`` of ``cfg`` on this machine (``env``); see the module docstring."""

    cfg: ExperimentConfig
    cell: Cell
    env: CellEnv

    @property
    def loop(self):
        """The cell's :class:`pruning.loop.LoopConfig` (parsed once, by the cell)."""
        return self.cell.loop_config

    @functools.cached_property
    def build(self) -> Path:
        """The build of the cell's class set."""
        return self.build_of(self.cell.class_set)

    @functools.cached_property
    def full_build(self) -> Path | None:
        """The ``[data] full`` build (the starting model's training set), None if the config has none."""
        return self.build_of("full") if "full" in self.cfg.data else None

    def build_of(self, class_set: str) -> Path:
        return self.cfg.build_path(class_set, self.env.data_root, self.env.data)

    @functools.cached_property
    def classes(self):
        """The cell build's class list."""
        return build_classes(self.build)

    @functools.cached_property
    def full_classes(self):
        """The full build's class list (None without a ``[data] full``)."""
        if self.full_build is None:
            return None
        return self.classes if self.cell.class_set == "full" else build_classes(self.full_build)

    @functools.cached_property
    def weights(self) -> str | None:
        """``None`` (random init), ``"pretrain"``, a weight name (``IMAGENET1K_V1``, a timm tag, ``DEFAULT``)
        or the absolute path of the starting state_dict."""
        return self.cfg.weights_path(self.env.data_root, self.env.weights, self.cell.model)

    @functools.cached_property
    def weights_source(self):
        """The cell's starting weights (:class:`pruning.weights.WeightsSource`; named weights are found in,
        or downloaded into, their cache here): random for scratch/reduced cells, ``pretrain`` for a starting
        model the runner trains."""
        from pruning.weights import WeightsSource, resolve_weights

        w = self.weights
        if self.cell.kind != "prune" or self.cell.init == "scratch" or w is None:
            return WeightsSource("random")
        if w == "pretrain":
            return WeightsSource("pretrain", "trained by the runner ([pretrain])")
        return resolve_weights(self.cell.model, w)

    @property
    def n_full(self) -> int:
        """Outputs of the starting model of a ``prune`` cell: ``[model] num_classes``, else the full build's."""
        full = self.full_classes
        return int(self.cfg.model.get("num_classes") or len(full if full is not None else self.classes))

    @functools.cached_property
    def sizes(self) -> Transforms:
        o = self.cfg.data_options
        return Transforms(int(o.get("image_size", 224)), int(o.get("resize", 256)),
                          float(o.get("train_scale_min", 0.08)))

    @property
    def workers(self) -> int:
        env = self.env.num_workers
        return env if env is not None else int(self.cfg.data_options.get("num_workers", 0))


def resolve_cell(cfg: ExperimentConfig, cell: Cell, env: CellEnv) -> ResolvedCell:
    """The cell on this machine (a :class:`benchmark.detection.execute.DetResolved` for a detection cell)."""
    if cfg.task == "detection":
        from .detection.execute import DetResolved
        return DetResolved(cfg, cell, env)
    return ResolvedCell(cfg, cell, env)
