"""The run directory: everything a run writes, the checks that guard it, and the reads that resume it.

Files (written by rank 0; :class:`RunDir`):

``config.json``          ``{"run_hash", "config_hash", "config": LoopConfig.to_dict(), "meta", "world_size"}``,
                         written when the run starts or resumes
``events.jsonl``         one JSON line (sorted keys) per event: ``baseline``, ``layer_step``, ``epoch``,
                         ``test``; cut back to the checkpoint's count on resume
``checkpoints/last.pt``  the latest checkpoint (below); ``checkpoints/<tag>.pt`` too with
                         ``RunOptions.keep_step_checkpoints``
``model/``               ``plan.json`` + ``state_dict.pt`` of the selected final model (``pruning.save_pruned``)
``timing.json``          wall-clock timings, the only content that is not a function of config, data and seed
``summary.json``         written last: its presence means the run is complete

A checkpoint is a plain dict that ``torch.load(weights_only=True)`` reads (:func:`save_checkpoint`):

``format``       1
``run_hash``     the run's hash (a checkpoint of another run is refused)
``position``     :class:`~pruning.loop.state.Position` as a dict ``{"stage", "step", "chunk", "pass_index"}``
``plans``        JSON text: the list of per-step plans ``{conv: kept indices}``, in order
``model``        ``state_dict`` of the (pruned) model
``optimizer``    optimizer ``state_dict`` or None (a new optimizer starts each phase)
``best_state``   CPU ``state_dict`` of the selected final epoch while it is not the current weights, or None
``rng``          every RNG (:mod:`pruning.loop.rng`)
``events``       number of lines of ``events.jsonl`` written so far
``state``        JSON text: the :class:`~pruning.loop.state.Record`
``timing``       JSON text: the :class:`~pruning.loop.state.Timing`

Every file is replaced atomically (temporary file + ``os.replace``), so a crash leaves the previous
version or the new one, never a torn file; :func:`write_json_atomic` is the library's JSON writer.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

import torch

from ..files import read_torch_file, writing
from ..plan import PLAN_FILE, WEIGHTS_FILE, save_pruned
from .rng import rng_state
from .state import LoopState, Position, Record, Timing

log = logging.getLogger(__name__)

FORMAT = 1
MODEL_DIR = "model"


def _replace_atomically(path: Path, write: Callable[[Path], object], one_writer: bool = False) -> None:
    """``write`` a temporary file beside ``path``, then move it over ``path``.  The temporary file is named
    after the pid, so concurrent writers of one path never share it; with ``one_writer`` (checkpoints: rank 0
    alone writes them) it has a fixed name, so a job killed mid-write leaves no model-sized orphan behind:
    the next save overwrites it."""
    tmp = path.with_name(f"{path.name}.tmp" if one_writer else f"{path.name}.{os.getpid()}.tmp")
    with writing(path):  # a full disk or an unwritable folder: a WriteError naming the file
        write(tmp)
        os.replace(tmp, path)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` to ``path`` as JSON (1-space indent, sorted keys, final newline), atomically."""
    text = json.dumps(obj, indent=1, sort_keys=True) + "\n"
    _replace_atomically(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def code_version() -> str:
    """What results record as the code that made them: ``<version>+g<commit>`` of the installed distribution
    (``imagenet52p``, from its package metadata), with ``.dirty`` when its packages' files differ from the
    commit; the bare version outside a git checkout, ``"unknown"`` without the metadata."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    try:
        base = version("imagenet52p")
    except PackageNotFoundError:
        base = "unknown"
    here = Path(__file__).resolve().parents[2]  # the checkout holding this package (editable installs)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *_DIST_PACKAGES],
                               cwd=here, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return base
    if not commit or not (here / "pruning").is_dir():
        return base
    return f"{base}+g{commit[:10]}" + (".dirty" if dirty else "")


#: The packages the ``imagenet52p`` distribution ships (paths for git, not imports).
_DIST_PACKAGES = ("imagenet52p", "pruning", "benchmark")


def state_dict_cpu(model: torch.nn.Module) -> dict:
    """A detached CPU copy of ``model.state_dict()`` (safe to keep while training continues)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def optimizer_state_cpu(opt: torch.optim.Optimizer) -> dict:
    """A CPU copy of ``opt.state_dict()``, tensors detached."""

    def conv(o):
        if torch.is_tensor(o):
            return o.detach().to("cpu", copy=True)
        if isinstance(o, dict):
            return {k: conv(v) for k, v in o.items()}
        if isinstance(o, list):
            return [conv(v) for v in o]
        return o

    return conv(opt.state_dict())


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Atomically write ``payload`` (plus ``format``) to ``path``."""
    path = Path(path)
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    _replace_atomically(path, lambda tmp: torch.save({"format": FORMAT, **payload}, tmp), one_writer=True)
    return path


#: The keys an engine checkpoint must hold (:func:`checkpoint_payload`).
ENGINE_KEYS = ("position", "plans", "model", "rng", "events", "state")


def load_checkpoint(path: str | Path, run_hash: str | None = None, required: tuple = ENGINE_KEYS) -> dict:
    """Read a checkpoint with ``weights_only=True``; check format, run hash and the ``required`` keys (the
    engine's by default; the detector trainer's checkpoints hold others)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; start the run without resume")
    restart = f"delete {path} to restart the run from the beginning"
    ck = read_torch_file(path, "checkpoint", restart)
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        found = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise ValueError(f"checkpoint {path} has format {found!r}, this code reads {FORMAT}: it is not a "
                         f"checkpoint of this engine; {restart}")
    if run_hash is not None and ck.get("run_hash") != run_hash:
        raise ValueError(f"checkpoint {path} belongs to run {ck.get('run_hash')}, not {run_hash}: the "
                         f"configuration changed; use the --out (out_dir) of that run to continue it, or {restart} "
                         f"with this configuration")
    missing = [k for k in required if k not in ck]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}: it is damaged; {restart}")
    return ck


def checkpoint_payload(run_hash: str, state: LoopState, model: torch.nn.Module) -> dict:
    """The checkpoint of ``state`` and ``model`` (module docstring), RNGs as they are now."""
    return {
        "run_hash": run_hash, "position": state.position.to_dict(),
        "plans": json.dumps(state.plans), "model": state_dict_cpu(model),
        "optimizer": None if state.optimizer is None else optimizer_state_cpu(state.optimizer),
        "best_state": state.best_state, "rng": rng_state(),
        "events": state.events_written, "state": state.record.to_json(), "timing": state.timing.to_json(),
    }


def state_from_checkpoint(ck: dict) -> LoopState:
    """The :class:`LoopState` a checkpoint holds (the model weights and RNGs are the caller's to restore)."""
    return LoopState(position=Position.from_dict(ck["position"]), record=Record.from_json(ck["state"]),
                     timing=Timing.from_json(ck.get("timing")), plans=json.loads(ck["plans"]),
                     best_state=ck.get("best_state"), optimizer_state=ck.get("optimizer"),
                     events_written=int(ck["events"]))


#: The run directory's lock file (:meth:`RunDir.lock`); not part of the run's results.
LOCK_FILE = ".lock"


class RunDir:
    """The run directory ``path`` of one run (module docstring); ``path`` None writes nothing.  Only the
    main rank writes; with ``world > 1`` every rank waits at the points where the others must see a file."""

    def __init__(self, path: str | os.PathLike | None, is_main: bool = True, world: int = 1):
        self.path = None if path is None else Path(path)
        self.is_main, self.world = is_main, world

    @property
    def writes(self) -> bool:
        return self.path is not None and self.is_main

    def _barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def completed_summary(self, resume: bool) -> dict | None:
        """The stored summary of a complete run (refused without ``resume``), None when not complete."""
        if self.path is None or not (self.path / "summary.json").exists():
            return None
        if not resume:
            raise ValueError(f"{self.path} holds a complete run (summary.json); use a new directory")
        log.info("%s is complete; returning its summary", self.path)
        return json.loads((self.path / "summary.json").read_text())

    def prepare(self, run_hash: str, config, meta: dict, resume: bool, required: tuple = ENGINE_KEYS) -> dict | None:
        """Check the directory, write ``config.json`` (and an empty ``events.jsonl`` for a new run); return the
        checkpoint to resume from (:func:`load_checkpoint` with ``required``), or None.  A directory of another
        run, or of this run without ``resume``, is refused.  The engine's and the detector trainer's runs
        (:mod:`pruning.detection.train`) both go through it."""
        if self.path is None:
            if resume:
                raise ValueError("resume=True needs out_dir")
            return None
        record = {"run_hash": run_hash, "config_hash": config.hash(), "config": config.to_dict(),
                  "meta": meta, "world_size": self.world}
        last = self.path / "checkpoints" / "last.pt"
        existing = self.path / "config.json"
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"out_dir {self.path} is a file, not a directory; give a new --out directory")
        self.lock()  # one process per run directory, from here to the end of the run
        if existing.exists():
            old = self._read_config(existing)
            if self.failed_start():
                log.warning("%s holds only a failed start of run %s (config.json, no progress); replacing it "
                            "with run %s", self.path, old.get("run_hash"), run_hash)
            elif old.get("run_hash") != run_hash:
                raise ValueError(f"{existing} is of run {old.get('run_hash')}, this run is {run_hash} (another "
                                 f"configuration, meta or data), and {self.path} holds its progress (events, "
                                 f"checkpoints); use another --out directory, or delete {self.path} to start this "
                                 "one there")
            elif not resume:
                raise ValueError(f"{self.path} already holds this run; pass resume=True (--resume) to continue "
                                 f"it, or use a new directory")
        self._barrier()  # every rank has checked the directory before rank 0 writes
        if self.is_main:
            with writing(self.path):
                self.path.mkdir(parents=True, exist_ok=True)
            write_json_atomic(existing, record)
            if not last.exists():
                with writing(self.path / "events.jsonl"):
                    (self.path / "events.jsonl").write_text("")
        self._barrier()
        if resume and last.exists():
            return load_checkpoint(last, run_hash, required)
        return None

    def lock(self) -> None:
        """Hold an exclusive ``flock`` on ``OUT/.lock`` (holding this pid) for the rest of the run, so a second
        process on the same folder (a second command, or the same one) is refused naming the holder, instead
        of taking a run that is still in its baseline for a failed start.  The kernel releases it when the
        process dies; the file stays (removing it could let two processes lock two files of one path)."""
        if not self.writes or getattr(self, "_lock", None) is not None:
            return
        import fcntl

        with writing(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        f = open(self.path / LOCK_FILE, "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            raise ValueError(f"{self.path} is in use by another run (pid {pid}, lock {self.path / LOCK_FILE}); "
                             "wait for it to finish, or use another --out directory") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock = f

    def release(self) -> None:
        """Give up the folder's lock (the end of the run, or its failure)."""
        f = getattr(self, "_lock", None)
        if f is not None:
            self._lock = None
            f.close()

    @staticmethod
    def _read_config(file: Path) -> dict:
        try:
            old = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{file} is not valid JSON ({exc}): the folder was damaged; delete {file.parent} "
                             "or use another --out directory") from None
        if not isinstance(old, dict):
            raise ValueError(f"{file} holds a {type(old).__name__}, not a run's config; delete {file.parent} or "
                             "use another --out directory")
        return old

    def failed_start(self) -> bool:
        """Whether the directory holds only what a start that failed before its first checkpoint leaves:
        ``config.json`` and an empty (or no) ``events.jsonl``; no checkpoint, model or summary."""
        ev = self.path / "events.jsonl"
        if ev.exists() and ev.stat().st_size > 0:
            return False
        ck = self.path / "checkpoints"
        if ck.exists() and any(ck.iterdir()):
            return False
        return not any((self.path / f).exists() for f in (MODEL_DIR, "summary.json", "timing.json"))

    def append_event(self, event: dict) -> None:
        if self.writes:
            ev = self.path / "events.jsonl"
            with writing(ev), open(ev, "a") as f:
                f.write(json.dumps(event, sort_keys=True) + "\n")

    def truncate_events(self, count: int) -> None:
        """Cut ``events.jsonl`` back to the ``count`` lines a checkpoint saw (fewer is refused: modified)."""
        if not self.writes:
            return
        ev = self.path / "events.jsonl"
        lines = ev.read_text().splitlines(keepends=True) if ev.exists() else []
        if len(lines) < count:
            raise ValueError(f"{ev} has {len(lines)} lines but the checkpoint expects "
                             f"{count}; the run directory was modified")
        with writing(ev):
            ev.write_text("".join(lines[:count]))

    def save_checkpoint(self, run_hash: str, state: LoopState, model: torch.nn.Module, tag: str | None = None,
                        keep_tag: bool = False) -> None:
        """``checkpoints/last.pt`` (and ``checkpoints/<tag>.pt`` with ``keep_tag``); every rank waits for it."""
        if self.path is None:
            return
        if self.is_main:
            payload = checkpoint_payload(run_hash, state, model)
            save_checkpoint(self.path / "checkpoints" / "last.pt", payload)
            if tag and keep_tag:
                save_checkpoint(self.path / "checkpoints" / f"{tag}.pt", payload)
        self._barrier()

    def model_files(self) -> dict | None:
        """Where :meth:`save_model` puts the model, relative to the directory (None without one)."""
        if self.path is None:
            return None
        return {"plan": f"{MODEL_DIR}/{PLAN_FILE}", "weights": f"{MODEL_DIR}/{WEIGHTS_FILE}"}

    def save_model(self, model: torch.nn.Module) -> None:
        """``model/plan.json`` (the cumulative plan) + ``model/state_dict.pt`` via ``pruning.save_pruned``;
        reload with ``pruning.load_pruned(model_fn, directory / "model")``."""
        if self.writes:
            save_pruned(model, None, self.path / MODEL_DIR)

    def write_results(self, timing: dict, summary: dict) -> None:
        """``timing.json``, then ``summary.json`` (last: it marks the run complete)."""
        if self.writes:
            write_json_atomic(self.path / "timing.json", timing)
            write_json_atomic(self.path / "summary.json", summary)
