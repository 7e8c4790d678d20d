"""The resolved configuration of one Algorithm 1 run, and its stable hash.

:class:`LoopConfig` is a frozen dataclass holding every option that changes the
numbers a run produces.  Its :meth:`LoopConfig.hash` is the first 16 hex digits
of the SHA-256 of the canonical JSON of :meth:`LoopConfig.to_dict` (sorted keys,
no whitespace), so two runs with the same hash are the same experiment.  Fields
that only change *how* a run is executed (device, number of loader workers,
progress bars) are deliberately not part of it: they live in :class:`RunOptions`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

ORDERS = ("last_to_first", "first_to_last", "given")
SCHEDULES = ("constant", "cosine", "step")
SELECTIONS = ("best", "last")

#: Bumped when the same options come to compute different numbers, so that old and new results are
#: never mixed (a cell's identity always includes it).  2: entropy bins over the range of all scoring
#: images (was: the first batch's); scoring batches are ``batch_size`` images on any world size and
#: accumulation; ``epochs_to_peak`` is None under an annealed final schedule.
CONFIG_VERSION = 2


def _iter(value):
    try:
        return list(value)
    except TypeError:
        return [value]


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(valid)}")


_INT, _NUM, _BOOL = "an integer", "a number", "true or false"
#: The expected kind of every typed field (None allowed where the default is None or the name is listed).
_KINDS = {"ratio": _NUM, "p": _NUM, "q": _NUM, "data_fraction": _NUM, "final_data_fraction": _NUM, "lr": _NUM,
          "final_lr": _NUM, "step_epochs": _NUM, "gamma": _NUM, "momentum": _NUM, "weight_decay": _NUM,
          "round_to": _INT, "min_keep": _INT, "score_images": _INT, "batch_size": _INT, "accum_steps": _INT,
          "seed": _INT, "version": _INT, "one_shot": _BOOL, "nesterov": _BOOL, "order": "a name",
          "schedule": "a name", "select": "a name"}
_OPTIONAL = {"final_data_fraction", "final_lr", "score_images", "stop_after", "device"}


def _is(kind: str, v) -> bool:
    import numbers

    if kind == _BOOL:
        return isinstance(v, bool)
    if isinstance(v, bool):
        return False  # True is not the integer 1 here
    if kind == _INT:
        return isinstance(v, numbers.Integral)
    if kind == _NUM:
        return isinstance(v, numbers.Real) and v == v  # NaN is refused
    return isinstance(v, str)


def check_types(obj, kinds: dict) -> None:
    """A ``ValueError`` naming the first field of ``obj`` whose value is not of its kind in ``kinds``."""
    for name, kind in kinds.items():
        v = getattr(obj, name)
        if v is None and name in _OPTIONAL:
            continue
        if not _is(kind, v):
            none = " or None" if name in _OPTIONAL else ""
            raise ValueError(f"{name}={v!r} ({type(v).__name__}) is not {kind}{none}; give {name} as {kind}{none}")


def _classes(name: str, value) -> tuple[int, ...] | None:
    if value is None:
        return None
    if hasattr(value, "tolist"):  # a tensor or array of labels
        value = value.tolist()
    items = None if isinstance(value, (str, bytes)) else _iter(value)  # read once: a generator is consumed
    if items is None or not all(_is(_INT, c) for c in items):
        raise ValueError(f"{name} must be a sequence of integer labels or None, got {value!r}")
    try:
        out = tuple(int(c) for c in items)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of integer labels or None, got {value!r}") from None
    if not out:
        raise ValueError(f"{name} is empty; pass None to use every class")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has duplicate labels: {sorted(out)}")
    if min(out) < 0:
        raise ValueError(f"{name} has a negative label: {min(out)}")
    return out


#: How a run's identity spells "no criterion": what runs written before it was modelled as None used, so
#: their run directories still resume.
NO_CRITERION = "none"


@dataclass(frozen=True)
class LoopConfig:
    """Everything that determines the numbers of one prune-and-fine-tune run.

    Pruning
      ``criterion``: a name from ``pruning.list_criteria()``, or None for a run that prunes
      nothing (``ratio`` 0: the unpruned baseline, or a network trained as it is); ``criterion_options``:
      its options (e.g. ``{"bins": 20}`` for entropy), passed to ``score_filters``.
      ``ratio``: fraction of filters removed from each target layer (the paper's
      m%: 0.25, 0.5, 0.75).  ``0`` runs no layer step (the unpruned baseline,
      fine-tuned and tested like the others).
      ``layers``: a protocol name for ``pruning.prunable_layers`` (``"vgg16"``,
      ``"resnet50-16"``, ``"all"``...) or an explicit tuple of conv module names.
      ``order``: ``last_to_first`` (Algorithm 1), ``first_to_last``, or ``given``
      (the order of ``layers`` as passed).
      ``one_shot``: score every target layer on the unpruned network, remove all
      of them at once, then run only the final fine-tune (no per-layer ``p``).
      ``round_to`` / ``min_keep``: passed to ``pruning.select_filters``.
      ``score_images``: image budget for scoring each layer (None = one full pass
      over the scoring data); ``score_classes``: labels the scoring images are
      restricted to (None = same as ``classes``).

    Fine-tuning (Algorithm 1's ``p`` and ``q``)
      ``p``: epochs of fine-tuning after each layer step; ``q``: epochs of the
      final fine-tune.  Fractions are allowed: an epoch is the number of
      training images after ``classes`` and ``data_fraction`` are applied, and
      ``p=0.1`` trains on ``round(0.1 * that)`` images.
      ``data_fraction``: fraction of the training set used for fine-tuning (the
      paper's 1/10); on a map-style dataset a fixed seeded random subset, the
      same in every epoch.  ``final_data_fraction``: the fraction for the final
      fine-tune only (None = ``data_fraction``); the paper fine-tunes each layer
      step for 1 epoch and the final network for 12 epochs on 1/10 of the data
      (``data_fraction=1, final_data_fraction=0.1``).  An epoch of the final
      fine-tune counts the final fraction's images.
      ``classes``: labels (in the data's label space) that fine-tuning, val and
      test are restricted to (class-specific pruning; None = all).
      ``lr`` (layer steps, constant), ``final_lr`` (final fine-tune, following
      ``schedule``), ``momentum``, ``weight_decay``, ``nesterov``;
      ``schedule``: ``constant``, ``cosine`` (to 0 over the final fine-tune) or
      ``step`` (multiply by ``gamma`` every ``step_epochs`` epochs).
      ``batch_size``: the **global** batch, i.e. the images of one optimizer step
      summed over DDP ranks and gradient-accumulation micro-batches, so the LR,
      the schedule and the results do not depend on the GPU count; each rank
      loads ``batch_size / (accum_steps x world size)`` images per micro-batch
      (:meth:`micro_batch`; sizes that do not divide are refused).  The scoring
      pass reads batches of ``batch_size`` images too (on rank 0, in pieces of
      the micro-batch), so per-batch criteria (``taylor``) see the same batches
      on any number of GPUs.  ``accum_steps``: micro-batches per optimizer step.
      ``select``: which final-fine-tune epoch is kept: ``best`` val top-1 (ties:
      lower val loss, then the earlier epoch) or ``last``.  Test is evaluated once, on the selected model.
      ``seed``: seeds shuffling, random criteria and initialisation of any RNG.
    """

    criterion: str | None
    ratio: float
    criterion_options: dict | None = None
    layers: str | tuple[str, ...] = "all"
    order: str = "last_to_first"
    one_shot: bool = False
    round_to: int = 1
    min_keep: int = 1
    score_images: int | None = None
    score_classes: tuple[int, ...] | None = None
    p: float = 1.0
    q: float = 12.0
    data_fraction: float = 1.0
    final_data_fraction: float | None = None
    classes: tuple[int, ...] | None = None
    lr: float = 1e-3
    final_lr: float | None = None
    schedule: str = "cosine"
    step_epochs: float = 4.0
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    batch_size: int = 64
    accum_steps: int = 1
    select: str = "best"
    seed: int = 0
    version: int = field(default=CONFIG_VERSION)

    def __post_init__(self) -> None:
        if self.criterion is None:
            if float(self.ratio) != 0.0:
                raise ValueError(f"criterion=None (no pruning) needs ratio=0, got ratio={self.ratio}; name a criterion "
                                 "from pruning.list_criteria() to prune")
        elif not isinstance(self.criterion, str) or not self.criterion:
            raise ValueError(f"criterion must be a non-empty name, or None for no pruning, got {self.criterion!r}")
        if self.criterion_options is not None and not isinstance(self.criterion_options, dict):
            raise ValueError(f"criterion_options must be a dict or None, got {self.criterion_options!r}")
        check_types(self, _KINDS)
        if not 0.0 <= float(self.ratio) < 1.0:
            raise ValueError(f"ratio={self.ratio} must be in [0, 1) (fraction of filters removed per layer)")
        layers = self.layers
        if not isinstance(layers, str):
            if not isinstance(layers, (list, tuple)) or not all(isinstance(x, str) for x in layers):
                raise ValueError(f"layers={layers!r} is not a protocol name or a list of conv module names; give "
                                 "e.g. 'all', 'vgg16' or ['features.0', 'features.3']")
            layers = tuple(layers)
            if not layers:
                raise ValueError("layers is empty; give a protocol name or at least one module name")
            if len(set(layers)) != len(layers):
                raise ValueError(f"layers has duplicates: {list(layers)}")
            object.__setattr__(self, "layers", layers)
        _choice("order", self.order, ORDERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("select", self.select, SELECTIONS)
        for name in ("p", "q"):
            v = getattr(self, name)
            if not (v >= 0):
                raise ValueError(f"{name}={v} must be >= 0 epochs")
        if not 0.0 < self.data_fraction <= 1.0:
            raise ValueError(f"data_fraction={self.data_fraction} must be in (0, 1]")
        if self.final_data_fraction is not None and not 0.0 < self.final_data_fraction <= 1.0:
            raise ValueError(f"final_data_fraction={self.final_data_fraction} must be in (0, 1] or None")
        for name in ("batch_size", "accum_steps", "round_to", "min_keep"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.batch_size % self.accum_steps:
            raise ValueError(f"batch_size={self.batch_size} is not divisible by accum_steps={self.accum_steps}")
        if self.score_images is not None and self.score_images < 1:
            raise ValueError(f"score_images={self.score_images} must be >= 1 or None (a full pass)")
        if self.lr <= 0 or (self.final_lr is not None and self.final_lr <= 0):
            raise ValueError(f"lr={self.lr} and final_lr={self.final_lr} must be > 0")
        if self.step_epochs <= 0 or not 0 < self.gamma <= 1:
            raise ValueError(f"step_epochs={self.step_epochs} must be > 0 and gamma={self.gamma} in (0, 1]")
        object.__setattr__(self, "classes", _classes("classes", self.classes))
        object.__setattr__(self, "score_classes", _classes("score_classes", self.score_classes))
        object.__setattr__(self, "ratio", float(self.ratio))
        object.__setattr__(self, "p", float(self.p))
        object.__setattr__(self, "q", float(self.q))
        object.__setattr__(self, "data_fraction", float(self.data_fraction))

    def micro_batch(self, world_size: int = 1) -> int:
        """Images per rank per micro-batch: ``batch_size / (accum_steps x world_size)``; a
        ``ValueError`` naming the three numbers when it does not divide."""
        split = self.accum_steps * int(world_size)
        if self.batch_size % split:
            raise ValueError(f"batch_size={self.batch_size} is the global batch (images per optimizer step, summed over "
                             f"ranks and accumulation steps) and must be divisible by accum_steps x world size = "
                             f"{self.accum_steps} x {world_size} = {split}; use a multiple of {split} "
                             f"(e.g. {max(split, self.batch_size // split * split)})")
        return self.batch_size // split

    @property
    def effective_final_lr(self) -> float:
        return self.lr if self.final_lr is None else self.final_lr

    @property
    def effective_final_data_fraction(self) -> float:
        return self.data_fraction if self.final_data_fraction is None else float(self.final_data_fraction)

    @property
    def effective_score_classes(self) -> tuple[int, ...] | None:
        return self.classes if self.score_classes is None else self.score_classes

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LoopConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown LoopConfig field(s) {unknown}; known: {sorted(known)}")
        d = dict(d)
        for k in ("layers", "classes", "score_classes"):
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        return cls(**d)

    def identity(self) -> dict:
        """:meth:`to_dict` as the hashes see it: no criterion is spelt :data:`NO_CRITERION`, as runs written
        before it was modelled as None spelt it (so their ``config_hash`` and run hash stay)."""
        d = self.to_dict()
        if d["criterion"] is None:
            d["criterion"] = NO_CRITERION
        return d

    def hash(self) -> str:
        return canonical_hash(self.identity())


@dataclass(frozen=True)
class RunOptions:
    """How a run is executed; none of these change its numbers on CPU.

    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or None (CUDA when available).
    ``amp``: bf16 autocast on CUDA (ignored on CPU).  ``channels_last``: NHWC
    memory format on CUDA.  ``deterministic``: ``torch.use_deterministic_algorithms``
    and no cudnn.benchmark (on CPU the run is deterministic either way).
    ``num_workers``: DataLoader workers for map-style datasets.
    ``progress``: tqdm bars.  ``keep_step_checkpoints``: also keep one
    checkpoint per layer step (``checkpoints/step_XX.pt``) besides ``last.pt``.
    ``stop_after``: stop (as if killed) after this many checkpoints; for tests.
    ``tensorboard``: also write every event as TensorBoard scalars into ``out_dir/tensorboard/`` (rank 0;
    needs ``out_dir`` and the ``tensorboard`` package; :mod:`pruning.loop.tensorboard`).
    """

    device: str | None = None
    amp: bool = True
    channels_last: bool = True
    deterministic: bool = False
    num_workers: int = 0
    progress: bool = True
    keep_step_checkpoints: bool = False
    stop_after: int | None = None
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if type(self.device).__name__ == "device" and type(self.device).__module__ == "torch":
            object.__setattr__(self, "device", str(self.device))  # a torch.device, as torch takes it too
        check_types(self, {"device": "a name", "amp": _BOOL, "channels_last": _BOOL, "deterministic": _BOOL,
                           "num_workers": _INT, "progress": _BOOL, "keep_step_checkpoints": _BOOL,
                           "stop_after": _INT, "tensorboard": _BOOL})
        if self.num_workers < 0 or (self.stop_after is not None and self.stop_after < 1):
            raise ValueError(f"num_workers={self.num_workers} must be >= 0 and stop_after={self.stop_after} >= 1 "
                             "or None")


def canonical_hash(obj) -> str:
    """SHA-256 (16 hex digits) of the canonical JSON of ``obj`` (sorted keys, no whitespace): the library's one
    identity hash (runs of the engine, detector training and pruning runs)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def run_hash(config: LoopConfig, meta: dict | None = None) -> str:
    """Identity of a run: :func:`canonical_hash` of the loop config plus the caller's ``meta`` (model name,
    data, class set...: anything JSON-serialisable that defines the experiment but is not a loop option)."""
    return canonical_hash({"loop": config.identity(), "meta": meta or {}})
