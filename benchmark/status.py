"""``imagenet52p-bench status RESULTS``: where a config's grid stands, and the jobs ``submit`` started for it.

A cell's status is its :func:`benchmark.results.cell_state` (``done`` / ``partial`` / ``failed`` /
``pending``), except ``running`` when a live process holds its lock now (:func:`benchmark.locks.holder`;
its pid is given).  The cells are those of the config's record in ``RESULTS/experiments``
(:func:`benchmark.runner.select_experiment`).  The jobs are those of ``RESULTS/submitit/jobs.json``
(:mod:`benchmark.submit`), each with its state: SLURM's (through submitit, i.e. ``sacct``; ``UNKNOWN`` where
it cannot be read), or for a local job ``RUNNING`` (its controller process is alive), ``FINISHED`` /
``FAILED`` (submitit's result file says so) or ``ENDED`` (gone without a result: killed).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .locks import holder
from .results import CELL_FILE, STATES, cell_state

STATUSES = (*STATES, "running")


def cell_statuses(results: str | Path, config: str | None = None) -> tuple[dict, list[dict]]:
    """``(record, [{id, state, pid}])`` for the cells of the config ``config`` recorded in ``results`` (the
    only one when None); a folder without a record lists every cell folder in it."""
    from .runner import select_experiment

    results = Path(results)
    if not results.is_dir():
        raise FileNotFoundError(f"results folder {results} not found; `imagenet52p-bench submit CONFIG --out "
                                f"{results}` (or `run`) writes it")
    record = select_experiment(results, config)
    ids = record.get("cell_ids") or sorted(p.parent.name for p in results.glob(f"*/{CELL_FILE}"))
    rows = []
    for cid in ids:
        pid = holder(results, cid)
        rows.append({"id": cid, "state": "running" if pid is not None else cell_state(results / cid), "pid": pid})
    return record, rows


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    try:  # a zombie (ended, not yet reaped) is not running
        return Path(f"/proc/{int(pid)}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def _slurm_jobs(submissions: list[dict]) -> dict:
    """``{job id: submitit.SlurmJob}`` of every SLURM job recorded, all made before any state is read:
    submitit's watcher then asks ``sacct`` once for all of them (making a job resets the watcher's clock, so
    making and reading one job at a time would run ``sacct`` once per job)."""
    import submitit

    if shutil.which("sacct") is None:
        return {}
    jobs = {}
    for sub in submissions:
        if sub.get("executor") == "slurm":
            for j in sub["jobs"]:
                try:
                    jobs[j["job_id"]] = submitit.SlurmJob(folder=Path(sub["folder"]), job_id=j["job_id"])
                except Exception:  # noqa: BLE001 - job_state reports it
                    pass
    return jobs


def job_state(submission: dict, job_id: str, slurm_job=None) -> str:
    """The state of one job of a recorded submission (module docstring); ``slurm_job``: its
    ``submitit.SlurmJob`` from :func:`_slurm_jobs`, when made already."""
    import submitit
    from submitit.core.utils import JobPaths, pickle_load

    folder = Path(submission["folder"])
    if submission.get("executor") == "slurm":
        if shutil.which("sacct") is None:
            return "UNKNOWN (no sacct on this machine)"
        try:
            return (slurm_job or submitit.SlurmJob(folder=folder, job_id=job_id)).state
        except Exception as e:  # noqa: BLE001 - sacct errors of every kind: shown, not fatal
            return f"UNKNOWN ({type(e).__name__})"
    result = JobPaths(folder, job_id, 0).result_pickle
    if result.is_file():
        try:
            outcome = pickle_load(result)[0]
        except Exception:  # noqa: BLE001 - a result file being written
            outcome = "?"
        return "FINISHED" if outcome == "success" else "FAILED"
    return "RUNNING" if _pid_alive(job_id) else "ENDED"


def grid_status(results: str | Path, config: str | None = None) -> dict:
    """``{config, cells: [...], counts: {status: n}, jobs: [{task_index, job_id, state, executor}]}``; the
    jobs are those submitted for this config (all when the folder has no record)."""
    from submitit.core.utils import JobPaths

    from .submit import read_jobs

    record, rows = cell_statuses(results, config)
    counts = {s: 0 for s in STATUSES}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    jobs = []
    subs = [sub for sub in read_jobs(results) if not record or sub.get("config") == record.get("name")]
    slurm = _slurm_jobs(subs)
    for sub in subs:
        for j in sub["jobs"]:
            jobs.append({"task_index": j["task_index"], "num_tasks": sub["num_tasks"], "job_id": j["job_id"],
                         "executor": sub["executor"], "state": job_state(sub, j["job_id"], slurm.get(j["job_id"])),
                         "log": str(JobPaths(Path(sub["folder"]), j["job_id"], 0).stdout)})
    return {"config": record.get("name"), "results": str(results), "cells": rows, "counts": counts, "jobs": jobs}
