"""Expected cost of a config, in images processed and GPU-hours, from its grid alone.

Per cell (``N`` = train images of its class set x ``data_fraction``; ``L`` = target layers,
1 in one-shot mode; ``V``/``T`` = val/test images):

* trained images = ``L * p * N + q * F + L * score`` (``F`` = train images x
  ``final_data_fraction``; scoring counted as training images: the gradient criteria need a
  backward pass; ``score`` = ``score_images`` or a full pass of the train split of the scoring
  set: the ``full`` build for a cell with ``score_data = "full"``, else the cell's own; 0 for
  criteria computed from the weights alone such as l1 and random)
* evaluated images = ``V * (1 + 2 L + ceil(q)) + T`` (baseline, damage and recovery per step,
  one per final epoch, test once)
* scratch/reduced cells: ``q * F`` trained, ``V * (1 + ceil(q)) + T`` evaluated.

Split sizes are counted from each class set's build (``manifest.json``) when it is found where ``run``
would look (``[data]``, ``--data``, ``--data-root``); otherwise they are looked up in ``SET_SIZES``.

A starting model the runner trains (``weights = "pretrain"`` or ``init = "scratch"``) adds
``epochs * N`` trained images once per class set.  GPU-hours = trained / ``train_ips`` +
evaluated / ``eval_ips``, over 3600.  The default throughputs are ASSUMPTIONS (one H100-class
GPU, bf16 + channels_last, 16 CPU cores decoding JPEGs, so input-bound), not measurements: give
``--train-ips/--eval-ips`` measured on your machine (``python -m benchmark.throughput``).
"""

from __future__ import annotations

import functools
import math

from .config import ExperimentConfig
from .grid import expand_grid

#: (train, val, test) images per class set; ImageNet-1k exact (train minus the 50/class held out as
#: val; test = the official val set), the 52-class sets approximate (1300 train images per class).
SET_SIZES = {"imagenet1k": (1_231_167, 50_000, 50_000), "imagenet52p": (65_000, 2_600, 2_600),
             "random52": (65_000, 2_600, 2_600)}
#: Assumed images/s per GPU (see module docstring).
DEFAULT_TRAIN_IPS = 2500.0
DEFAULT_EVAL_IPS = 4000.0


@functools.lru_cache(maxsize=None)
def n_layers(model: str, layers: str) -> int:
    """Number of convs the protocol ``layers`` targets in ``model`` (built on CPU, random init)."""
    import pruning
    from pruning.loop import make_model
    return len(pruning.prunable_layers(make_model(model, 10), layers))


def _needs(criterion: str) -> str:
    import pruning
    return pruning.get_criterion(criterion).needs


def _sizes(cfg: ExperimentConfig, class_set: str, sizes: dict, data_root=None, data=None,
           used: dict | None = None) -> tuple[int, int, int]:
    """(train, val, test) images of ``class_set``: counted in its build's ``manifest.json`` when the
    build is there (``data_root``/``data`` resolve it as ``run`` does), else looked up in ``sizes`` by
    the build folder's name or the class set's name.  ``used[class_set]`` records which."""
    try:
        build = cfg.build_path(class_set, data_root, data)
    except ValueError:
        build = None
    if build is not None and (build / "manifest.json").is_file():
        from imagenet52p.format import load_manifest
        splits = load_manifest(build).get("splits", {})
        counted = tuple(int(splits.get(k, {}).get("num_samples", 0)) for k in ("train", "val", "test"))
        if used is not None:
            used[class_set] = {"train": counted[0], "val": counted[1], "test": counted[2], "source": str(build)}
        return counted
    path = str(cfg.data.get(class_set, class_set))
    for name, s in sizes.items():
        if name in path.split("/")[-1] or name == class_set:
            if used is not None:
                used[class_set] = {"train": s[0], "val": s[1], "test": s[2], "source": f"assumed ({name})"}
            return s
    raise ValueError(f"{cfg.source}: no size known for class set {class_set!r} (build {path} not found, and its "
                     f"name matches none of {', '.join(sizes)}); build it, or pass --data {class_set}=PATH or "
                     "--data-root to point at the build")


def estimate(cfg: ExperimentConfig, train_ips: float | None = None, eval_ips: float | None = None,
             sizes: dict | None = None, data_root=None, data: dict | None = None) -> dict:
    """``{"cells", "train_images", "eval_images", "gpu_hours", "per_cell_gpu_hours", "sizes"}`` for ``cfg``
    (``sizes``: per class set, the split sizes used and where they came from)."""
    if cfg.task == "detection":
        from .detection.estimate import estimate_detection
        return estimate_detection(cfg, train_ips, eval_ips, data_root, data)
    train_ips, eval_ips = train_ips or DEFAULT_TRAIN_IPS, eval_ips or DEFAULT_EVAL_IPS  # None: the assumed ones
    sizes = sizes or SET_SIZES
    used: dict = {}
    size_of = functools.partial(_sizes, cfg, sizes=sizes, data_root=data_root, data=data, used=used)
    cells = expand_grid(cfg)
    train = evals = 0.0
    pretrained = set()
    for c in cells:
        lc = c.loop_config
        n_tr, n_val, n_te = size_of(c.class_set)
        n = n_tr * lc.data_fraction
        f = n_tr * lc.effective_final_data_fraction
        if c.kind != "prune":
            train += lc.q * f
            evals += n_val * (1 + math.ceil(lc.q)) + n_te
            continue
        steps = 0
        if lc.ratio > 0:
            layers = lc.layers if isinstance(lc.layers, str) else None
            steps = 1 if lc.one_shot else (n_layers(c.model, layers) if layers else len(lc.layers))
        score_set = "full" if c.score_data == "full" else c.class_set
        score = lc.score_images if lc.score_images is not None else (size_of(score_set)[0] if c.score_data else 0)
        if c.criterion is None or _needs(c.criterion) == "weights":
            score = 0  # l1, random, ...: scored from the weights alone
        p = 0.0 if lc.one_shot else lc.p
        train += steps * p * n + lc.q * f + steps * score
        evals += n_val * (1 + 2 * steps + math.ceil(lc.q)) + n_te
        key = c.class_set if c.init == "scratch" else ("full" if cfg.model.get("weights") == "pretrain" else None)
        if key and key not in pretrained:
            pretrained.add(key)
            train += float(cfg.pretrain.get("epochs", 10)) * size_of(key)[0]
    hours = (train / train_ips + evals / eval_ips) / 3600
    return {"cells": len(cells), "train_images": train, "eval_images": evals, "gpu_hours": hours,
            "per_cell_gpu_hours": hours / len(cells), "train_ips": train_ips, "eval_ips": eval_ips, "sizes": used}
