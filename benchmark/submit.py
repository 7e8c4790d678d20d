"""``imagenet52p-bench submit``: one config's grid as ONE job array on submitit (SLURM, or this machine).

Task ``i`` of an array of ``N`` runs :func:`benchmark.runner.run_grid` ``(cfg, env, task_index=i,
num_tasks=N, resume=True)``: the cells of ``partition(expand_grid(cfg), i, N)`` that are not done, partial
ones continued from their last checkpoint.  The task is a :class:`GridTask`, a
``submitit.helpers.Checkpointable``: on preemption or timeout SLURM (and the local controller) sends the
job ``USR2``; submitit then calls :meth:`GridTask.checkpoint`, which resubmits the same task (same
``task_index``), and the rerun resumes.  A task killed outright (``SIGKILL``, the OOM killer, a lost node) is
not requeued by submitit: resubmit its share with ``--only-task I`` (same ``--tasks N``), nothing is lost but
the steps since the cell's last checkpoint.

Before anything is submitted the config and grid are checked as ``run`` checks them (the share split, the
config's record in the results folder, every not-done cell's model, layers, builds and weights): a bad config
submits nothing.  Every submission is appended to ``RESULTS/submitit/jobs.json`` (:data:`JOBS_FILE`: config,
executor, log folder, ``num_tasks`` and one ``{task_index, job_id}`` per task), which ``status`` reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import submitit

from .config import ExperimentConfig
from .locks import exclusive
from .grid import expand_grid, partition
from .resolve import CellEnv
from pruning.loop.rundir import write_json_atomic

SUBMIT_DIR = "submitit"  # RESULTS/submitit: the default log folder and the jobs record
JOBS_FILE = "jobs.json"
EXECUTORS = ("slurm", "local")


@dataclasses.dataclass(frozen=True)
class SubmitOptions:
    """Resources per array task.  ``time_min``: the job's time limit in minutes (``timeout_min``);
    ``array_parallelism``: at most this many tasks run at once (SLURM's ``%K``); ``logs``: submitit's folder
    (pickled tasks, stdout/stderr per task; default ``RESULTS/submitit``); ``only_tasks``: submit these task
    indices only (a resubmission of killed shares), default all ``0..tasks-1``."""
    executor: str = "slurm"
    tasks: int = 1
    gpus_per_task: int = 1
    cpus_per_task: int = 8
    time_min: int = 24 * 60
    partition: str | None = None
    mem_gb: float | None = None
    array_parallelism: int | None = None
    logs: str | None = None
    only_tasks: tuple[int, ...] = ()
    threads: int | None = None  # torch CPU threads per task (torch.set_num_threads), as `run --threads`


class GridTask(submitit.helpers.Checkpointable):
    """One share of a grid, as a picklable callable: ``GridTask(cfg, env, N)(i)`` runs task ``i`` of ``N``
    with ``resume=True`` and returns its ``{state: count}``."""

    def __init__(self, cfg: ExperimentConfig, env: CellEnv, num_tasks: int, threads: int | None = None,
                 nproc_per_node: int = 1) -> None:
        self.cfg, self.env, self.num_tasks, self.threads = cfg, env, num_tasks, threads
        self.nproc_per_node = nproc_per_node  # each cell under torchrun on the task's GPUs when > 1

    def __call__(self, task_index: int) -> dict[str, int]:
        from .runner import run_grid

        if self.threads is not None:
            import torch
            torch.set_num_threads(self.threads)
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return run_grid(self.cfg, self.env, task_index=task_index, num_tasks=self.num_tasks, resume=True,
                        nproc_per_node=self.nproc_per_node)

    def checkpoint(self, task_index: int) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on preemption / timeout: the same task again (its cells resume from their
        checkpoints, so nothing else needs saving)."""
        return submitit.helpers.DelayedSubmission(self, task_index)


def validate_submission(cfg: ExperimentConfig, env: CellEnv, num_tasks: int, nproc_per_node: int = 1) -> None:
    """The checks ``run`` makes before any work (:func:`benchmark.runner.preflight`), for every share at once;
    raises ValueError naming the problem.  Writes nothing but the results folder."""
    from .runner import check_out, preflight

    check_out(Path(env.results_dir))
    if num_tasks < 1:
        raise ValueError(f"--tasks {num_tasks}: give at least 1")
    grid = expand_grid(cfg)
    partition(grid, 0, num_tasks)  # validates the split
    if num_tasks > len(grid):
        raise ValueError(f"--tasks {num_tasks}: {cfg.source} has {len(grid)} cells, so {num_tasks - len(grid)} "
                         f"task(s) would have nothing to do; give --tasks {len(grid)} or fewer")
    preflight(cfg, env, grid, grid, nproc_per_node)


def make_executor(opts: SubmitOptions, folder: Path):
    """The submitit executor for ``opts`` (log folder ``folder``).  ``slurm`` without ``sbatch`` (or ``srun``)
    on PATH raises ValueError naming it."""
    if opts.executor not in EXECUTORS:
        raise ValueError(f"--executor {opts.executor!r}: choose one of {', '.join(EXECUTORS)}")
    if opts.executor == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=opts.time_min, gpus_per_node=opts.gpus_per_task, tasks_per_node=1,
                             nodes=1)
        return ex
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]  # submitit's SlurmExecutor needs both
    if missing:
        raise ValueError(f"--executor slurm: `{missing[0]}` not found on PATH (no SLURM client on this machine); "
                         "submit from the cluster's login node, or use --executor local to run the tasks here")
    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params = {"timeout_min": opts.time_min, "gpus_per_node": opts.gpus_per_task, "cpus_per_task": opts.cpus_per_task,
              "tasks_per_node": 1, "nodes": 1, "name": "imagenet52p-bench"}
    if opts.partition:
        params["slurm_partition"] = opts.partition
    if opts.mem_gb is not None:
        params["mem_gb"] = opts.mem_gb
    if opts.array_parallelism is not None:
        params["slurm_array_parallelism"] = opts.array_parallelism
    ex.update_parameters(**params)
    return ex


def local_gpus() -> list[int]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` (integer ids) when set, else
    ``range(torch.cuda.device_count())``; empty on a machine without CUDA."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is not None:
        ids = [x.strip() for x in raw.split(",") if x.strip()]
        if not all(x.isdigit() for x in ids):
            raise ValueError(f"CUDA_VISIBLE_DEVICES={raw!r} is not a list of GPU indices; --executor local needs "
                             "integer ids to give each task its own GPUs")
        return [int(x) for x in ids]
    import torch
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def local_gpu_slice(k: int, n_tasks: int, per_task: int) -> list[int]:
    """The GPUs of the ``k``-th of ``n_tasks`` local tasks: consecutive slices of :func:`local_gpus`; every
    local task starts at once, so they must not share (refused when there are too few)."""
    gpus = local_gpus()
    if n_tasks * per_task > len(gpus):
        raise ValueError(f"--executor local --tasks {n_tasks} --gpus-per-task {per_task} needs {n_tasks * per_task} "
                         f"GPUs, and this machine shows {len(gpus)} ({gpus}); local tasks all start at once: lower "
                         "--tasks or --gpus-per-task (or --gpus-per-task 0 on a CPU machine)")
    return gpus[k * per_task:(k + 1) * per_task]


def task_indices(opts: SubmitOptions) -> list[int]:
    """The task indices to submit: ``only_tasks`` (each checked against ``tasks``) or all of them."""
    if not opts.only_tasks:
        return list(range(opts.tasks))
    bad = [i for i in opts.only_tasks if not 0 <= i < opts.tasks]
    if bad:
        raise ValueError(f"--only-task {bad[0]}: task indices of --tasks {opts.tasks} are 0..{opts.tasks - 1}")
    return sorted(set(opts.only_tasks))


def submit_grid(cfg: ExperimentConfig, env: CellEnv, opts: SubmitOptions) -> list[dict]:
    """Validate, then submit one job array (one job per task index); returns ``[{task_index, job_id}]`` and
    appends the submission to ``RESULTS/submitit/jobs.json``."""
    out = Path(env.results_dir)
    indices = task_indices(opts)
    nproc = max(1, opts.gpus_per_task)  # a task's GPUs all work: its cells run under torchrun on them
    validate_submission(cfg, env, opts.tasks, nproc)
    folder = Path(opts.logs) if opts.logs else out / SUBMIT_DIR
    executor = make_executor(opts, folder)
    task = GridTask(cfg, env, opts.tasks, opts.threads, nproc)
    with _quiet_controllers(folder, opts.executor == "local"):
        if opts.executor == "local" and opts.gpus_per_task > 0 and local_gpus():
            jobs = []  # one job per task, each on its own GPUs (submitit would give every job GPU 0..G-1)
            for k, i in enumerate(indices):
                executor.update_parameters(visible_gpus=local_gpu_slice(k, len(indices), opts.gpus_per_task))
                jobs.append(executor.submit(task, i))
        else:
            jobs = executor.map_array(task, indices)
    rows = [{"task_index": i, "job_id": str(j.job_id)} for i, j in zip(indices, jobs)]
    record_jobs(out, {"config": cfg.name, "source": cfg.source, "executor": opts.executor,
                      "folder": str(folder.resolve()), "num_tasks": opts.tasks, "jobs": rows,
                      "time": datetime.datetime.now(datetime.timezone.utc).isoformat()})
    return rows


@contextlib.contextmanager
def _quiet_controllers(folder: Path, local: bool):
    """Local jobs' controllers inherit this process's stdout/stderr (submitit starts them so) and would write
    to the terminal after ``submit`` returned (and hold a caller's pipes open): while they start, fds 1 and 2
    point at ``folder/controller.log``."""
    if not local:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(folder / "controller.log", "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def jobs_path(out: str | Path) -> Path:
    return Path(out) / SUBMIT_DIR / JOBS_FILE


def read_jobs(out: str | Path) -> list[dict]:
    """Every submission recorded in ``out`` (oldest first; empty when none)."""
    path = jobs_path(out)
    if not path.is_file():
        return []
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("submissions"), list):
        raise ValueError(f"{path} is not a jobs record written by `imagenet52p-bench submit`; remove it")
    return doc["submissions"]


def record_jobs(out: Path, submission: dict) -> None:
    """Append ``submission`` to the jobs record, under an exclusive lock (concurrent submits keep both)."""
    path = jobs_path(out)
    with exclusive(path.parent / ".jobs.lock"):
        write_json_atomic(path, {"submissions": read_jobs(out) + [submission]})
