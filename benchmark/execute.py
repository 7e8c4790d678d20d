"""Run ONE cell: the single place that calls the Algorithm 1 engine (``pruning.loop.run_loop``)
and opens builds (``imagenet52p.ImageNet52P``).

What a cell runs, by kind (``benchmark.config.KINDS``):

* ``prune``: the starting model (see below), classifier adapted to the class set, then
  ``run_loop`` with the cell's LoopConfig (ratio 0 = the unpruned baseline).
* ``scratch`` / ``reduced``: a random-init model whose target layers (``layers`` for
  ``scratch``, every prunable conv for ``reduced``) keep the first ``round((1 - ratio) * n)``
  filters (``pruning.select_filters``, so the widths equal Algorithm 1's at that ratio); all
  parameters are then re-initialised (seeded), and ``run_loop`` with ratio 0 trains it for
  ``q`` epochs.  ``bench.json`` records the unreduced network's params/MACs.

Starting model (``prune``): ``init="pretrained"``: ``[model].weights`` (a state_dict file), or
with ``weights="pretrain"`` a model the runner trains from random init on the ``full`` build
(``[pretrain]`` options), shared by every cell in ``RESULTS/_pretrain/<hash>/`` under a file
lock; ``init="scratch"``: likewise but trained on the cell's own class set only.

Class subsets (``class_set`` other than ``full``, model trained on ``full``): ``head="restrict"``
keeps the rows of the final linear layer for the subset's classes (labels 0..k-1);
``head="full"`` keeps every output and maps the subset's labels into the full label space.
Subset classes are matched to the full build's classes by wnid.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import ExperimentConfig
from .grid import Cell
from .results import BENCH_FILE, write_json

log = logging.getLogger(__name__)


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


class LabelMap:
    """Picklable target transform: ``label -> table[label]``."""

    def __init__(self, table):
        self.table = [int(t) for t in table]

    def __call__(self, y):
        return self.table[int(y)]


def open_split(cfg: ExperimentConfig, build: Path, split: str, role: str, batch: int, seed: int,
               env: CellEnv, target_map=None):
    """A DataLoader of ``(uint8 images, labels[, meta])`` over one split of a build, for ``role``:

    ``train``: augmented (random-resized crop + flip), shuffled, batches carry sample keys so
    ``data_fraction`` selects a fixed subset by key; workers are not persistent, so each pass's
    workers seed from the checkpointed RNG and resuming stays exact.  ``score``: the train split with
    the eval transform, shuffled, read whole by every rank (as ``imagenet52p prune`` does).
    ``val``/``test``: eval transform, in order.  The engine normalises batches on the device."""
    from torch.utils.data import DataLoader

    from imagenet52p import ImageNet52P
    from imagenet52p import transforms as T

    o = cfg.data_options
    size, resize = int(o.get("image_size", 224)), int(o.get("resize", 256))
    tf = (T.train(size, scale=(float(o.get("train_scale_min", 0.08)), 1.0)) if role == "train"
          else T.eval(size, resize))
    share = dict(rank=0, world_size=1) if role == "score" else {}
    ds = ImageNet52P(build, split, transform=tf, target_transform=target_map, shuffle=role in ("train", "score"),
                     seed=seed, batch_size=batch, with_meta=role == "train", **share)
    workers = env.num_workers if env.num_workers is not None else int(o.get("num_workers", 0))
    return DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=T.collate,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0 and role in ("val", "test"))


def _normalize():
    from imagenet52p import transforms as T
    return T.Normalize()


def _classes(build: Path):
    """The build's ``classes.json``, checked against its manifest (:func:`imagenet52p.dataset.load_classes`)."""
    from imagenet52p.dataset import load_classes, load_manifest
    return load_classes(build, load_manifest(build))


def _opts(env: CellEnv, progress=None):
    from pruning.loop import RunOptions
    return RunOptions(device=env.device, deterministic=env.deterministic,
                      progress=env.progress if progress is None else progress, stop_after=env.stop_after)


def _pretrain_weights(cfg: ExperimentConfig, env: CellEnv, class_set: str, n_classes: int) -> Path:
    """Train (or reuse) a model from random init on ``class_set``; returns its ``model/`` directory."""
    from pruning.loop import LoopConfig, make_model, run_loop

    p = dict(cfg.pretrain)
    ident = {"model": cfg.model.get("name"), "class_set": class_set, "n": n_classes, "pretrain": p,
             "data": {k: cfg.data_options.get(k) for k in ("image_size", "resize", "train_scale_min")}}
    h = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    out = Path(env.results_dir) / "_pretrain" / f"{cfg.model.get('name')}-{class_set}-{h}"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent tasks wait for the one that trains it
        if not (out / "summary.json").is_file():
            seed = int(p.get("seed", 0))
            lc = LoopConfig(criterion="none", ratio=0.0, q=float(p.get("epochs", 10)), lr=float(p.get("lr", 0.05)),
                            batch_size=int(p.get("batch_size", 64)), weight_decay=float(p.get("weight_decay", 5e-4)),
                            schedule=p.get("schedule", "cosine"), seed=seed, select="last")
            build = cfg.build_path(class_set, env.data_root, env.data)
            log.info("pretraining %s on %s for %s epochs -> %s", cfg.model.get("name"), class_set, lc.q, out)
            model = make_model(cfg.model["name"], n_classes, seed=seed)
            train = open_split(cfg, build, "train", "train", lc.batch_size, seed, env)
            val = open_split(cfg, build, "val", "val", lc.batch_size, seed, env)
            run_loop(model, lc, train, val, None, out_dir=out, resume=True, options=_opts(env),
                     meta={"pretrain": ident}, train_pass_images=train.dataset.num_samples,
                     batch_transform=_normalize())
    return out / "model"


def _start_model(cfg: ExperimentConfig, cell: Cell, env: CellEnv):
    """``(model factory without weights, model with starting weights, target_map)``."""
    from pruning import load_pruned
    from pruning.loop import make_model, restrict_classifier

    name = cell.model
    build = cfg.build_path(cell.class_set, env.data_root, env.data)
    sub = _classes(build)
    if cell.kind != "prune" or cell.init == "scratch":
        n = len(sub)
        fresh = lambda: make_model(name, n, seed=cell.seed)  # noqa: E731
        if cell.kind != "prune":
            return fresh, fresh(), None
        return fresh, load_pruned(fresh, _pretrain_weights(cfg, env, cell.class_set, n)), None
    full_classes = _classes(cfg.build_path("full", env.data_root, env.data)) if "full" in cfg.data else None
    n_full = int(cfg.model.get("num_classes") or (len(full_classes) if full_classes else len(sub)))
    weights = cfg.weights_path(env.data_root, env.weights)
    base = lambda: make_model(name, n_full, seed=cell.seed)  # noqa: E731
    if weights == "pretrain":
        model = load_pruned(base, _pretrain_weights(cfg, env, "full", n_full))
    else:
        model = make_model(name, n_full, weights=weights, seed=cell.seed)
    if cell.class_set == "full":
        return base, model, None
    if full_classes is not None:
        pos = full_classes.wnid_to_idx
        missing = [w for w in sub.wnids if w not in pos]
        if missing:
            raise ValueError(f"classes {missing[:5]} of build {build} are not in the full build; "
                             "a subset must be drawn from the full set")
        idx = [pos[w] for w in sub.wnids]
    else:
        idx = sub.imagenet1k_indices
    if cell.head == "restrict":
        restrict_classifier(model, idx)
        return (lambda: restrict_classifier(base(), idx)), model, None
    return base, model, LabelMap(idx)


def prepare_cell(cfg: ExperimentConfig, cell: Cell, env: CellEnv) -> None:
    """Train the starting model the cell needs, if any (done in one process before ``torchrun``)."""
    if cell.kind != "prune":
        return
    if cell.init == "scratch":
        n = len(_classes(cfg.build_path(cell.class_set, env.data_root, env.data)))
        _pretrain_weights(cfg, env, cell.class_set, n)
    elif cfg.weights_path(env.data_root, env.weights) == "pretrain":
        full = _classes(cfg.build_path("full", env.data_root, env.data))
        _pretrain_weights(cfg, env, "full", int(cfg.model.get("num_classes") or len(full)))


def _reduce(model, cell: Cell, example):
    """Keep the first filters of every target layer (widths as Algorithm 1 at ``ratio``), re-init."""
    import pruning

    layers = "all" if cell.kind == "reduced" else cell.loop_config.layers
    names = pruning.prunable_layers(model, layers) if isinstance(layers, str) else list(layers)
    convs = dict(model.named_modules())
    scores = {n: torch.arange(convs[n].out_channels, 0, -1, dtype=torch.float32) for n in names}
    lc = cell.loop_config
    plan = pruning.select_filters(scores, lc.ratio, round_to=lc.round_to, min_keep=lc.min_keep)
    pruning.apply_plan(model, {k: [int(i) for i in v] for k, v in dict(plan).items()}, example)
    torch.manual_seed(cell.seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
    return model


def execute_cell(cfg: ExperimentConfig, cell: Cell, run_dir: str | Path, env: CellEnv) -> dict:
    """Run (or resume) ``cell`` in ``run_dir`` and measure latency; returns the engine's summary."""
    import pruning
    from pruning.loop import LoopConfig, run_loop

    run_dir = Path(run_dir)
    lc = cell.loop_config
    factory, model, target_map = _start_model(cfg, cell, env)
    build = cfg.build_path(cell.class_set, env.data_root, env.data)
    bs = lc.batch_size // lc.accum_steps
    train = open_split(cfg, build, "train", "train", bs, lc.seed, env, target_map)
    score = open_split(cfg, build, "train", "score", bs, lc.seed, env, target_map)
    val = open_split(cfg, build, "val", "val", bs, lc.seed, env, target_map)
    has_test = train.dataset.manifest["splits"].get("test", {}).get("num_samples")
    test = open_split(cfg, build, "test", "test", bs, lc.seed, env, target_map) if has_test else None
    size = int(cfg.data_options.get("image_size", 224))
    example = torch.zeros(1, 3, size, size)
    if cell.kind == "prune" and lc.ratio > 0 and lc.effective_score_classes is None and \
            pruning.get_criterion(lc.criterion).requires_classes:
        # class_specific: score on the images of the cell's class set, i.e. all of its labels
        labels = target_map.table if target_map is not None else range(len(_classes(build)))
        lc = LoopConfig.from_dict({**lc.to_dict(), "score_classes": list(labels)})
    extra = {}
    if cell.kind != "prune":
        full_cost = pruning.count_cost(model, (3, size, size))
        extra = {"params_full": int(full_cost["params"]), "macs_full": int(full_cost["macs"])}
        model = _reduce(model, cell, example)
        lc = LoopConfig.from_dict({**lc.to_dict(), "ratio": 0.0, "criterion": "none", "layers": "all"})
    summary = run_loop(model, lc, train, val, test, score, out_dir=run_dir, resume=True, options=_opts(env),
                       meta={"cell": cell.id, "cell_hash": cell.hash}, train_pass_images=train.dataset.num_samples,
                       batch_transform=_normalize())
    from pruning.loop.data import dist_info
    if dist_info()[0] == 0 and (run_dir / "summary.json").is_file() and not (run_dir / BENCH_FILE).is_file():
        _write_bench(run_dir, factory, summary, cell, cfg, env, extra, example)
    return summary


def _write_bench(run_dir: Path, factory, summary: dict, cell: Cell, cfg, env: CellEnv, extra: dict, example):
    """Latency of the starting architecture and of the final one on the run's device (random weights)."""
    import pruning

    device = env.device or ("cuda" if torch.cuda.is_available() else "cpu")
    bs = int(cfg.data_options.get("latency_batch_size", 32 if device.startswith("cuda") else 8))
    shape = tuple(int(s) for s in summary["input_size"])
    unpruned = factory()
    pruned = factory()
    plan = summary.get("plan") or {}
    if cell.kind != "prune":
        pruned = _reduce(pruned, cell, example)
    elif plan:
        pruning.apply_plan(pruned, {k: [int(i) for i in v] for k, v in plan.items()}, example)
    a = pruning.measure_latency(unpruned, shape, bs, device=device, warmup=5, repeats=20)
    b = pruning.measure_latency(pruned, shape, bs, device=device, warmup=5, repeats=20)
    doc = {"unpruned_ms": a["median_ms"], "pruned_ms": b["median_ms"], "speedup": a["median_ms"] / b["median_ms"],
           "batch_size": bs, "device": a["device"], "unpruned": a, "pruned": b, **extra}
    write_json(run_dir / BENCH_FILE, doc)
