"""Detection configs: ``task = "detection"`` TOML files (paper sec. 6, Tables 5-7).

Schema (unknown keys are refused with the file name and the valid keys; docs/detection.md)::

    name = "table5"
    task = "detection"
    description = "..."
    reference = ["paper_table5"]
    estimate_gpu_hours = 900

    [voc]                              # the user's VOCdevkit (docs/voc.md)
    root = "VOCdevkit"                 # relative to --data-root; --data voc=PATH overrides
    train = "2007-trainval"            # set spec: 2007-trainval, 07+12, ...
    test = "2007-test"
    val_images = 500                   # seeded held-out subset of `train` for model selection (0: none)
    val_seed = 0
    num_workers = 4

    [detector]                         # pruning.detection.model: architecture + preset (+ preset overrides)
    arch = "vgg16"
    preset = "voc-vgg16"

    [train]                            # pruning.detection.train.DetTrainConfig: plug-in cells' training
    iterations = 70000
    lr = 0.001
    steps = [50000]

    [prune]                            # pruning.detection.prune.DetPruneConfig (direct cells), criterion,
    iters_per_layer = 2000             # ratio and seed from the grid
    final_iters = 20000

    [fps]                              # timing of every finished cell (never part of a cell's identity)
    images = 100
    warmup = 10

    [upstream.imagenet1k]              # NAME -> a classification config whose results hold the backbones
    config = "table1_vgg16"            # shipped name or TOML path
    results = "results/table1_vgg16"   # default results/<config name>; --upstream NAME=PATH overrides

    [baseline]
    unpruned = true                    # add the ratio-0 plug-in cell of every (upstream, seed, selectors)

    [[grid]]
    kind = "plugin"                    # plugin | direct
    upstream = "imagenet1k"
    criterion = ["random", "l1"]
    ratio = [0.25, 0.5, 0.75]
    seed = [0, 1, 2]
    # any other key selects the upstream cell: a field of its Cell (class_set, head, init, score_data,
    # score_head) or one of its loop options (data_fraction, q, ...)

A ``direct`` cell prunes the detector trained by the ``plugin`` baseline cell of the same ``upstream``
and selectors whose seed is ``source_seed`` (default: the cell's own seed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigHead, _as_list, _check_keys, _resolve

TASK = "detection"
KINDS = ("plugin", "direct")
TOP_KEYS = ("name", "task", "description", "reference", "estimate_gpu_hours", "voc", "detector", "train", "prune",
            "fps", "upstream", "baseline", "grid")
VOC_KEYS = ("root", "train", "test", "val_images", "val_seed", "num_workers")
UPSTREAM_KEYS = ("config", "results")
FPS_KEYS = ("images", "warmup", "repeats")
BASELINE_KEYS = ("unpruned",)
#: Grid keys of a detection cell itself; every other grid key selects the upstream cell.
CELL_KEYS = ("kind", "upstream", "criterion", "ratio", "seed", "source_seed")
VOC_DEFAULTS = {"root": "VOCdevkit", "train": "2007-trainval", "test": "2007-test", "val_images": 0, "val_seed": 0,
                "num_workers": 0}


@dataclass(frozen=True)
class DetectionConfig(ConfigHead):
    """A parsed detection config (module docstring)."""

    voc: dict = field(default_factory=dict)
    detector: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    prune: dict = field(default_factory=dict)
    fps: dict = field(default_factory=dict)
    upstream: dict = field(default_factory=dict)  # name -> {"config", "results"}
    unpruned: bool = True
    task: str = TASK

    @property
    def arch(self) -> str:
        return str(self.detector.get("arch", "vgg16"))

    @property
    def preset(self) -> str:
        return str(self.detector.get("preset", "voc-vgg16"))

    @property
    def preset_overrides(self) -> dict:
        return {k: v for k, v in self.detector.items() if k not in ("arch", "preset")}

    def voc_option(self, key: str):
        return self.voc.get(key, VOC_DEFAULTS[key])

    def voc_root(self, data_root=None, overrides: dict | None = None) -> Path:
        """The VOCdevkit folder: ``--data voc=PATH`` first, then ``[voc] root``; ``${VAR}`` expanded, a relative
        path taken relative to ``data_root`` (default ``$IMAGENET52P_DATA``, else the current folder)."""
        raw = (overrides or {}).get("voc", self.voc_option("root"))
        return _resolve(str(raw), data_root)

    def upstream_results(self, name: str, overrides: dict | None = None) -> Path:
        """The results folder of upstream ``name``: ``--upstream NAME=PATH``, else ``[upstream.NAME] results``,
        else ``results/<its config's name>`` (``imagenet52p-bench run``'s default ``--out``)."""
        if name in (overrides or {}):
            return Path(os.path.expandvars(str(overrides[name]))).expanduser()
        up = self.upstream[name]
        if "results" in up:
            return Path(os.path.expandvars(str(up["results"]))).expanduser()
        from .upstream import upstream_config
        return Path("results") / upstream_config(self, name).name


def _check_grid(doc: dict, grids: list, upstream: dict, source: str) -> None:
    for i, g in enumerate(grids):
        where = f"[[grid]] #{i + 1}"
        for k, v in g.items():
            if isinstance(v, list) and not v:
                raise ValueError(f"{source}: {where} axis {k!r} is an empty list")
        for kind in _as_list(g.get("kind", "plugin")):
            if kind not in KINDS:
                raise ValueError(f"{source}: {where}: kind={kind!r} is not one of {', '.join(KINDS)}")
        for name in _as_list(g.get("upstream", next(iter(upstream), None))):
            if name not in upstream:
                raise ValueError(f"{source}: {where}: upstream={name!r} has no [upstream.{name}] table; known: "
                                 f"{', '.join(upstream) or '(none)'}")


def parse_detection_config(doc: dict, source: str = "<dict>") -> DetectionConfig:
    """Validate a parsed TOML document with ``task = "detection"``."""
    _check_keys("the top level", doc, TOP_KEYS, source)
    if not isinstance(doc.get("name"), str) or not doc["name"]:
        raise ValueError(f"{source}: `name = \"...\"` is required at the top level")
    grids = doc.get("grid")
    grids = [grids] if isinstance(grids, dict) else grids
    if not grids or not isinstance(grids, list):
        raise ValueError(f"{source}: at least one [[grid]] table is required")
    voc = dict(doc.get("voc", {}))
    _check_keys("[voc]", voc, VOC_KEYS, source)
    upstream = {}
    for name, up in dict(doc.get("upstream", {})).items():
        if not isinstance(up, dict) or "config" not in up:
            raise ValueError(f"{source}: [upstream.{name}] needs `config = \"...\"` (the classification config "
                             "whose results hold the backbones, e.g. table1_vgg16)")
        _check_keys(f"[upstream.{name}]", up, UPSTREAM_KEYS, source)
        upstream[name] = dict(up)
    fps = dict(doc.get("fps", {}))
    _check_keys("[fps]", fps, FPS_KEYS, source)
    baseline = dict(doc.get("baseline", {}))
    _check_keys("[baseline]", baseline, BASELINE_KEYS, source)
    _check_grid(doc, grids, upstream, source)
    cfg = DetectionConfig(
        name=doc["name"], grid=tuple(dict(g) for g in grids), source=source,
        description=str(doc.get("description", "")), reference=tuple(_as_list(doc.get("reference", []))),
        estimate_gpu_hours=doc.get("estimate_gpu_hours"), voc=voc, detector=dict(doc.get("detector", {})),
        train=dict(doc.get("train", {})), prune=dict(doc.get("prune", {})), fps=fps, upstream=upstream,
        unpruned=bool(baseline.get("unpruned", True)))
    _check_library_options(cfg)
    return cfg


def _check_library_options(cfg: DetectionConfig) -> None:
    """``[detector]``, ``[train]`` and ``[prune]`` checked by the library's own dataclasses (their errors name
    the option), before any cell is expanded."""
    from pruning.detection.model import PRESETS, resolve_preset
    if cfg.preset not in PRESETS:
        raise ValueError(f"{cfg.source}: [detector] preset = {cfg.preset!r} is not one of {', '.join(PRESETS)}")
    try:
        resolve_preset(cfg.preset, **cfg.preset_overrides)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{cfg.source}: [detector]: {e}") from None
    for table, options in (("[train]", cfg.train), ("[prune]", cfg.prune)):
        if "seed" in options:
            raise ValueError(f"{cfg.source}: {table} seed: a cell's seed is the grid's `seed` (its detector "
                             "training, pruning and data order all follow it); remove the key")
    checks = (("[train]", lambda: train_config(cfg.train)),
              # criterion, ratio and seed come from the grid (checked per cell when it expands)
              ("[prune]", lambda: cfg.prune and prune_config(cfg.prune, "random", 0.5, 0)))
    for table, check in checks:
        try:
            check()
        except (TypeError, ValueError) as e:
            raise ValueError(f"{cfg.source}: {table}: {e}") from None
    _check_splits(cfg)


#: Which images of a year each set holds, as sets of the devkit's lists (trainval = train + val).
_SET_PARTS = {"train": {"train"}, "val": {"val"}, "trainval": {"train", "val"}, "test": {"test"}}


def _check_splits(cfg: DetectionConfig) -> None:
    """``[voc] train`` must hold no test images and share no image with ``[voc] test``: the val subset is drawn
    from ``train``, and the reported mAP must be on images the detector never trained or was selected on."""
    from imagenet52p.voc.sets import parse_spec

    try:
        train, test = parse_spec(cfg.voc_option("train")), parse_spec(cfg.voc_option("test"))
    except ValueError as e:
        raise ValueError(f"{cfg.source}: [voc]: {e}") from None
    if any(name == "test" for _, name in train):
        raise ValueError(f"{cfg.source}: [voc] train = {cfg.voc_option('train')!r} holds a test set: the detector "
                         "would train (and select its weights) on test images; use trainval sets (e.g. 07+12)")
    shared = [f"{y}-{a}/{b}" for y, a in train for yt, b in test if y == yt and _SET_PARTS[a] & _SET_PARTS[b]]
    if shared:
        raise ValueError(f"{cfg.source}: [voc] train and test share images ({', '.join(shared)}); give disjoint "
                         "sets (e.g. train = \"2007-trainval\", test = \"2007-test\")")


def train_config(options: dict):
    """The library's :class:`pruning.detection.train.DetTrainConfig` of ``options``."""
    from pruning.detection.train import DetTrainConfig
    if "iterations" not in options:
        raise ValueError("`iterations` is required (the paper's recipe: iterations = 70000, steps = [50000])")
    return DetTrainConfig.from_dict(dict(options))


def prune_config(options: dict, criterion: str, ratio: float, seed: int):
    """The library's :class:`pruning.detection.prune.DetPruneConfig` of ``[prune]`` + a cell's fields."""
    from pruning.detection.prune import DetPruneConfig
    missing = [k for k in ("iters_per_layer", "final_iters") if k not in options]
    if missing:
        raise ValueError(f"{' and '.join(f'`{k}`' for k in missing)} required for direct cells (fine-tuning "
                         "iterations after each layer step and at the end, e.g. 2000 and 30000)")
    return DetPruneConfig.from_dict({**dict(options), "criterion": criterion, "ratio": ratio, "seed": seed})
