"""Run ONE grid cell through the run path of :mod:`benchmark.run` (data opened -> head chosen -> model
built -> engine run), from its starting model.

What a cell runs, by kind (``benchmark.config.KINDS``):

* ``prune``: the starting model (see below), classifier adapted to the class set, then
  ``run_loop`` with the cell's LoopConfig (ratio 0 = the unpruned baseline).
* ``scratch``: the pruned architecture: a random-init model whose target layers (``layers``) keep
  the first ``n - floor(ratio * n)`` filters (``pruning.select_filters``, so the widths equal
  Algorithm 1's at that ratio), re-initialised (seeded), trained by ``run_loop`` with ratio 0 for
  ``q`` epochs.
* ``reduced``: a uniformly thinner network with the **same parameter count as the pruned
  architecture** (Crowley et al., 003): every prunable conv reduced by one ratio found by bisection
  (:func:`benchmark.architectures.match_reduced`), re-initialised and trained for ``q`` epochs.  ``latency.json`` records the
  unreduced network's params/MACs (``params_full``), the architecture's (``params_arch``) and, for
  ``reduced``, ``params_target`` (the pruned architecture's), ``params_matched`` and ``reduced_ratio``.

Scoring (``prune`` with ratio > 0 and a data criterion): the cell's ``score_data`` / ``score_head``
(:func:`benchmark.grid.resolve_scoring`) choose the build whose train split is scored and the
classifier of the scoring loss (:func:`_scoring`).

Starting model (``prune``): ``init="pretrained"``: ``[model].weights`` (a weight name or a state_dict file:
:mod:`pruning.weights`), or
with ``weights="pretrain"`` a model the runner trains from random init on the ``full`` build
(``[pretrain]`` options), shared by every cell in ``RESULTS/_pretrain/<hash>/`` under a file
lock; ``init="scratch"``: likewise but trained on the cell's own class set only.

Class subsets (``class_set`` other than ``full``, model trained on ``full``): the cell's ``head``
(:data:`benchmark.data.HEADS`, the same vocabulary as ``imagenet52p prune --head``) over the starting
model's classes, which are the ``full`` build's (ImageNet-1k's when the config has no ``full`` build):
``restrict`` keeps the rows of the final linear layer for the subset's classes (labels 0..k-1);
``full`` keeps every output and maps the subset's labels into the full label space; ``subset-logits``
trains on every output and evaluates over the subset's.  Subset classes are matched to the starting
model's classes by wnid.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .architectures import first_filters, match_reduced, reduce, target_names
from .data import LabelMap, open_data, open_split
from .grid import Cell
from .locks import exclusive
from .resolve import CellEnv, ResolvedCell, resolve_cell
from .results import LATENCY_FILE, latency_file
from .run import apply_head, run_engine

log = logging.getLogger(__name__)

__all__ = ["CellEnv", "execute_cell", "prepare_cell"]


def _pretrain_weights(rc: ResolvedCell, class_set: str, n_classes: int) -> Path:
    """Train (or reuse) a model from random init on ``class_set``; returns its ``model/`` directory."""
    from pruning.loop import LoopConfig, make_model, run_loop
    from imagenet52p import transforms as T

    cfg, env = rc.cfg, rc.env
    p = dict(cfg.pretrain)
    ident = {"model": cfg.model.get("name"), "class_set": class_set, "n": n_classes, "pretrain": p,
             "data": {k: cfg.data_options.get(k) for k in ("image_size", "resize", "train_scale_min")}}
    h = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    out = Path(env.results_dir) / "_pretrain" / f"{cfg.model.get('name')}-{class_set}-{h}"
    with exclusive(out.parent / f"{out.name}.lock"):  # concurrent tasks wait for the one that trains it
        if not (out / "summary.json").is_file():
            seed = int(p.get("seed", 0))
            lc = LoopConfig(criterion=None, ratio=0.0, q=float(p.get("epochs", 10)), lr=float(p.get("lr", 0.05)),
                            batch_size=int(p.get("batch_size", 64)), weight_decay=float(p.get("weight_decay", 5e-4)),
                            schedule=p.get("schedule", "cosine"), seed=seed, select="last")
            build = rc.build_of(class_set)
            log.info("pretraining %s on %s for %s epochs -> %s", cfg.model.get("name"), class_set, lc.q, out)
            model = make_model(cfg.model["name"], n_classes, seed=seed)
            train = open_split(build, "train", "train", lc.batch_size, seed, rc.sizes, rc.workers)
            val = open_split(build, "val", "val", lc.batch_size, seed, rc.sizes, rc.workers)
            run_loop(model, lc, train, val, None, out_dir=out, resume=True, options=env.options(),
                     meta={"pretrain": ident}, train_pass_images=train.dataset.num_samples,
                     batch_transform=T.Normalize())
    return out / "model"


@dataclass
class StartModel:
    """What a cell starts from: ``factory()`` builds the architecture (no weights), ``model`` holds the
    starting weights; ``head`` and ``model_classes`` (the classes of its classifier's rows, None = the
    cell build's own) say how :func:`benchmark.data.choose_head` maps the cell's data onto it."""

    factory: object
    model: object
    head: str = "full"
    model_classes: object = None


def _start_model(rc: ResolvedCell) -> StartModel:
    from pruning import load_pruned
    from pruning.loop import make_model

    cell = rc.cell
    name = cell.model
    rc.classes  # the cell's build is read (classes.json checked against its manifest) before any training
    if cell.kind != "prune" or cell.init == "scratch":
        n = len(rc.classes)
        fresh = lambda: make_model(name, n, seed=cell.seed)  # noqa: E731
        if cell.kind != "prune":
            return StartModel(fresh, fresh())
        return StartModel(fresh, load_pruned(fresh, _pretrain_weights(rc, cell.class_set, n)))
    n_full = rc.n_full
    base = lambda: make_model(name, n_full, seed=cell.seed)  # noqa: E731
    if rc.weights == "pretrain":
        model = load_pruned(base, _pretrain_weights(rc, "full", n_full))
    else:
        model = make_model(name, n_full, weights=rc.weights_source, seed=cell.seed)
    if cell.class_set == "full":
        return StartModel(base, model)
    if rc.full_classes is not None:
        return StartModel(base, model, cell.head, rc.full_classes)
    from imagenet52p.classes import imagenet1k_set
    return StartModel(base, model, cell.head, imagenet1k_set())


def _check_classifier_input_kept(model, cell: Cell, lc, example) -> None:
    """The full classifier is swapped in for scoring at every layer step, so pruning must leave the final
    linear layer's inputs alone (true of the paper's protocols); checked before the run, not hours into it."""
    import copy

    from pruning.loop.models import find_classifier

    pruned = first_filters(copy.deepcopy(model), target_names(model, lc.layers), lc.ratio, lc, example)
    name, before = find_classifier(model)
    after = find_classifier(pruned)[1]
    if after.in_features != before.in_features:
        raise ValueError(f"cell {cell.id}: pruning {lc.layers!r} shrinks the inputs of the classifier {name!r} "
                         f"({before.in_features} -> {after.in_features}), so the scoring loss cannot use the full "
                         "classifier (score_head = \"full\"): set score_head = \"cell\", or prune layers that "
                         "keep it (e.g. protocol resnet50-16 instead of all)")


def _scoring(rc: ResolvedCell, start: StartModel, data, model, full_head, example):
    """``(score loader, FullHead or None, score_classes or None)`` for ``cell.score_data`` /
    ``cell.score_head`` (:func:`benchmark.grid.resolve_scoring`): the train split (eval transform, batches
    of the global ``batch_size``) of the full build or of the cell's build, with labels in the label space
    of the classifier the scoring loss uses; ``score_classes`` (``class_specific``) are the labels of the
    cell's classes in that space."""
    import pruning

    cell, lc = rc.cell, rc.loop
    if cell.score_data is None:
        return None, None, None
    full_head = full_head if cell.score_head == "full" else None
    if full_head is not None:
        _check_classifier_input_kept(model, cell, lc, example)
    rows = data.head.model_rows
    if cell.score_data == "full" and cell.class_set != "full":
        # the full build's labels are the full classifier's (the model's own with head="full")
        build, target, full_space = rc.full_build, None, True
    else:
        # the labels of the full classifier: a restricted model's full head, or a model whose own classifier
        # is the full one (head "full" / "subset-logits" on a subset; even where the rows happen to be 0..k-1)
        own_space = start.model_classes is None or data.head.mode == "restrict"
        target = LabelMap(rows) if (full_head is not None or not own_space) else None
        build, full_space = rc.build, target is not None
    loader = open_split(build, "train", "score", lc.batch_size, lc.seed, rc.sizes, rc.workers, target)
    # score_classes (else classes) are labels of the cell's build; class_specific defaults to all of them
    chosen = lc.effective_score_classes
    if chosen is not None and not full_space:
        return loader, full_head, None  # already in the scoring labels: the engine applies them as they are
    if chosen is None and pruning.get_criterion(lc.criterion).requires_classes:
        chosen = range(len(rc.classes))
    if chosen is None:
        return loader, full_head, None
    if full_space:  # the scoring labels are the full classifier's: the cell's labels map through the rows
        if max(chosen) >= len(rows):
            raise ValueError(f"cell {cell.id}: score_classes/classes {list(chosen)} are not labels of the "
                             f"{cell.class_set!r} build")
        chosen = [rows[c] for c in chosen]
    return loader, full_head, [int(c) for c in chosen]


def prepare_cell(cfg, cell: Cell, env: CellEnv, rc: ResolvedCell | None = None) -> None:
    """Train the starting model the cell needs, if any (done in one process before ``torchrun``)."""
    rc = rc or resolve_cell(cfg, cell, env)
    if cell.kind != "prune":
        return
    rc.classes  # checked before any training, as in execute_cell
    if cell.init == "scratch":
        _pretrain_weights(rc, cell.class_set, len(rc.classes))
    elif rc.weights == "pretrain":
        _pretrain_weights(rc, "full", rc.n_full)


def execute_cell(cfg, cell: Cell, run_dir: str | Path, env: CellEnv, rc: ResolvedCell | None = None) -> dict:
    """Run (or resume) ``cell`` in ``run_dir`` and measure latency; returns the engine's summary.

    The run path of :mod:`benchmark.run`: the cell's build opened with its head over the starting
    model's classes (:func:`benchmark.data.open_data`), the head applied (:func:`benchmark.run.apply_head`),
    then the engine (:func:`benchmark.run.run_engine`).  ``batch_size`` is the global batch: under
    ``torchrun`` each rank's loaders yield ``batch_size / (accum_steps x world size)`` images
    (``LoopConfig.micro_batch``); scoring reads batches of ``batch_size`` on rank 0."""
    import pruning
    from pruning.loop import LoopConfig
    from pruning.loop.data import dist_info

    rc = rc or resolve_cell(cfg, cell, env)
    run_dir = Path(run_dir)
    lc = rc.loop
    start = _start_model(rc)
    data = open_data(rc.build, head=start.head, model_classes=start.model_classes, sizes=rc.sizes,
                     batch_size=lc.micro_batch(dist_info()[1]), num_workers=rc.workers, seed=lc.seed,
                     score_batch_size=lc.batch_size, score=False)  # its scoring data: _scoring
    # a cell's build is its class set: the head's `keep` filters nothing, and the cell's loop options
    # (its identity) stay as the grid gives them
    model, full_head = apply_head(start.model, data, full_head=cell.score_head == "full")
    size = rc.sizes.image_size
    example = torch.zeros(1, 3, size, size)
    score, score_head = None, None
    if cell.kind == "prune" and lc.ratio > 0:
        score, score_head, score_classes = _scoring(rc, start, data, model, full_head, example)
        if score_classes is not None:
            lc = LoopConfig.from_dict({**lc.to_dict(), "score_classes": score_classes})
    extra = {}
    if cell.kind != "prune":
        full_cost = pruning.count_cost(model, (3, size, size))
        extra = {"params_full": int(full_cost["params"]), "macs_full": int(full_cost["macs"])}
        if cell.kind == "reduced":
            extra.update(match_reduced(model, cell, example))
        model = reduce(model, cell, example, extra.get("reduced_ratio"))
        extra["params_arch"] = pruning.count_params(model)
        lc = LoopConfig.from_dict({**lc.to_dict(), "ratio": 0.0, "criterion": None, "layers": "all"})
    summary = run_engine(model, lc, data, run_dir, env.options(), resume=True,
                         meta={"cell": cell.id, "cell_hash": cell.hash}, score=score, score_head=score_head,
                         train_pass_images=data.train.dataset.num_samples)
    if dist_info()[0] == 0 and (run_dir / "summary.json").is_file() and latency_file(run_dir) is None:
        factory = lambda: apply_head(start.factory(), data)[0]  # noqa: E731
        _write_latency(run_dir, factory, summary, rc, extra, example)
    return summary


def _write_latency(run_dir: Path, factory, summary: dict, rc: ResolvedCell, extra: dict, example):
    """Latency of the starting architecture and of the final one on the run's device (random weights)."""
    import pruning
    from pruning.loop.rundir import write_json_atomic

    cell, env = rc.cell, rc.env
    device = env.device or ("cuda" if torch.cuda.is_available() else "cpu")
    bs = int(rc.cfg.data_options.get("latency_batch_size", 32 if device.startswith("cuda") else 8))
    shape = tuple(int(s) for s in summary["input_size"])
    unpruned = factory()
    pruned = factory()
    plan = summary.get("plan") or {}
    if cell.kind != "prune":
        pruned = reduce(pruned, cell, example, extra.get("reduced_ratio"))
    elif plan:
        pruning.apply_plan(pruned, {k: [int(i) for i in v] for k, v in plan.items()}, example)
    a = pruning.measure_latency(unpruned, shape, bs, device=device, warmup=5, repeats=20)
    b = pruning.measure_latency(pruned, shape, bs, device=device, warmup=5, repeats=20)
    doc = {"unpruned_ms": a["median_ms"], "pruned_ms": b["median_ms"], "speedup": a["median_ms"] / b["median_ms"],
           "batch_size": bs, "device": a["device"], "unpruned": a, "pruned": b, **extra}
    write_json_atomic(run_dir / LATENCY_FILE, doc)
