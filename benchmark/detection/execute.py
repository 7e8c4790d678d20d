"""Run ONE detection cell (a :class:`~benchmark.detection.grid.DetCell`) in its run directory.

``plugin``: the upstream cell's final model (``<upstream results>/<cell id>/model``, a pruned or unpruned
classifier, any number of classes) -> :func:`pruning.detection.io.detector_from_run` (fc6's input follows the
kept conv5_3 channels) -> :func:`pruning.detection.train.train_detector` on VOC ``[voc] train`` (minus the
seeded ``val_images`` held out for model selection) in ``RUN/train/``.

``direct``: the detector its source cell trained (``RESULTS/<source id>/train/detector``, which must be done)
-> :func:`pruning.detection.prune.prune_detector` (Algorithm 1 over the backbone convs, last to first) in
``RUN/prune/``.

Then both: the selected detector evaluated once on ``[voc] test`` (VOC07 11-point and VOC2010+ mAP, per-class
AP), ``summary.json`` written (the cell is done), and the speed record ``latency.json``: fps at batch 1 over the
whole pipeline on the first ``[fps] images`` test images, interleaved in the same run with the trained unpruned
detector of the cell's plug-in baseline (run first in a task), and GFLOPs of both at a fixed input and proposal
count (:mod:`pruning.detection.speed`).  While that baseline is not done (it sits in another task's share),
``latency.json`` is not written: the cell is done, its fps is missing (``—``), and the next ``run`` times it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from ..results import LATENCY_FILE, SUMMARY_FILE, cell_state
from imagenet52p.voc import VOC_CLASSES

from .config import DetectionConfig, prune_config, train_config
from .grid import DetCell
from .upstream import upstream_model_dir

log = logging.getLogger(__name__)
NUM_CLASSES = 21  # the 20 VOC classes + background


@dataclass(frozen=True)
class DetResolved:
    """A detection cell on this machine: its VOC root, upstream results folder and workers."""

    cfg: DetectionConfig
    cell: DetCell
    env: object  # benchmark.resolve.CellEnv

    @functools.cached_property
    def voc_root(self) -> Path:
        return self.cfg.voc_root(self.env.data_root, self.env.data)

    @functools.cached_property
    def upstream_results(self) -> Path:
        return self.cfg.upstream_results(self.cell.upstream, getattr(self.env, "upstream", None))

    @property
    def workers(self) -> int:
        w = self.env.num_workers
        return int(w if w is not None else self.cfg.voc_option("num_workers"))

    def provenance(self, version: str) -> dict:
        doc = self.cell.to_dict()
        doc.update({"code_version": version, "device": self.env.device or "auto", "experiment": self.cfg.name,
                    "voc_root": str(self.voc_root), "upstream_results": str(self.upstream_results)})
        return doc


@functools.lru_cache(maxsize=8)
def voc_images(root: Path, spec: str) -> tuple:
    """The images of set ``spec`` under ``root`` (:func:`imagenet52p.voc.load_images`), read once per process."""
    from imagenet52p.voc import load_images
    return tuple(load_images(root, spec))


def voc_splits(rc: DetResolved) -> dict:
    """``{"train", "val", "test"}`` image lists (``imagenet52p.voc``): ``[voc] train`` minus its seeded
    ``val_images`` held-out subset (val: model selection only), and ``[voc] test``."""
    from imagenet52p.voc import split_val

    cfg = rc.cfg
    train = list(voc_images(rc.voc_root, cfg.voc_option("train")))
    test = list(voc_images(rc.voc_root, cfg.voc_option("test")))
    val = []
    n_val = int(cfg.voc_option("val_images"))
    if n_val > 0:
        train, val = split_val(train, n_val, int(cfg.voc_option("val_seed")))
    return {"train": train, "val": val, "test": test}


def _datasets(rc: DetResolved, splits: dict) -> dict:
    from imagenet52p.voc import VOCDetectionDataset

    seed = rc.cell.seed
    return {"train": VOCDetectionDataset(splits["train"], train=True, seed=seed),
            "val": VOCDetectionDataset(splits["val"], train=False) if splits["val"] else None,
            "test": VOCDetectionDataset(splits["test"], train=False)}


def _train_plugin(rc: DetResolved, data: dict, run_dir: Path):
    import torch

    from pruning.detection.io import detector_from_run, load_detector
    from pruning.detection.train import train_detector
    from pruning.loop.rundir import RunDir

    cfg, cell, env = rc.cfg, rc.cell, rc.env
    model_dir = upstream_model_dir(cfg, cell.upstream, cell.up_id, rc.upstream_results)
    out = run_dir / "train"
    done = RunDir(out).completed_summary(True)
    if done is not None:  # a done cell re-entered (its fps is timed now): its detector, without rebuilding its input
        return load_detector(out / "detector"), {"train": done, "plan": _plan(out / "detector")}
    torch.manual_seed(cell.seed)  # the new RPN and box predictor: a function of the cell, not of the run order
    detector = detector_from_run(model_dir, cfg.arch, num_classes=NUM_CLASSES, preset=cfg.preset,
                                 **cfg.preset_overrides)
    summary = train_detector(detector, data["train"], train_config({**cfg.train, "seed": cell.seed}), out,
                             val_data=data["val"], device=env.device, resume=True, progress=env.progress,
                             stop_after=env.stop_after, num_workers=rc.workers, class_names=VOC_CLASSES,
                             meta={"cell": cell.id, "cell_hash": cell.hash, "upstream_hash": cell.up_hash})
    return load_detector(out / "detector"), {"train": summary, "plan": _plan(out / "detector")}


def _prune_direct(rc: DetResolved, data: dict, run_dir: Path):
    from pruning.detection.io import load_detector
    from pruning.detection.prune import prune_detector
    from pruning.loop.rundir import RunDir

    cfg, cell, env = rc.cfg, rc.cell, rc.env
    src = Path(env.results_dir) / cell.source_id
    if cell_state(src) != "done":
        raise ValueError(f"the source cell {cell.source_id} of {cell.id} is {cell_state(src)} in {env.results_dir}: "
                         f"its trained detector ({src / 'train' / 'detector'}) is what this cell prunes; run the "
                         f"config again once it is done (`imagenet52p-bench run {cfg.source} --out {env.results_dir}`)")
    out = run_dir / "prune"
    done = RunDir(out).completed_summary(True)
    if done is not None:  # a done cell re-entered: its pruned detector, without loading its source's
        return load_detector(out / "detector"), {"prune": done, "plan": _plan(out / "detector")}
    detector = load_detector(src / "train" / "detector")
    pc = prune_config(cfg.prune, cell.criterion, cell.ratio, cell.seed)
    summary = prune_detector(detector, pc, data["train"], out, score_data=data["train"], val_data=data["val"],
                             device=env.device, resume=True, progress=env.progress, stop_after=env.stop_after,
                             num_workers=rc.workers, class_names=VOC_CLASSES,
                             meta={"cell": cell.id, "cell_hash": cell.hash, "source": cell.source})
    return load_detector(out / "detector"), {"prune": summary, "plan": _plan(out / "detector")}


def _plan(detector_dir: Path) -> dict:
    from pruning import read_plan
    return read_plan(detector_dir)["plan"]


def execute_detection_cell(cfg, cell: DetCell, run_dir, env, rc: DetResolved | None = None) -> dict:
    """Run (or resume) ``cell`` in ``run_dir`` (module docstring); returns its summary."""
    from pruning.detection.evaluate import evaluate_detector
    from pruning.loop.rundir import write_json_atomic

    rc = rc or DetResolved(cfg, cell, env)
    run_dir = Path(run_dir)
    splits = voc_splits(rc)
    data = _datasets(rc, splits)
    if cell.kind == "plugin":
        detector, record = _train_plugin(rc, data, run_dir)
    else:
        detector, record = _prune_direct(rc, data, run_dir)
    if not (run_dir / SUMMARY_FILE).is_file():
        test = evaluate_detector(detector, data["test"], device=env.device, progress=env.progress,
                                 num_workers=rc.workers, class_names=VOC_CLASSES)
        summary = {"task": "detection", "kind": cell.kind, "cell": cell.id, "cell_hash": cell.hash,
                   "test": test, "images": {k: len(v) for k, v in splits.items()}, **record}
        write_json_atomic(run_dir / SUMMARY_FILE, summary)
    from ..results import _read_json
    summary = _read_json(run_dir / SUMMARY_FILE)
    if not (run_dir / LATENCY_FILE).is_file():
        speed = measure_speed(rc, detector, data["test"])
        if speed is not None:
            write_json_atomic(run_dir / LATENCY_FILE, speed)
    return summary


def measure_speed(rc: DetResolved, detector, test_data) -> dict:
    """fps of ``detector`` and of its reference (the trained unpruned detector, :func:`_reference`),
    interleaved, on the first ``[fps] images`` test images at batch 1, in the evaluation's precision, and GFLOPs
    of both at the preset's fixed input (``min_size x max_size``) and test proposal count; None while the
    reference is not done."""
    import torch

    from pruning.detection.speed import detector_cost, measure_fps, speedup_report

    fps = rc.cfg.fps
    device = rc.env.device or ("cuda" if torch.cuda.is_available() else "cpu")
    found = _reference(rc)
    if found is None:
        log.warning("cell %s: its fps reference %s is not done yet; the next `run` times it", rc.cell.id,
                    rc.cell.reference_id)
        return None
    base, reference = found
    n = min(int(fps.get("images", 50)), len(test_data))
    images = [test_data[i][0] for i in range(n)]
    # the precision of the evaluation (bf16 autocast on CUDA, boxes in fp32; fp32 on CPU): fps and mAP of one pipeline
    dtype = "bfloat16" if torch.device(device).type == "cuda" else None
    timed = measure_fps({"unpruned": base, "pruned": detector}, images, device=device, dtype=dtype,
                        warmup=int(fps.get("warmup", 5)), repeats=int(fps.get("repeats", 1)))
    p = detector.preset
    proposals = int(p.rpn_post_nms_top_n_test)  # the preset's test-time proposal count
    size = (p.min_size, p.max_size)  # the preset's largest resized input: the same for every detector
    cost = {"unpruned": detector_cost(base, size, proposals), "pruned": detector_cost(detector, size, proposals)}
    speedup = speedup_report({**cost["unpruned"], **timed["models"]["unpruned"]},
                             {**cost["pruned"], **timed["models"]["pruned"]})
    return {"fps": timed, "cost": cost, "speedup": speedup, "reference": reference}


def _reference(rc: DetResolved):
    """``(the unpruned detector timed with this one, what it is)``: the trained plug-in baseline of this cell
    (itself, for a baseline; the detector a direct cell pruned), or None while it is not done (a random-weights
    detector would post-process another number of boxes, so it is never the reference)."""
    from pruning.detection.io import load_detector

    ref = rc.cell.reference_id
    path = Path(rc.env.results_dir) / ref / "train" / "detector"
    if cell_state(path.parent.parent) == "done" and path.is_dir():
        return load_detector(path), f"trained unpruned detector of {ref}"
    return None
