"""Detection cells: grid expansion, identity, hash and id (as :mod:`benchmark.grid` does for classification).

A :class:`DetCell`'s :attr:`~DetCell.hash` is the first 16 hex digits of the SHA-256 of the canonical JSON of
:meth:`DetCell.identity`: its kind, architecture, criterion, ratio, seed, the upstream cell it plugs in (config
name, cell id and hash) or, for ``direct``, the hash of the trained detector it prunes, and every option that
changes numbers (VOC sets and val subset, detector preset and overrides, training and pruning options, all
resolved through the library's dataclasses so that a default written out or left out gives the same hash).
Machine-specific things (paths, device, workers, fps timing options) are not part of it.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
from dataclasses import dataclass

from ..grid import NO_CRITERION, PRUNE_ONLY, _canon, cell_name, identity_hash
from .config import CELL_KEYS, DetectionConfig, prune_config, train_config
from .upstream import find_upstream, upstream_config


@dataclass(frozen=True)
class DetCell:
    """One detection run (module docstring).  ``options`` is the canonical JSON of the numeric options."""

    kind: str
    model: str
    upstream: str  # the [upstream.NAME] it descends from
    up_config: str
    up_id: str  # plugin: the upstream cell plugged in; direct: the one its source detector was trained from
    up_hash: str
    criterion: str | None
    ratio: float
    seed: int
    source: str | None  # direct: hash of the plugin baseline cell whose trained detector is pruned
    source_id: str | None
    options: str
    reference_id: str | None = None  # the trained unpruned detector its fps is compared with (not in the identity)

    class_set = "voc"  # what `list` and the runner show in the class-set column
    head = "detector"
    init = "pretrained"

    @property
    def order(self) -> int:
        """Run order within a task: plug-in baselines first (the fps reference of the others, the detectors the
        direct cells prune), then the other plug-in cells, then the direct cells."""
        return 0 if self.is_baseline else 1 if self.kind == "plugin" else 2

    @property
    def is_baseline(self) -> bool:
        return self.kind == "plugin" and self.ratio == 0.0

    @functools.cached_property
    def option_dict(self) -> dict:
        return json.loads(self.options)

    def identity(self) -> dict:
        cell = {"kind": self.kind, "model": self.model, "upstream": {"config": self.up_config, "cell": self.up_id,
                                                                     "hash": self.up_hash}}
        if self.source is not None:
            cell["source"] = self.source
        return {"task": "detection", "cell": cell, "criterion": self.criterion or NO_CRITERION, "ratio": self.ratio,
                "seed": self.seed, "options": self.option_dict}

    @functools.cached_property
    def hash(self) -> str:
        return identity_hash(self.identity())

    @property
    def id(self) -> str:
        return cell_name(self.model, f"voc-{self.kind}-{self.upstream}", self.criterion, self.is_baseline, self.ratio,
                         self.seed, self.hash)

    def to_dict(self) -> dict:
        d = self.identity()
        d["id"], d["hash"], d["upstream_name"] = self.id, self.hash, self.upstream
        if self.source_id:
            d["source_id"] = self.source_id
        return d


def _voc_identity(cfg: DetectionConfig) -> dict:
    """The VOC options in canonical form: set specs spelt out (``07`` = ``2007-trainval``), ``val_seed`` only
    when a val subset is drawn."""
    from imagenet52p.voc.sets import parse_spec, spec_name

    out = {k: spec_name(parse_spec(cfg.voc_option(k))) for k in ("train", "test")}
    out["val_images"] = int(cfg.voc_option("val_images"))
    if out["val_images"]:
        out["val_seed"] = int(cfg.voc_option("val_seed"))
    return out


def _detector_identity(cfg: DetectionConfig) -> dict:
    """Architecture, preset, and the preset fields the config changes (a default written out is no change)."""
    import dataclasses as dc

    from pruning.detection.model import PRESETS, resolve_preset

    base, got = dc.asdict(PRESETS[cfg.preset]), dc.asdict(resolve_preset(cfg.preset, **cfg.preset_overrides))
    changed = {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(got.items()) if v != base[k]}
    return {"arch": cfg.arch, "preset": cfg.preset, "overrides": changed}


def _options(cfg: DetectionConfig, kind: str, criterion, ratio: float, seed: int) -> dict:
    """The number-changing options of a cell, through the library's dataclasses (defaults filled in, the
    checkpoint/log cadence left out: ``pruning.detection.train.numbers_config``).  A plug-in cell's detector
    training takes the cell's seed; a direct cell's training is its source's (pinned by the source's hash)."""
    from pruning.detection.train import numbers_config

    out = {"voc": _voc_identity(cfg), "detector": _detector_identity(cfg)}
    if kind == "plugin":
        out["train"] = numbers_config(train_config({**cfg.train, "seed": seed}))
    else:
        out["prune"] = numbers_config(prune_config(cfg.prune, criterion, ratio, seed))
        for k in ("criterion", "ratio", "seed"):
            out["prune"].pop(k, None)  # in the identity already
    return out


def _plugin(cfg: DetectionConfig, vals: dict, where: str) -> DetCell:
    name = vals.get("upstream", next(iter(cfg.upstream)))
    crit = vals.get("criterion")
    crit = None if crit in (None, NO_CRITERION) else crit
    ratio, seed = float(vals.get("ratio", 0.0)), int(vals.get("seed", 0))
    if ratio == 0:
        crit = None
    selectors = {k: v for k, v in vals.items() if k not in CELL_KEYS}
    up = find_upstream(cfg, name, crit, ratio, seed, selectors, where)
    opts = _options(cfg, "plugin", crit, ratio, seed)
    up_name = upstream_config(cfg, name).name  # the config's name, not the path it was given by: machine-free
    return DetCell("plugin", cfg.arch, name, up_name, up.id, up.hash, crit, ratio, seed, None, None, _canon(opts))


def baseline_selectors(vals: dict) -> dict:
    """The grid values of the plug-in baseline of ``vals``: ratio 0, no criterion, and no selector that only
    pruned upstream cells have (their scoring and pruning options: ``benchmark.grid.PRUNE_ONLY``)."""
    drop = {"criterion", "ratio", "score_data", "score_head", *PRUNE_ONLY}
    return {**{k: v for k, v in vals.items() if k not in drop}, "ratio": 0.0}


def _direct(cfg: DetectionConfig, vals: dict, where: str) -> tuple[DetCell, DetCell]:
    """``(the direct cell, its source: the plug-in baseline cell whose detector it prunes)``."""
    crit, ratio, seed = vals.get("criterion"), float(vals.get("ratio", 0.5)), int(vals.get("seed", 0))
    if crit in (None, NO_CRITERION) or ratio <= 0:
        raise ValueError(f"{cfg.source}: {where}: a direct cell needs a criterion and a ratio > 0 (its unpruned "
                         "baseline is the plug-in baseline cell whose detector it prunes)")
    src_vals = baseline_selectors({k: v for k, v in vals.items() if k not in ("kind", "source_seed")})
    src_vals.update({"seed": int(vals.get("source_seed", seed)), "kind": "plugin"})
    source = _plugin(cfg, src_vals, where)
    source = dataclasses.replace(source, reference_id=source.id)  # a baseline is timed against itself
    try:
        opts = _options(cfg, "direct", crit, ratio, seed)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{cfg.source}: [prune] / {where}: {e}") from None
    cell = DetCell("direct", cfg.arch, source.upstream, source.up_config, source.up_id, source.up_hash, crit, ratio,
                   seed, source.hash, source.id, _canon(opts), reference_id=source.id)
    return cell, source


def expand_detection_grid(cfg: DetectionConfig) -> list[DetCell]:
    """Every cell of ``cfg`` (sub-grids merged; the plug-in baselines added with ``[baseline] unpruned``, and
    always the source cell of every direct cell), sorted by id."""
    cells: dict[str, DetCell] = {}
    for i, g in enumerate(cfg.grid):
        where = f"[[grid]] #{i + 1}"
        fixed = {k: v for k, v in g.items() if not isinstance(v, list)}
        axes = [(k, v) for k, v in g.items() if isinstance(v, list)]
        for combo in itertools.product(*[v for _, v in axes]):
            vals = {**fixed, **dict(zip([k for k, _ in axes], combo))}
            if vals.get("kind", "plugin") == "direct":
                found = list(_direct(cfg, vals, where))
            else:
                cell = _plugin(cfg, vals, where)
                base = _plugin(cfg, baseline_selectors(vals), where) if cell.ratio > 0 else cell
                found = [dataclasses.replace(cell, reference_id=base.id)]
                if cfg.unpruned and cell.ratio > 0:
                    found.append(dataclasses.replace(base, reference_id=base.id))
            for cell in found:
                cells.setdefault(cell.id, cell)
    return [cells[k] for k in sorted(cells)]
