"""Run ONE cell: the single place that calls the Algorithm 1 engine (``pruning.loop.run_loop``)
and opens builds (``imagenet52p.ImageNet52P``).

What a cell runs, by kind (``benchmark.config.KINDS``):

* ``prune``: the starting model (see below), classifier adapted to the class set, then
  ``run_loop`` with the cell's LoopConfig (ratio 0 = the unpruned baseline).
* ``scratch``: the pruned architecture: a random-init model whose target layers (``layers``) keep
  the first ``n - floor(ratio * n)`` filters (``pruning.select_filters``, so the widths equal
  Algorithm 1's at that ratio), re-initialised (seeded), trained by ``run_loop`` with ratio 0 for
  ``q`` epochs.
* ``reduced``: a uniformly thinner network with the **same parameter count as the pruned
  architecture** (Crowley et al., 003): every prunable conv reduced by one ratio found by bisection
  (:func:`match_reduced`), re-initialised and trained for ``q`` epochs.  ``bench.json`` records the
  unreduced network's params/MACs (``params_full``), the architecture's (``params_arch``) and, for
  ``reduced``, ``params_target`` (the pruned architecture's), ``params_matched`` and ``reduced_ratio``.

Scoring (``prune`` with ratio > 0 and a data criterion): the cell's ``score_data`` / ``score_head``
(:func:`benchmark.grid.resolve_scoring`) choose the build whose train split is scored and the
classifier of the scoring loss (:func:`_scoring`).

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


@dataclass
class StartModel:
    """What a cell starts from: ``factory()`` builds the architecture (no weights), ``model`` holds the
    starting weights (classifier adapted to the class set), ``target_map`` maps the cell build's labels
    into the model's label space (``head="full"`` on a subset), ``full_rows[j]`` is the full build's class
    of the cell build's label ``j`` (None on the full set or without a full classifier), and ``full_head``
    the starting model's full classifier before it was restricted (for ``score_head="full"``)."""

    factory: object
    model: object
    target_map: object = None
    full_rows: list | None = None
    full_head: object = None


def _start_model(cfg: ExperimentConfig, cell: Cell, env: CellEnv) -> StartModel:
    from pruning import load_pruned
    from pruning.loop import FullHead, make_model, restrict_classifier

    name = cell.model
    build = cfg.build_path(cell.class_set, env.data_root, env.data)
    sub = _classes(build)
    if cell.kind != "prune" or cell.init == "scratch":
        n = len(sub)
        fresh = lambda: make_model(name, n, seed=cell.seed)  # noqa: E731
        if cell.kind != "prune":
            return StartModel(fresh, fresh())
        return StartModel(fresh, load_pruned(fresh, _pretrain_weights(cfg, env, cell.class_set, n)))
    full_classes = _classes(cfg.build_path("full", env.data_root, env.data)) if "full" in cfg.data else None
    n_full = int(cfg.model.get("num_classes") or (len(full_classes) if full_classes else len(sub)))
    weights = cfg.weights_path(env.data_root, env.weights)
    base = lambda: make_model(name, n_full, seed=cell.seed)  # noqa: E731
    if weights == "pretrain":
        model = load_pruned(base, _pretrain_weights(cfg, env, "full", n_full))
    else:
        model = make_model(name, n_full, weights=weights, seed=cell.seed)
    if cell.class_set == "full":
        return StartModel(base, model)
    if full_classes is not None:
        pos = full_classes.wnid_to_idx
        missing = [w for w in sub.wnids if w not in pos]
        if missing:
            raise ValueError(f"classes {missing[:5]} of build {build} are not in the full build; "
                             "a subset must be drawn from the full set")
        idx = [pos[w] for w in sub.wnids]
    else:
        idx = list(sub.imagenet1k_indices)
    if cell.head == "restrict":
        full_head = FullHead.of(model, idx) if cell.score_head == "full" else None  # only what scoring uses
        restrict_classifier(model, idx)
        return StartModel(lambda: restrict_classifier(base(), idx), model, None, idx, full_head)
    return StartModel(base, model, LabelMap(idx), idx)


def _check_classifier_input_kept(model, cell: Cell, lc, example) -> None:
    """The full classifier is swapped in for scoring at every layer step, so pruning must leave the final
    linear layer's inputs alone (true of the paper's protocols); checked before the run, not hours into it."""
    import copy

    from pruning.loop.models import find_classifier

    pruned = _first_filters(copy.deepcopy(model), _target_names(model, lc.layers), lc.ratio, lc, example)
    name, before = find_classifier(model)
    after = find_classifier(pruned)[1]
    if after.in_features != before.in_features:
        raise ValueError(f"cell {cell.id}: pruning {lc.layers!r} shrinks the inputs of the classifier {name!r} "
                         f"({before.in_features} -> {after.in_features}), so the scoring loss cannot use the full "
                         "classifier (score_head = \"full\"): set score_head = \"cell\", or prune layers that "
                         "keep it (e.g. protocol resnet50-16 instead of all)")


def _scoring(cfg: ExperimentConfig, cell: Cell, env: CellEnv, start: StartModel, lc, example):
    """``(score loader, FullHead or None, score_classes or None)`` for ``cell.score_data`` /
    ``cell.score_head`` (:func:`benchmark.grid.resolve_scoring`): the train split (eval transform, batches
    of the global ``batch_size``) of the full build or of the cell's build, with labels in the label space
    of the classifier the scoring loss uses; ``score_classes`` (``class_specific``) are the labels of the
    cell's classes in that space."""
    import pruning

    if cell.score_data is None:
        return None, None, None
    full_head = start.full_head if cell.score_head == "full" else None
    if full_head is not None:
        _check_classifier_input_kept(start.model, cell, lc, example)
    own = cfg.build_path(cell.class_set, env.data_root, env.data)
    if cell.score_data == "full" and cell.class_set != "full":
        # the full build's labels are the full classifier's (the model's own with head="full")
        build, target, full_space = cfg.build_path("full", env.data_root, env.data), None, True
    else:
        target = LabelMap(start.full_rows) if (full_head is not None or start.target_map is not None) else None
        build, full_space = own, target is not None
    loader = open_split(cfg, build, "train", "score", lc.batch_size, lc.seed, env, target)
    # score_classes (else classes) are labels of the cell's build; class_specific defaults to all of them
    chosen = lc.effective_score_classes
    if chosen is not None and not full_space:
        return loader, full_head, None  # already in the scoring labels: the engine applies them as they are
    if chosen is None and pruning.get_criterion(lc.criterion).requires_classes:
        chosen = range(len(_classes(own)))
    if chosen is None:
        return loader, full_head, None
    if full_space:  # the scoring labels are the full classifier's: the cell's labels map through full_rows
        if start.full_rows is None or max(chosen) >= len(start.full_rows):
            raise ValueError(f"cell {cell.id}: score_classes/classes {list(chosen)} are not labels of the "
                             f"{cell.class_set!r} build")
        chosen = [start.full_rows[c] for c in chosen]
    return loader, full_head, [int(c) for c in chosen]


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


def _first_plan(model, names, ratio: float, lc) -> dict:
    """``{conv: kept indices}`` keeping the first ``n - floor(ratio n)`` filters of each conv in ``names``
    (Algorithm 1's widths at ``ratio``: ``pruning.select_filters`` on decreasing scores)."""
    import pruning

    convs = dict(model.named_modules())
    scores = {n: torch.arange(convs[n].out_channels, 0, -1, dtype=torch.float32) for n in names}
    plan = pruning.select_filters(scores, ratio, round_to=lc.round_to, min_keep=lc.min_keep)
    return {k: [int(i) for i in v] for k, v in dict(plan).items()}


def _first_filters(model, names, ratio: float, lc, example):
    """:func:`_first_plan` applied to ``model``, in place (returns it)."""
    import pruning

    pruning.apply_plan(model, _first_plan(model, names, ratio, lc), example)
    return model


def _target_names(model, layers) -> list:
    import pruning
    return pruning.prunable_layers(model, layers) if isinstance(layers, str) else list(layers)


def match_reduced(model, cell: Cell, example, iterations: int = 40) -> dict:
    """The uniform ratio ``r`` for a ``reduced`` cell (Crowley et al., 003): every prunable conv (protocol
    ``all``) reduced by the same ``r``, chosen by bisection so that the network's parameter count is the
    closest to that of the *pruned architecture* of the same cell (``layers`` at ``ratio``: what Algorithm 1
    and the ``scratch`` kind leave).  Returns ``{"reduced_ratio", "params_target", "params_matched"}``;
    ``model`` (unpruned) is not modified.  The count is a non-increasing step function of ``r``; the
    network is built (and its parameters counted) once per distinct set of widths the bisection visits."""
    import copy

    from pruning import count_params

    lc = cell.loop_config
    target = count_params(_first_filters(copy.deepcopy(model), _target_names(model, lc.layers), lc.ratio, lc, example))
    every = _target_names(model, "all")
    by_widths: dict[tuple, int] = {}

    def widths(r: float) -> tuple:
        return tuple(len(v) for v in _first_plan(model, every, r, lc).values())

    def params_at(r: float) -> int:
        w = widths(r)
        if w not in by_widths:
            by_widths[w] = count_params(_first_filters(copy.deepcopy(model), every, r, lc, example))
        return by_widths[w]

    lo, hi = 0.0, 0.999
    if params_at(hi) >= target:
        lo = hi
    for _ in range(iterations):
        if lo == hi or params_at(lo) == target or widths(lo) == widths(hi):
            break
        mid = (lo + hi) / 2
        if params_at(mid) > target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda r: (abs(params_at(r) - target), params_at(r)))
    return {"reduced_ratio": best, "params_target": target, "params_matched": params_at(best)}


def _reduce(model, cell: Cell, example, ratio: float | None = None):
    """The architecture of a ``scratch``/``reduced`` cell, re-initialised (seeded): ``scratch`` keeps the
    first filters of the cell's ``layers`` at its ``ratio``; ``reduced`` reduces every prunable conv by
    ``ratio`` (:func:`match_reduced`'s, for the same parameter count as the pruned architecture)."""
    lc = cell.loop_config
    if cell.kind == "reduced":
        _first_filters(model, _target_names(model, "all"), lc.ratio if ratio is None else ratio, lc, example)
    else:
        _first_filters(model, _target_names(model, lc.layers), lc.ratio, lc, example)
    torch.manual_seed(cell.seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
    return model


def execute_cell(cfg: ExperimentConfig, cell: Cell, run_dir: str | Path, env: CellEnv) -> dict:
    """Run (or resume) ``cell`` in ``run_dir`` and measure latency; returns the engine's summary.

    ``batch_size`` is the global batch: under ``torchrun`` each rank's loaders yield
    ``batch_size / (accum_steps x world size)`` images (``LoopConfig.micro_batch``); scoring reads
    batches of ``batch_size`` on rank 0."""
    import pruning
    from pruning.loop import LoopConfig, run_loop
    from pruning.loop.data import dist_info

    run_dir = Path(run_dir)
    lc = cell.loop_config
    start = _start_model(cfg, cell, env)
    model, target_map = start.model, start.target_map
    build = cfg.build_path(cell.class_set, env.data_root, env.data)
    bs = lc.micro_batch(dist_info()[1])
    train = open_split(cfg, build, "train", "train", bs, lc.seed, env, target_map)
    val = open_split(cfg, build, "val", "val", bs, lc.seed, env, target_map)
    has_test = train.dataset.manifest["splits"].get("test", {}).get("num_samples")
    test = open_split(cfg, build, "test", "test", bs, lc.seed, env, target_map) if has_test else None
    size = int(cfg.data_options.get("image_size", 224))
    example = torch.zeros(1, 3, size, size)
    score, score_head = None, None
    if cell.kind == "prune" and lc.ratio > 0:
        score, score_head, score_classes = _scoring(cfg, cell, env, start, lc, example)
        if score_classes is not None:
            lc = LoopConfig.from_dict({**lc.to_dict(), "score_classes": score_classes})
    extra = {}
    if cell.kind != "prune":
        full_cost = pruning.count_cost(model, (3, size, size))
        extra = {"params_full": int(full_cost["params"]), "macs_full": int(full_cost["macs"])}
        if cell.kind == "reduced":
            extra.update(match_reduced(model, cell, example))
        model = _reduce(model, cell, example, extra.get("reduced_ratio"))
        extra["params_arch"] = pruning.count_params(model)
        lc = LoopConfig.from_dict({**lc.to_dict(), "ratio": 0.0, "criterion": "none", "layers": "all"})
    summary = run_loop(model, lc, train, val, test, score, out_dir=run_dir, resume=True, options=_opts(env),
                       meta={"cell": cell.id, "cell_hash": cell.hash}, train_pass_images=train.dataset.num_samples,
                       batch_transform=_normalize(), score_head=score_head)
    if dist_info()[0] == 0 and (run_dir / "summary.json").is_file() and not (run_dir / BENCH_FILE).is_file():
        _write_bench(run_dir, start.factory, summary, cell, cfg, env, extra, example)
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
        pruned = _reduce(pruned, cell, example, extra.get("reduced_ratio"))
    elif plan:
        pruning.apply_plan(pruned, {k: [int(i) for i in v] for k, v in plan.items()}, example)
    a = pruning.measure_latency(unpruned, shape, bs, device=device, warmup=5, repeats=20)
    b = pruning.measure_latency(pruned, shape, bs, device=device, warmup=5, repeats=20)
    doc = {"unpruned_ms": a["median_ms"], "pruned_ms": b["median_ms"], "speedup": a["median_ms"] / b["median_ms"],
           "batch_size": bs, "device": a["device"], "unpruned": a, "pruned": b, **extra}
    write_json(run_dir / BENCH_FILE, doc)
