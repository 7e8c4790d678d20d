"""Expected cost of a detection config, in images and GPU-hours (``imagenet52p-bench estimate``).

Per cell, with ``B`` = ``batch_size`` (images per iteration), ``V`` / ``T`` = val subset / test images:

* ``plugin``: trained images = ``iterations * B``; evaluated = ``T + V * ceil(iterations / eval_every)``
  (every ``eval_every`` iterations and after the last; ``T + V`` without ``eval_every``: val once, after the
  last iteration; no val term when ``V`` = 0).
* ``direct``: trained = ``(L * iters_per_layer + final_iters) * B + L * S`` (``B``, ``iters_per_layer`` and
  ``final_iters`` from ``[prune]``; ``L`` = backbone convs pruned: 13 for vgg16 with ``layers = "all"``;
  ``S`` = ``score_images`` for a data criterion, else 0); evaluated = ``T + V * (L + 2)`` (val before
  pruning, after every layer step and after the final fine-tune).
* every cell: ``2 * (warmup + 2 * repeats * images)`` (``[fps]``) timed forwards, counted as evaluated images
  (the detector and its unpruned reference; a timed pass and a per-stage pass per repeat).

Set sizes are counted from the VOCdevkit's ``ImageSets/Main`` lists when found, else taken from
``VOC_SIZES`` (the official counts).  GPU-hours = trained / ``train_ips`` + evaluated / ``eval_ips``, over
3600.  The default throughputs are ASSUMPTIONS (one H100-class GPU, VGG-16 Faster R-CNN at 600 px, bf16), not
measurements: measure yours with ``make bench-gpu`` (``scripts/bench_detect.py``) and pass them.
"""

from __future__ import annotations

from pathlib import Path

#: Images of the official sets (VOC2007: 9,963 images in trainval + test).
VOC_SIZES = {"2007-trainval": 5011, "2007-train": 2501, "2007-val": 2510, "2007-test": 4952,
             "2012-trainval": 11540, "2012-train": 5717, "2012-val": 5823}
DEFAULT_DET_TRAIN_IPS = 12.0  # assumed, see the module docstring
DEFAULT_DET_EVAL_IPS = 30.0


def _set_size(root: Path, spec: str, used: dict) -> int:
    from imagenet52p.voc.sets import list_path, parse_spec, resolve_devkit

    try:
        devkit = resolve_devkit(root)
    except (FileNotFoundError, ValueError):
        devkit = None
    total, source = 0, "counted"
    for year, name in parse_spec(spec):
        try:
            listed = list_path(devkit, year, name) if devkit is not None else None
        except FileNotFoundError:
            listed = None
        if listed is not None:
            total += sum(1 for line in listed.read_text().splitlines() if line.strip())
        else:
            total += VOC_SIZES[f"{year}-{name}"]
            source = "assumed (official count)"
    used[spec] = {"images": total, "source": source}
    return total


def _layers(prune: dict, arch: str) -> int:
    """Backbone convs a direct cell prunes: its explicit list, else every conv of the architecture's
    ``features`` (the backbone; :func:`benchmark.estimate.n_layers` with protocol ``all``: 13 for vgg16)."""
    from ..estimate import n_layers

    layers = prune.get("layers", "all")
    return len(layers) if isinstance(layers, list) else n_layers(arch, "all")


def estimate_detection(cfg, train_ips: float | None = None, eval_ips: float | None = None, data_root=None,
                       data: dict | None = None) -> dict:
    """The dict of :func:`benchmark.estimate.estimate` for a detection config."""
    import pruning

    from .grid import expand_detection_grid

    train_ips, eval_ips = train_ips or DEFAULT_DET_TRAIN_IPS, eval_ips or DEFAULT_DET_EVAL_IPS
    root, used = cfg.voc_root(data_root, data), {}
    n_train = _set_size(root, cfg.voc_option("train"), used)
    n_test = _set_size(root, cfg.voc_option("test"), used)
    n_val = int(cfg.voc_option("val_images"))
    used["val (held out of train)"] = {"images": n_val, "source": "[voc] val_images"}
    cells = expand_detection_grid(cfg)
    trained = evals = 0.0
    for c in cells:
        opts = c.option_dict
        fps = cfg.fps
        evals += n_test + 2 * (int(fps.get("warmup", 5)) + 2 * int(fps.get("repeats", 1)) * int(fps.get("images", 50)))
        if c.kind == "plugin":
            t = opts["train"]
            b, every, iters = int(t.get("batch_size", 1)), t.get("eval_every"), int(t["iterations"])
            evals += n_val * (-(-iters // int(every)) if every else 1)  # every k iterations and at the last one
        else:
            p = opts["prune"]
            b = int(p.get("batch_size", 1))
            n_layers = _layers(p, c.model)
            data_crit = pruning.get_criterion(c.criterion).needs != "weights"
            iters = n_layers * int(p.get("iters_per_layer", 0)) + int(p.get("final_iters", 0))
            trained += n_layers * int(p.get("score_images") or n_train) * data_crit
            evals += n_val * (n_layers + 2)  # val before pruning, after each layer step, after the final fine-tune
        trained += iters * b
    hours = (trained / train_ips + evals / eval_ips) / 3600
    sizes = {k: {"train": v["images"], "val": 0, "test": 0, "source": v["source"]} for k, v in used.items()}
    return {"cells": len(cells), "train_images": trained, "eval_images": evals, "gpu_hours": hours,
            "per_cell_gpu_hours": hours / max(1, len(cells)), "train_ips": train_ips, "eval_ips": eval_ips,
            "sizes": sizes, "train_images_voc": n_train}
