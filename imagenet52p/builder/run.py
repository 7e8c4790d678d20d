"""The build run (``build_dataset``, ``run_build``, ``BuildResult``): scan, assign samples to shards,
write shards in parallel (resuming), then the manifest last (docs/builder.md).

One build at a time writes an output directory: :func:`.lock.out_lock` holds ``OUT/.lock`` from the
first change to the manifest, and a second build is refused with the holder's pid.

Output directory states:

* empty or new: a fresh build.
* holding a build (``.build/build.json`` or ``manifest.json``) with the same identity
  (class set, layout, output-changing options, tool version): resumed.  ``manifest.json`` is
  removed first, leftover ``*.tmp`` files are deleted, and every planned shard whose record in
  ``.build/shards/`` has the same plan hash and whose file still has the recorded sha256 is kept;
  the rest are rebuilt.  The result equals an uninterrupted build byte for byte.
* holding another build, or other files: refused (BuildError) unless ``overwrite=True``, which
  deletes the build files (manifest, ``_info.json``, ``classes.json``, ``.build/``, shards) and
  leaves anything else alone.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ..classes import load_class_set
from ..format import SPLITS, file_sha256, write_json_atomic
from .assign import plan_sha256, plan_split, shard_prefix, split_sources
from .config import (SHARD_OPTIONS, BuildConfig, BuildError, build_identity, identity_digest, shard_layout,
                     shard_resume_hint)
from .layouts import scan_root
from .lock import LOCK, out_lock
from .manifest import make_info, make_manifest
from .progress import BuildProgress, init_worker, matches_record, reporter
from .sources import UNREADABLE
from .writer import ShardTask, write_shard

log = logging.getLogger(__name__)
STATE = ".build"
OUR_FILES = ("manifest.json", "_info.json", "classes.json")


@dataclass
class BuildResult:
    manifest: dict
    timings: dict[str, float] = field(default_factory=dict)  # split -> wall seconds
    reused: dict[str, int] = field(default_factory=dict)  # split -> shards kept from a previous run
    seconds: float = 0.0
    source_bytes: int = 0


def _existing_identity(out: Path) -> dict | None:
    state = out / STATE / "build.json"
    try:
        if state.is_file():
            ident = json.loads(state.read_text())
            return ident if isinstance(ident, dict) else None
        m = out / "manifest.json"
        if not m.is_file():
            return None
        man = json.loads(m.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # unreadable: treated as "not a build" (refused unless --overwrite)
    if not isinstance(man, dict):
        return None  # the wrong shape: likewise
    cs = man.get("class_set")
    return {"format": man.get("format"), "tool_version": man.get("tool_version"),
            "class_set_sha256": cs.get("sha256") if isinstance(cs, dict) else None, "layout": man.get("layout"),
            "options": man.get("options")}


def _ours_unstarted(p: Path) -> bool:
    """The lock file, or the state folder of a build killed before it recorded its identity."""
    return p.name == LOCK or (p.name == STATE and p.is_dir() and not (p / "build.json").exists())


def _clean(out: Path) -> None:
    for name in OUR_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / STATE, ignore_errors=True)
    for split in SPLITS:
        d = out / split
        if d.is_dir():
            for p in list(d.glob("*.tar")) + list(d.glob("*.tar.tmp")):
                p.unlink()


def _differences(old: dict, new: dict) -> tuple[list[str], str | None]:
    """What differs between two identities, and (when the shard layout differs) how to get the old one
    on the command line: ``(["seed: 0 -> 1"], None)``, ``(["shards: fixed shard sizes --shard-size 1000
    --eval-shard-size 250 -> automatic shard counts"], "pass --shard-size 1000 --eval-shard-size 250")``."""
    diffs = []
    for k in ("format", "tool_version", "class_set_sha256", "layout"):
        if old.get(k) != new.get(k):
            diffs.append(f"{k}: {old.get(k)} -> {new.get(k)}")
    oo, no = old.get("options") if isinstance(old.get("options"), dict) else {}, new["options"]
    keys = list(no) + [k for k in oo if k not in no]
    diffs += [f"{k}: {oo.get(k)} -> {no.get(k)}" for k in keys if k not in SHARD_OPTIONS and oo.get(k) != no.get(k)]
    hint = None
    if oo and shard_layout(oo) != shard_layout(no):
        diffs.append(f"shards: {shard_layout(oo)} -> {shard_layout(no)}")
        hint = shard_resume_hint(oo)
    elif any(oo.get(k) != no.get(k) for k in SHARD_OPTIONS):
        diffs += [f"{k}: {oo.get(k)} -> {no.get(k)}" for k in SHARD_OPTIONS if oo.get(k) != no.get(k)]
    return diffs, hint


def prepare_out(out: Path, identity: dict, overwrite: bool) -> dict[str, dict]:
    """Make ``out`` ready (see module docstring); return the kept shard records by path."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        old = _existing_identity(out)
        if old is None and any(not _ours_unstarted(p) for p in out.iterdir()):
            if not overwrite:
                raise BuildError(f"--out {out} is not empty and holds no imagenet52p build; choose a new "
                                 f"directory, or pass --overwrite (deletes only build files and shards there)")
            _clean(out)
        elif old is not None and old != identity:
            if not overwrite:
                diffs, hint = _differences(old, identity)
                if hint and len(diffs) > 1:
                    hint += " (and the other options above as they were)"
                resume = f"to resume it as it was, {hint}; or " if hint else ""
                raise BuildError(f"--out {out} holds a different build ({'; '.join(diffs)}); {resume}"
                                 f"choose another --out, or pass --overwrite to replace it")
            _clean(out)
        elif old is not None and overwrite:
            _clean(out)
        (out / "manifest.json").unlink(missing_ok=True)  # the build is incomplete from now on
        state = out / STATE
        state.mkdir(exist_ok=True)
        write_json_atomic(state / "build.json", identity)  # first: a build killed before it left only .build/
        (state / "shards").mkdir(exist_ok=True)
        for split in SPLITS:
            (out / split).mkdir(exist_ok=True)
            for tmp in (out / split).glob("*.tmp"):
                tmp.unlink()
    except OSError as exc:
        raise BuildError(f"cannot write to --out {out}: {exc.strerror or exc} ({exc.filename}); "
                         f"choose a writable directory") from None
    records = {}
    for p in sorted((out / STATE / "shards").glob("*.json")):
        try:
            rec = json.loads(p.read_text())
            records[rec["path"]] = rec
        except (json.JSONDecodeError, KeyError):
            p.unlink()  # a record cut short by a crash: its shard is rebuilt
    return records


def _record_name(rel: str) -> str:
    return rel.replace("/", "__") + ".json"


def run_task(args: tuple[ShardTask, dict | None], sink=None) -> dict:
    """Reuse the shard if ``record`` matches its plan and its file's checksum, else write it
    (reporting per image to ``sink``, or in a worker to the progress queue: :mod:`.progress`)."""
    task, record = args
    if matches_record(task, record, Path(task.out)) and file_sha256(Path(task.out) / task.rel) == record["sha256"]:
        return dict(record, reused=True)
    return dict(write_shard(task, reporter(task.rel, sink)), reused=False)


def _make_tasks(cfg: BuildConfig, cs, splits, digest: str, prefix: str) -> dict[str, list[ShardTask]]:
    tasks = {}
    for split in SPLITS:
        size = cfg.split_shard_size(split)
        tasks[split] = [ShardTask(split, j, rel, str(cfg.out_path), samples, plan_sha256(digest, rel, samples),
                                  cfg.resize, cfg.quality, cfg.decode_check, cfg.on_error)
                        for rel, j, samples in plan_split(split, splits[split], cs, size, cfg.seed, prefix,
                                                          cfg.shard_count())]
    return tasks


def _missing_classes(cfg: BuildConfig, cs, scan) -> list[str]:
    """The chosen classes without train images; BuildError unless ``cfg.allow_missing``."""
    counts = {w: 0 for w in cs.wnids}
    for s in scan.sources:
        if s.split == "train":
            counts[s.wnid] += 1
    missing = [w for w in cs.wnids if counts[w] == 0]
    if missing and not cfg.allow_missing:
        raise BuildError(f"{len(missing)} of {len(cs)} chosen classes have no train images under {cfg.root_path} "
                         f"(layout {scan.layout}): {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}; "
                         f"check --root and --classes, or pass --allow-missing to build without them")
    if missing:
        log.warning("building without %d missing classes: %s", len(missing), ", ".join(missing))
    return missing


def _run_tasks(cfg: BuildConfig, tasks: dict[str, list[ShardTask]], records: dict[str, dict], workers: int,
               result: BuildResult) -> dict[str, list[dict]]:
    """Write (or keep) every shard, split by split; return each split's records in shard order.
    Fills ``result``'s per-split timings and reuse counts and its source bytes."""
    out = cfg.out_path
    by_split: dict[str, list[dict]] = {}
    progress = BuildProgress(tasks, records, out, cfg.progress, workers)
    pool = (mp.get_context("spawn").Pool(workers, initializer=init_worker, initargs=(progress.queue,))
            if workers > 1 else None)
    try:
        for split in SPLITS:
            t0 = time.perf_counter()
            progress.bar.set_description(split)
            jobs = [(t, records.get(t.rel)) for t in tasks[split]]
            results = (pool.imap_unordered(run_task, jobs) if pool
                       else map(partial(run_task, sink=progress.sink()), jobs))
            recs = {}
            for rec in progress.follow(results):
                if rec["reused"] and cfg.on_error == "fail" and rec["skipped"]:
                    raise BuildError(f"kept shard {rec['path']} skipped {len(rec['skipped'])} bad image(s) in an "
                                     f"earlier --on-error skip run (first: {rec['skipped'][0]['source']}); "
                                     f"rerun with --overwrite to fail on them")
                recs[rec["index"]] = rec
                result.reused[split] = result.reused.get(split, 0) + rec["reused"]
                if not rec["reused"]:
                    write_json_atomic(out / STATE / "shards" / _record_name(rec["path"]),
                                      {k: v for k, v in rec.items() if k not in ("reused", "seconds")})
                    result.source_bytes += rec["source_bytes"]
                progress.shard_done(rec)
            by_split[split] = [recs[i] for i in sorted(recs)]
            result.timings[split] = time.perf_counter() - t0
    finally:
        if pool:
            pool.terminate()
            pool.join()
        progress.close()
    return by_split


def _write_manifest(cfg: BuildConfig, cs, scan, by_split: dict[str, list[dict]], missing: list[str],
                    prefix: str) -> dict:
    """Write ``classes.json``, ``_info.json`` and, last, ``manifest.json``; return the manifest."""
    out = cfg.out_path
    notes = {}
    if "val" in scan.notes:
        notes["test"] = scan.notes["val"]
    if cfg.val_per_class == 0:
        notes["val"] = "--val-per-class 0: no images held out"
    manifest = make_manifest(cs, scan.layout, cfg.identity_options(), by_split, notes, scan.skipped,
                             scan.ignored, missing)
    try:
        (out / "classes.json").write_text(cs.to_json(), encoding="utf-8")
        write_json_atomic(out / "_info.json", make_info(manifest, prefix))
        write_json_atomic(out / "manifest.json", manifest)  # last: its presence means "complete"
    except OSError as exc:
        (out / "manifest.json").unlink(missing_ok=True)
        raise BuildError(f"cannot write the manifest into --out {out}: {exc}") from None
    return manifest


def run_build(cfg: BuildConfig) -> BuildResult:
    """Build (or resume) ``cfg.out`` from ``cfg.root``; see :func:`build_dataset`."""
    t_start = time.perf_counter()
    cfg.validate()
    cs = load_class_set(cfg.classes)
    out = cfg.out_path
    scan = scan_root(cfg.root_path, cfg.layout, cs.wnids)
    unreadable = [e for e in scan.skipped if e["reason"].startswith(UNREADABLE)]
    if unreadable and cfg.on_error == "fail":
        e = unreadable[0]
        raise BuildError(f"bad image {e['source']} (under --root): {e['reason']}; "
                         f"rerun with --on-error skip to skip and list such files")
    missing = _missing_classes(cfg, cs, scan)
    identity = build_identity(cfg, cs.sha256, scan.layout)
    digest = identity_digest(identity)
    prefix = shard_prefix(cs)
    splits = split_sources(scan.sources, cs.wnids, cfg.val_per_class, cfg.seed)
    tasks = _make_tasks(cfg, cs, splits, digest, prefix)
    with out_lock(out):  # one build per --out at a time, from the first change to the manifest
        return _locked_build(cfg, cs, scan, missing, identity, tasks, prefix, t_start)


def _locked_build(cfg: BuildConfig, cs, scan, missing: list[str], identity: dict,
                  tasks: dict[str, list[ShardTask]], prefix: str, t_start: float) -> BuildResult:
    """Prepare ``cfg.out`` and write the shards and the manifest (the caller holds the lock)."""
    out = cfg.out_path
    records = prepare_out(out, identity, cfg.overwrite)
    planned = {t.rel for ts in tasks.values() for t in ts}
    for split in SPLITS:  # shards of an earlier plan that this plan does not have
        for p in (out / split).glob("*.tar"):
            if f"{split}/{p.name}" not in planned:
                p.unlink()
    result = BuildResult(manifest={})
    n_images = sum(len(t.samples) for ts in tasks.values() for t in ts)
    workers = min(cfg.num_workers(), max(1, sum(len(ts) for ts in tasks.values())))
    log.info("%s: %d images in %d shards, %d workers -> %s", cs.name, n_images,
             len(planned), workers, out)
    by_split = _run_tasks(cfg, tasks, records, workers, result)
    result.manifest = _write_manifest(cfg, cs, scan, by_split, missing, prefix)
    result.seconds = time.perf_counter() - t_start
    log.info("done in %.1fs", result.seconds)
    return result


def build_dataset(cfg: BuildConfig) -> dict:
    """Build webdataset shards from an ImageNet copy (docs/builder.md); return the manifest.

    Raises FileNotFoundError (no such root), ValueError (bad option or class list) and
    BuildError (no layout matched, missing classes, a refused --out, a failed write, or a bad image
    with ``on_error="fail"``).  No manifest is written unless every shard was.
    """
    return run_build(cfg).manifest
