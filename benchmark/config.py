"""Experiment configs: a TOML file describing a grid of Algorithm 1 runs.

Schema (every table but ``[[grid]]`` is optional; unknown keys are refused with
the file name and the list of valid keys)::

    name = "table1_vgg16"              # required; names the results folder
    description = "..."                # free text, shown in the report
    reference = ["paper_table1"]       # published numbers to show (benchmark.reference)
    estimate_gpu_hours = 250           # what docs/benchmark.md quotes (informational)

    [data]                             # class-set name -> build directory (build-imagenet52p --out)
    full = "imagenet1k"                # the set the starting model was trained on
    imagenet52p = "imagenet52p"        # relative paths are relative to --data-root
    image_size = 224                   # evaluation crop / training random-resized-crop size
    resize = 256                       # shorter side before the centre crop (evaluation)
    num_workers = 8

    [model]                            # the network every cell starts from
    name = "vgg16"                     # tinyvgg or any torchvision classification model
    weights = "IMAGENET1K_V1"          # a weight name (torchvision enum entry, timm tag, "DEFAULT"), a
                                       # state_dict file (relative to --data-root), "pretrain" (the
                                       # runner trains it on `full`), or "none"
    [pretrain]                         # how the runner trains a starting model when needed
    epochs = 10
    lr = 0.05
    batch_size = 64

    [base]                             # LoopConfig fields shared by every cell (pruning.loop.config)
    p = 1.0
    q = 12.0
    data_fraction = 0.1

    [baseline]
    unpruned = true                    # add one ratio-0 cell per model x class set x seed x init
    finetune = true                    # fine-tune it for q epochs like the pruned cells (false: q = 0,
                                       # the starting model evaluated as it is)

    [[grid]]                           # one or more sub-grids; their cells are merged
    criterion = ["random", "l1"]       # a list is an axis, a scalar a fixed value
    ratio = [0.25, 0.5, 0.75]
    class_set = ["full"]
    seed = [0, 1, 2]

Cell fields besides the LoopConfig fields: ``kind`` (:data:`KINDS`), ``model``,
``init`` (:data:`INITS`), ``class_set`` (a key of ``[data]``), ``head``
(:data:`HEADS`).  See docs/benchmark.md, "Config schema", for the meaning of each.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pruning.loop.config import LoopConfig

from .data import HEADS as _HEADS

#: ``prune``: Algorithm 1 (ratio 0 = the unpruned model fine-tuned and tested like the others).
#: ``scratch``: the architecture Algorithm 1 produces at this ratio on these layers, trained from
#: random initialisation for ``q`` epochs (Crowley et al., 003).  ``reduced``: every prunable conv
#: layer reduced by ``ratio`` (a uniformly thinner network), trained from random init for ``q`` epochs.
KINDS = ("prune", "scratch", "reduced")
#: ``pretrained``: start from ``[model].weights``.  ``scratch``: start from a model the runner trains
#: from random initialisation on the cell's own class set only (Hubens et al., 004).
INITS = ("pretrained", "scratch")
#: Heads (:data:`benchmark.data.HEADS`, the vocabulary of ``imagenet52p prune --head`` too): ``restrict``: a
#: subset's classifier keeps only the subset's rows of the full classifier; ``full``: keep the full
#: classifier and evaluate N-way on the subset's images; ``subset-logits``: train on every output, evaluate
#: the arg-max over the subset's.
HEADS = _HEADS
#: Scoring data of a data-driven criterion (paper sec. 3.3): ``full`` = the training split of the set the
#: starting model was trained on (``[data] full``: all its classes; "averaged over all images in the
#: training data"), ``subset`` = the training split of the cell's own class set.  Defaults (see
#: :func:`benchmark.grid.resolve_scoring`): ``subset`` for ``class_specific`` (sec. 3.3.7: "only those
#: images in the training data which correspond to the l classes"), ``full`` for every other criterion.
SCORE_DATA = ("full", "subset")
#: Classifier of the scoring loss (gradient and mask criteria): ``full`` = every class the starting model
#: knew (the cell's own rows in place, the others from the starting model: ``pruning.loop.FullHead``),
#: ``cell`` = the cell's own head (e.g. the 52 restricted rows).  Default ``full``.
SCORE_HEADS = ("full", "cell")

CELL_FIELDS = ("kind", "model", "init", "class_set", "head", "score_data", "score_head")
LOOP_FIELDS = tuple(f.name for f in dataclasses.fields(LoopConfig) if f.name != "version")
TOP_KEYS = ("name", "task", "description", "reference", "estimate_gpu_hours", "data", "model", "pretrain",
            "base", "baseline", "grid")
DATA_KEYS = ("image_size", "resize", "num_workers", "train_scale_min", "latency_batch_size")
MODEL_KEYS = ("name", "weights", "num_classes")
PRETRAIN_KEYS = ("epochs", "lr", "batch_size", "weight_decay", "schedule", "seed")
BASELINE_KEYS = ("unpruned", "finetune")


def _check_keys(where: str, got: dict, valid, source: str) -> None:
    bad = sorted(set(got) - set(valid))
    if bad:
        raise ValueError(f"{source}: unknown key(s) {bad} in {where}; valid keys: {', '.join(sorted(valid))}")


@dataclass(frozen=True)
class ConfigHead:
    """What every config has, whatever its task: name, grid tables, where it came from (for error messages),
    description, reference tables and the quoted GPU-hours."""

    name: str
    grid: tuple[dict, ...]
    source: str = "<dict>"
    description: str = ""
    reference: tuple[str, ...] = ()
    estimate_gpu_hours: float | None = None


@dataclass(frozen=True)
class ExperimentConfig(ConfigHead):
    """A parsed classification config file (module docstring)."""

    data: dict = field(default_factory=dict)        # class_set -> build path (as written)
    data_options: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    pretrain: dict = field(default_factory=dict)
    base: dict = field(default_factory=dict)
    unpruned: bool = True
    baseline_finetune: bool = True
    task: str = "classification"  # a detection config is a benchmark.detection.config.DetectionConfig

    @property
    def class_sets(self) -> tuple[str, ...]:
        return tuple(self.data)

    def build_path(self, class_set: str, data_root: str | os.PathLike | None = None,
                   overrides: dict | None = None) -> Path:
        """Directory of the build for ``class_set``: ``overrides`` (from ``--data NAME=PATH``) first,
        then ``[data]``; ``${VAR}`` is expanded and a relative path is taken relative to ``data_root``
        (default: the ``IMAGENET52P_DATA`` environment variable, else the current directory)."""
        overrides = overrides or {}
        if class_set in overrides:
            raw = str(overrides[class_set])
        elif class_set in self.data:
            raw = str(self.data[class_set])
        else:
            raise ValueError(f"{self.source}: class set {class_set!r} has no build in [data]; known: "
                             f"{', '.join(self.data) or '(none)'}; add it there or pass --data {class_set}=PATH")
        return _resolve(raw, data_root)

    def weights_path(self, data_root=None, override: str | None = None, model: str | None = None) -> str | None:
        """``None`` (random init), ``"pretrain"``, a weight name of ``model`` (default ``[model].name``; a
        torchvision enum entry such as ``IMAGENET1K_V1``, a timm tag, ``DEFAULT``: kept as written,
        :func:`pruning.weights.is_weight_name`) or the path of a state_dict file (taken from ``data_root``)."""
        from pruning.weights import is_weight_name

        raw = override if override is not None else self.model.get("weights", "none")
        if raw in (None, "none", ""):
            return None
        if raw == "pretrain":
            return "pretrain"
        if is_weight_name(model or self.model.get("name", "tinyvgg"), str(raw)):
            return str(raw)
        return str(_resolve(str(raw), data_root))


def default_data_root(data_root=None) -> str:
    """``--data-root`` when given, else ``$IMAGENET52P_DATA``, else the current directory."""
    return str(data_root) if data_root is not None else os.environ.get("IMAGENET52P_DATA", ".")


def _resolve(raw: str, data_root) -> Path:
    p = Path(os.path.expandvars(raw)).expanduser()
    return p if p.is_absolute() else Path(default_data_root(data_root)) / p


def parse_config(doc: dict, source: str = "<dict>") -> ExperimentConfig:
    """Validate a TOML document (already parsed) and return an :class:`ExperimentConfig` (a
    :class:`benchmark.detection.config.DetectionConfig` for ``task = "detection"``)."""
    task = doc.get("task", "classification")
    if task == "detection":
        from .detection.config import parse_detection_config
        return parse_detection_config(doc, source)
    if task != "classification":
        raise ValueError(f"{source}: task = {task!r} is not one of classification, detection")
    _check_keys("the top level", doc, TOP_KEYS, source)
    if not isinstance(doc.get("name"), str) or not doc["name"]:
        raise ValueError(f"{source}: `name = \"...\"` is required at the top level")
    grids = doc.get("grid")
    if isinstance(grids, dict):
        grids = [grids]
    if not grids or not isinstance(grids, list):
        raise ValueError(f"{source}: at least one [[grid]] table is required")
    valid_axes = CELL_FIELDS + LOOP_FIELDS
    for i, g in enumerate(grids):
        _check_keys(f"[[grid]] #{i + 1}", g, valid_axes, source)
        for k, v in g.items():
            if isinstance(v, list) and not v:
                raise ValueError(f"{source}: [[grid]] #{i + 1} axis {k!r} is an empty list")
        for name, valid in (("kind", KINDS), ("init", INITS), ("head", HEADS), ("score_data", SCORE_DATA),
                            ("score_head", SCORE_HEADS)):
            for v in _as_list(g.get(name, [])):
                if v not in valid:
                    raise ValueError(f"{source}: [[grid]] #{i + 1}: {name}={v!r} is not one of {', '.join(valid)}")
    data = dict(doc.get("data", {}))
    data_options = {k: data.pop(k) for k in list(data) if k in DATA_KEYS}
    for k, v in data.items():
        if not isinstance(v, str):
            raise ValueError(f"{source}: [data] {k} must be a build path (string), got {v!r}; "
                             f"options are {', '.join(DATA_KEYS)}")
    model = dict(doc.get("model", {}))
    _check_keys("[model]", model, MODEL_KEYS, source)
    pretrain = dict(doc.get("pretrain", {}))
    _check_keys("[pretrain]", pretrain, PRETRAIN_KEYS, source)
    base = dict(doc.get("base", {}))
    _check_keys("[base]", base, LOOP_FIELDS + CELL_FIELDS, source)
    baseline = dict(doc.get("baseline", {}))
    _check_keys("[baseline]", baseline, BASELINE_KEYS, source)
    for g in grids:
        for cs in _as_list(g.get("class_set", base.get("class_set", "full"))):
            if data and cs not in data:
                raise ValueError(f"{source}: class_set {cs!r} is used in [[grid]] but [data] has no build for "
                                 f"it; known: {', '.join(data)}")
    ref = doc.get("reference", [])
    return ExperimentConfig(
        name=doc["name"], grid=tuple(dict(g) for g in grids), source=source,
        description=str(doc.get("description", "")), reference=tuple(_as_list(ref)),
        estimate_gpu_hours=doc.get("estimate_gpu_hours"), data=data, data_options=data_options,
        model=model, pretrain=pretrain, base=base, unpruned=bool(baseline.get("unpruned", True)),
        baseline_finetune=bool(baseline.get("finetune", True)))


def _as_list(v) -> list:
    return list(v) if isinstance(v, list) else [v]


def list_configs() -> list[str]:
    """Names of the configs shipped in ``benchmark/configs`` (without ``.toml``)."""
    folder = resources.files("benchmark") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_config(spec: str | os.PathLike) -> ExperimentConfig:
    """Load a config by path, or by the name of a shipped one (``demo``, ``table1_vgg16``...)."""
    path = Path(spec)
    if path.is_file():
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        name = str(spec)[:-5] if str(spec).endswith(".toml") else str(spec)
        shipped = resources.files("benchmark") / "configs" / f"{name}.toml"
        if "/" in str(spec) or not shipped.is_file():
            raise FileNotFoundError(f"config {spec!s} is neither a file nor a shipped config; shipped: "
                                    f"{', '.join(list_configs())}")
        text, source = shipped.read_text(encoding="utf-8"), f"benchmark/configs/{name}.toml"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{source}: not valid TOML: {e}") from None
    return parse_config(doc, source)
