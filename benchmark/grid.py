"""Grid expansion, stable cell ids and partitioning across independent jobs.

A :class:`Cell` is one Algorithm 1 run: the cell fields (``kind``, ``model``,
``init``, ``class_set``, ``head``) plus a complete, validated
:class:`pruning.loop.config.LoopConfig`.  Its :attr:`Cell.hash` is the first 16
hex digits of the SHA-256 of the canonical JSON (sorted keys, no whitespace) of
:meth:`Cell.identity`: the cell fields, the LoopConfig, the model spec (name,
weights *as written in the config*, a weight name in its canonical spelling such as
``VGG16_Weights.IMAGENET1K_V1``, number of classes), the pretraining options
when the runner trains the starting model, and the data options that change
numbers (image size, resize).  Machine-specific things (build paths, device,
workers) are not part of it, so the same config gives the same ids everywhere.

LoopConfig fields equal to their default are left out of the identity (see :func:`identity_loop`).

Resolution order for every field: built-in default < ``[base]`` < the scalars of
a ``[[grid]]`` table < that table's list axes.  Axes are expanded as a Cartesian
product in the order the keys appear; cells with identical identity are merged.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
from dataclasses import dataclass

from pruning.loop.config import LoopConfig, canonical_hash

from .config import CELL_FIELDS, ExperimentConfig

#: Loop fields that only matter when filters are removed; normalised in unpruned-baseline cells.
PRUNE_ONLY = ("criterion", "layers", "order", "one_shot", "round_to", "min_keep", "score_images",
              "score_classes", "p")
#: How a cell's identity (its hash, ``cell.json``) and the leaderboard spell the baseline's criterion.  The
#: baseline itself is modelled: its ``LoopConfig.criterion`` is None (ratio 0, nothing scored); this
#: spelling keeps the ids of results computed before that, so a finished results folder stays done.
NO_CRITERION = "none"


def _canon(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def identity_hash(identity: dict) -> str:
    """A cell's hash: the first 16 hex digits of the SHA-256 of its identity's canonical JSON
    (:func:`pruning.loop.config.canonical_hash`, the library's one identity hash)."""
    return canonical_hash(identity)


@dataclass(frozen=True)
class Cell:
    """One run of the grid.  ``loop`` is the resolved LoopConfig (as a dict, JSON-ready)."""

    kind: str
    model: str
    init: str
    class_set: str
    head: str
    score_data: str | None  # benchmark.config.SCORE_DATA, resolved (resolve_scoring); None: no data scored
    score_head: str | None  # benchmark.config.SCORE_HEADS, resolved; None: no scoring loss
    loop: tuple  # sorted (key, value) pairs of LoopConfig.to_dict(), hashable
    context: str  # canonical JSON of the model/pretrain/data options in the identity

    @functools.cached_property
    def loop_config(self) -> LoopConfig:
        """The resolved LoopConfig (parsed once)."""
        return LoopConfig.from_dict({k: (list(v) if isinstance(v, tuple) else v) for k, v in self.loop})

    @functools.cached_property
    def loop_dict(self) -> dict:
        """Every LoopConfig field (defaults filled in)."""
        return self.loop_config.to_dict()

    @property
    def criterion(self) -> str | None:
        """The pruning criterion; None for the unpruned baseline (``scratch``/``reduced`` cells keep the grid's,
        which names the architecture Algorithm 1 would leave; the engine runs them with none)."""
        return self.loop_config.criterion

    @property
    def ratio(self) -> float:
        return float(self.loop_config.ratio)

    @property
    def seed(self) -> int:
        return int(self.loop_config.seed)

    @property
    def is_baseline(self) -> bool:
        return self.kind == "prune" and self.ratio == 0.0

    def identity(self) -> dict:
        loop = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.loop}
        if loop.get("criterion") is None:
            loop["criterion"] = NO_CRITERION
        return {"cell": {f: getattr(self, f) for f in CELL_FIELDS}, "loop": loop, "context": json.loads(self.context)}

    @functools.cached_property
    def hash(self) -> str:
        return identity_hash(self.identity())

    @property
    def id(self) -> str:
        """Readable and unique: ``<model>-<class_set>-<kind>-<criterion>-r<ratio>-s<seed>-<hash8>``."""
        return cell_name(self.model, f"{self.class_set}-{self.kind}", self.criterion, self.is_baseline, self.ratio,
                         self.seed, self.hash)

    def to_dict(self) -> dict:
        d = self.identity()
        d["id"], d["hash"] = self.id, self.hash
        return d


def cell_name(model: str, middle: str, criterion, baseline: bool, ratio: float, seed: int, hash_: str) -> str:
    """A cell's folder name, ``<model>-<middle>-<criterion>-r<ratio %>-s<seed>-<hash8>`` (classification and
    detection cells alike): ``unpruned`` for a baseline, ``timm/<name>`` spelt ``timm-<name>``."""
    crit = "unpruned" if baseline else criterion or NO_CRITERION
    model = model.replace("/", "-").replace(":", "-")  # one folder name
    return f"{model}-{middle}-{crit}-r{ratio * 100:g}-s{seed}-{hash_[:8]}"


def _hashable(v):
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v


def _context(cfg: ExperimentConfig, model: str, init: str, weights_used: bool) -> str:
    from pruning.weights import canonical_name

    # a weight name in its canonical spelling (IMAGENET1K_V1 and DEFAULT of vgg16: VGG16_Weights.IMAGENET1K_V1),
    # so synonyms are one cell; a file path as written (its contents are checked on reuse: runner.check_weights)
    weights = canonical_name(model, cfg.model.get("weights", "none")) if weights_used else "none"
    ctx = {"model": {"name": model, "num_classes": cfg.model.get("num_classes"), "weights": weights},
           "data": {k: cfg.data_options.get(k) for k in ("image_size", "resize", "train_scale_min")}}
    if weights_used and (init == "scratch" or cfg.model.get("weights") == "pretrain"):
        ctx["pretrain"] = dict(sorted(cfg.pretrain.items()))
    return _canon(ctx)


def _loop_error(cfg: ExperimentConfig, loop_vals: dict, table: str, e: Exception) -> str:
    """The message of an invalid loop option, naming the config file, the table and the key at fault (the
    first key that alone, with criterion and ratio, is refused), what was found and what LoopConfig said."""
    base = {k: loop_vals[k] for k in ("criterion", "ratio")}
    for k, v in loop_vals.items():
        try:
            LoopConfig.from_dict({**base, k: v})
        except (TypeError, ValueError) as one:
            where = "[base]" if k in cfg.base and cfg.base[k] == v else table
            default = loop_defaults().get(k)
            want = f" (expected a {type(default).__name__}, e.g. {default!r})" if default is not None else ""
            return f"{cfg.source}: {where} {k} = {v!r} is invalid{want}: {one}"
    return f"{cfg.source}: {table}: invalid loop options {loop_vals}: {e}"


def _make_cell(cfg: ExperimentConfig, values: dict, table: str = "[[grid]]") -> Cell:
    cell_vals = {"kind": "prune", "model": cfg.model.get("name", "tinyvgg"), "init": "pretrained",
                 "class_set": next(iter(cfg.data), "full"), "head": "restrict"}
    loop_vals = {}
    for k, v in values.items():
        (cell_vals if k in CELL_FIELDS else loop_vals)[k] = v
    loop_vals.setdefault("criterion", "l1")
    if loop_vals["criterion"] == NO_CRITERION:  # a baseline written by hand, as configs could before
        loop_vals["criterion"] = None
    loop_vals.setdefault("ratio", 0.5)
    _check_criterion(cfg, loop_vals["criterion"])
    try:
        loop = LoopConfig.from_dict(loop_vals)
    except (TypeError, ValueError) as e:
        raise ValueError(_loop_error(cfg, loop_vals, table, e)) from None
    cell_vals["score_data"], cell_vals["score_head"] = resolve_scoring(cfg, cell_vals, loop)
    weights_used = cell_vals["kind"] == "prune"  # scratch/reduced start from random init
    ctx = _context(cfg, cell_vals["model"], cell_vals["init"], weights_used)
    return Cell(loop=tuple(sorted((k, _hashable(v)) for k, v in identity_loop(loop).items())), context=ctx,
                **cell_vals)


def resolve_scoring(cfg: ExperimentConfig, cell: dict, loop: LoopConfig) -> tuple[str | None, str | None]:
    """``(score_data, score_head)`` of a cell (``benchmark.config.SCORE_DATA`` / ``SCORE_HEADS``), resolved
    so that a cell's identity says what it scores on; ``None`` where it does not apply (no layer step, a
    weight criterion; ``score_head`` for activation criteria, which need no loss).

    Defaults follow the paper's definitions (sec. 3.3): every data-driven criterion averages over all the
    training data of the starting model (``full``: the ``[data] full`` build, all its classes) except
    ``class_specific``, which averages over the images of the cell's classes only (``subset``); a loss is
    taken over the starting model's full classifier (``full``).  For a cell on the full class set both
    are ``full``; a model trained from scratch on the cell's own classes (``init = "scratch"``), or a
    config without a ``full`` build, knows only the cell's classes (``subset`` / ``cell``)."""
    data, head = cell.get("score_data"), cell.get("score_head")
    if cell["kind"] != "prune" or loop.ratio == 0 or loop.criterion is None:
        return None, None
    from pruning import get_criterion
    crit = get_criterion(loop.criterion)
    if crit.needs == "weights":
        return None, None
    where = f"{cfg.source}: cell {loop.criterion} on {cell['class_set']}"
    own_only = cell["init"] == "scratch" or "full" not in cfg.data
    if cell["class_set"] == "full":
        data = "full"
    else:
        data = data or ("subset" if crit.requires_classes or own_only else "full")
        if data == "full" and own_only:
            raise ValueError(f"{where}: score_data = \"full\" needs a [data] full build and a model pretrained on it; "
                             "this model knows only the cell's classes: use score_data = \"subset\"")
    if crit.needs == "activations":
        return data, None
    if cell["init"] == "scratch" and cell["class_set"] != "full":
        if head == "full":
            raise ValueError(f"{where}: score_head = \"full\" needs a starting model with a full classifier; "
                             "a model trained from scratch on the cell's classes has only its own: use \"cell\"")
        head = "cell"
    elif cell["class_set"] == "full" or cell["head"] in ("full", "subset-logits"):
        head = "full"  # the cell's own classifier is the full one
    else:
        head = head or "full"
    if data == "full" and head == "cell":
        raise ValueError(f"{where}: score_data = \"full\" with score_head = \"cell\" is impossible: images of "
                         "classes outside the cell's restricted head have no label there; use score_head = \"full\"")
    return data, head


def loop_defaults() -> dict:
    """LoopConfig's default value of every field that has one."""
    return {f.name: f.default for f in dataclasses.fields(LoopConfig) if f.default is not dataclasses.MISSING}


def identity_loop(loop: LoopConfig) -> dict:
    """The loop options in a cell's identity: every field that differs from LoopConfig's default, plus
    ``criterion``, ``ratio``, ``seed`` and ``version`` always.  Leaving defaults out keeps cell ids (and
    so finished results) valid when the engine gains an option whose default keeps the old behaviour;
    a change of meaning bumps LoopConfig's ``version``, which is always included."""
    defaults = loop_defaults()
    always = ("criterion", "ratio", "seed", "version")
    return {k: v for k, v in loop.to_dict().items() if k in always or k not in defaults or v != defaults[k]}


def _check_criterion(cfg: ExperimentConfig, name) -> None:
    from pruning import list_criteria
    known = list_criteria()
    if name is not None and name not in known:
        raise ValueError(f"{cfg.source}: no criterion {name!r}; available: {', '.join(known)}")


def _baseline_of(cfg: ExperimentConfig, values: dict) -> dict:
    defaults = loop_defaults()
    out = {k: v for k, v in values.items() if k not in PRUNE_ONLY}
    out.update({k: defaults[k] for k in PRUNE_ONLY if k != "criterion"})
    out["criterion"], out["ratio"], out["kind"] = None, 0.0, "prune"  # no pruning: no criterion
    if not cfg.baseline_finetune:
        out["q"] = 0.0
    if "layers" in values:  # keep explicit layer lists out of the baseline identity
        out["layers"] = "all"
    return out


def expand_grid(cfg: ExperimentConfig) -> list[Cell]:
    """All cells of ``cfg`` (sub-grids merged, unpruned baselines added), sorted by id; a detection config's
    are :class:`benchmark.detection.grid.DetCell` s."""
    if cfg.task == "detection":
        from .detection.grid import expand_detection_grid
        return expand_detection_grid(cfg)
    cells: dict[str, Cell] = {}
    for i, g in enumerate(cfg.grid):
        fixed = {**cfg.base, **{k: v for k, v in g.items() if not isinstance(v, list)}}
        axes = [(k, v) for k, v in g.items() if isinstance(v, list)]
        for combo in itertools.product(*[v for _, v in axes]):
            values = {**fixed, **dict(zip([k for k, _ in axes], combo))}
            for vals in ([values, _baseline_of(cfg, values)] if cfg.unpruned and
                         values.get("kind", "prune") == "prune" else [values]):
                cell = _make_cell(cfg, vals, f"[[grid]] #{i + 1}")
                cells.setdefault(cell.id, cell)
    return [cells[k] for k in sorted(cells)]


def partition(cells: list[Cell], task_index: int, num_tasks: int) -> list[Cell]:
    """The cells of task ``task_index`` out of ``num_tasks``: position ``i`` of the id-sorted list goes
    to task ``i % num_tasks``, so every cell is in exactly one task and tasks differ by at most one cell."""
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"--num-tasks must be an integer >= 1, got {num_tasks!r}")
    if not isinstance(task_index, int) or not 0 <= task_index < num_tasks:
        raise ValueError(f"--task-index must be in 0..{num_tasks - 1} (0-based, e.g. $SLURM_ARRAY_TASK_ID), "
                         f"got {task_index!r}")
    ordered = sorted(cells, key=lambda c: c.id)
    return ordered[task_index::num_tasks]
