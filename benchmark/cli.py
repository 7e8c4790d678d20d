"""``imagenet52p-bench``: run experiment grids, show their cells, print leaderboards.

    imagenet52p-bench run CONFIG [--out RESULTS] [--device cuda] [--task-index i --num-tasks n] [--resume]
                      [--nproc-per-node N] [--data NAME=PATH] [--data-root DIR] [--weights NAME|FILE] [--workers N]
    imagenet52p-bench estimate CONFIG [--train-ips N --eval-ips N]
    imagenet52p-bench list CONFIG [--out RESULTS] [--num-tasks n] [--json] [--data NAME=PATH] [--data-root DIR]
    imagenet52p-bench leaderboard RESULTS [--config NAME] [--format md|csv|overall-csv|html|json] [--output FILE]
    imagenet52p-bench clean CONFIG [--out RESULTS] [--stale] [--dry-run]
    imagenet52p-bench configs

CONFIG is a TOML file or the name of a shipped config (``imagenet52p-bench configs`` lists them).
``-h``/``--help``, ``--version``; ``-v`` before or after the subcommand.  What each command does on bad
input: docs/benchmark.md, section Errors.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from .report import FORMATS, render



def _os_message(e: OSError) -> str:
    from imagenet52p.cli_errors import os_message  # the data CLIs' one wording of a system error
    return os_message(e)


def _clean_errors(fn):
    """Bad input ends with one message (naming the file, option or key) and exit status 2, not a traceback:
    missing or unreadable files and folders (OSError, with the path and the errno text), files that are not
    valid JSON, TOML or UTF-8, records missing a key, bad options.  Anything else is a bug and stays visible."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except FileNotFoundError as e:
            raise click.UsageError(str(e) if e.filename is None else _os_message(e)) from None
        except OSError as e:
            raise click.UsageError(_os_message(e)) from None
        except json.JSONDecodeError as e:
            raise click.UsageError(f"a file is not valid JSON: {e}") from None
        except UnicodeDecodeError as e:
            raise click.UsageError(f"a file is not valid UTF-8 text: {e}") from None
        except KeyError as e:
            raise click.UsageError(f"a record is missing the key {e}") from None
        except ValueError as e:  # tomllib.TOMLDecodeError too (load_config names the file)
            raise click.UsageError(str(e)) from None
    return wrapper


def _set_verbose(ctx, param, value) -> None:
    if value:
        logging.getLogger().setLevel(logging.INFO)


def _verbose(fn):
    """``-v`` after the subcommand too (``imagenet52p-bench run CONFIG -v``)."""
    return click.option("-v", "--verbose", is_flag=True, expose_value=False, is_eager=True, callback=_set_verbose,
                        help="Log progress of every cell.")(fn)


def _workers(fn):
    """``--workers`` (and ``--num-workers``, its older name, hidden)."""
    fn = click.option("--num-workers", "num_workers_old", type=int, default=None, hidden=True)(fn)
    return click.option("--workers", "workers", type=int, default=None,
                        help="DataLoader workers (default: [data].num_workers).")(fn)


def _parse_data(values, option: str = "--data") -> dict:
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            eg = "--data imagenet52p=/data/in52p" if option == "--data" else f"{option} imagenet1k=results/table1_vgg16"
            raise click.BadParameter(f"{v!r} is not NAME=PATH (e.g. {eg})", param_hint=option)
        out[name] = path
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="imagenet52p", prog_name="imagenet52p-bench")
@click.option("-v", "--verbose", is_flag=True, help="Log progress of every cell.")
def main(verbose: bool) -> None:
    """Benchmark runner for class-specific filter pruning (the paper's experiments and new ones)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@main.command("configs")
def configs_cmd() -> None:
    """List the shipped experiment configs."""
    from .config import list_configs, load_config
    for name in list_configs():
        cfg = load_config(name)
        click.echo(f"{name:28s} {cfg.description[:90]}")


def _results_dir(cfg, out):
    return Path(out) if out else Path("results") / cfg.name


@main.command("run")
@click.argument("config")
@click.option("--out", "out", default=None, help="Results folder (default: results/<config name>).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available).")
@click.option("--task-index", type=int, default=0, envvar="SLURM_ARRAY_TASK_ID", show_default=True,
              help="This job's share of the grid (0-based); defaults to $SLURM_ARRAY_TASK_ID.")
@click.option("--num-tasks", type=int, default=1, envvar="SLURM_ARRAY_TASK_COUNT", show_default=True,
              help="Number of independent jobs the grid is split across; defaults to $SLURM_ARRAY_TASK_COUNT.")
@click.option("--resume", is_flag=True, help="Continue interrupted cells from their last checkpoint.")
@click.option("--data", "data", multiple=True, help="NAME=PATH: the build for class set NAME (overrides [data]).")
@click.option("--data-root", default=None, help="Base of relative [data] paths (default: $IMAGENET52P_DATA or .).")
@click.option("--weights", default=None, help="Override [model].weights (a weight name such as IMAGENET1K_V1 "
              "or DEFAULT, a state_dict file, 'pretrain' or 'none').")
@click.option("--upstream", "upstream", multiple=True,
              help="NAME=RESULTS: detection configs: the results folder of [upstream.NAME] (its backbones).")
@click.option("--nproc-per-node", type=int, default=1, show_default=True,
              help="GPUs per cell: >1 runs each cell under torchrun --standalone.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (torch.set_num_threads).")
@click.option("--progress/--no-progress", default=True, show_default=True)
@_workers
@_verbose
@_clean_errors
def run_cmd(config, out, device, task_index, num_tasks, resume, data, data_root, weights, upstream, workers,
            num_workers_old, nproc_per_node, threads, progress) -> None:
    """Run every cell of CONFIG (this task's share) that is not complete."""
    if threads is not None:
        import torch
        torch.set_num_threads(threads)
    from .config import load_config
    from .resolve import CellEnv
    from .runner import run_grid

    cfg = load_config(config)
    env = CellEnv(results_dir=str(_results_dir(cfg, out)), data_root=data_root, data=_parse_data(data),
                  weights=weights, device=device, upstream=_parse_data(upstream, "--upstream"),
                  num_workers=workers if workers is not None else num_workers_old, progress=progress)
    counts = run_grid(cfg, env, task_index, num_tasks, resume, nproc_per_node)
    click.echo(f"{cfg.name} task {task_index}/{num_tasks}: " + ", ".join(f"{v} {k}" for k, v in counts.items())
               + f" -> {env.results_dir}")
    if counts.get("running"):
        click.echo(f"{counts['running']} cell(s) were running in another process and were skipped "
                   "(rerun once it has finished)", err=True)
    report = Path(env.results_dir) / "report.html"
    click.echo(f"leaderboard: imagenet52p-bench leaderboard {env.results_dir}  (report: imagenet52p-bench "
               f"leaderboard {env.results_dir} --format html -o {report})")
    if counts["failed"]:
        click.echo(f"{counts['failed']} cell(s) failed; see error.json in their folders or "
                   f"`imagenet52p-bench leaderboard {env.results_dir}`", err=True)
        sys.exit(1)


@main.command("estimate")
@click.argument("config")
@click.option("--train-ips", type=float, default=None, help="Training images/s per GPU (default: assumed 2500).")
@click.option("--eval-ips", type=float, default=None, help="Evaluation images/s per GPU (default: assumed 4000).")
@click.option("--data", "data", multiple=True, help="NAME=PATH: the build for class set NAME (overrides [data]).")
@click.option("--data-root", default=None, help="Base of relative [data] paths (default: $IMAGENET52P_DATA or .).")
@_verbose
@_clean_errors
def estimate_cmd(config, train_ips, eval_ips, data, data_root) -> None:
    """Expected cost of CONFIG: images trained/evaluated and GPU-hours (formula in benchmark.estimate).
    Split sizes are counted from the builds when they are found, else assumed (printed per class set)."""
    from .config import load_config
    from .estimate import estimate

    cfg = load_config(config)
    detection = cfg.task == "detection"  # its own assumed throughputs (benchmark.detection.estimate)
    e = estimate(cfg, train_ips, eval_ips, data_root=data_root, data=_parse_data(data))
    for name, s in e["sizes"].items():
        if detection:
            click.echo(f"  VOC {name}: {s['train']} images ({s['source']})")
        else:
            click.echo(f"  {name}: {s['train']} train, {s['val']} val, {s['test']} test images ({s['source']})")
    click.echo(f"{config}: {e['cells']} cells, {e['train_images'] / 1e6:.1f}M images trained, "
               f"{e['eval_images'] / 1e6:.1f}M evaluated -> {e['gpu_hours']:.1f} GPU-hours "
               f"({e['per_cell_gpu_hours']:.2f} per cell) at {e['train_ips']:g} train / {e['eval_ips']:g} eval img/s")


@main.command("list")
@click.argument("config")
@click.option("--out", "out", default=None, help="Results folder to read states from.")
@click.option("--num-tasks", type=int, default=1, show_default=True, help="Show which task owns each cell.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (an invalid cell's reasons in 'problems').")
@click.option("--data", "data", multiple=True, help="NAME=PATH: the build for class set NAME (overrides [data]).")
@click.option("--data-root", default=None, help="Base of relative [data] paths (default: $IMAGENET52P_DATA or .).")
@click.option("--weights", default=None, help="Override [model].weights (a weight name such as IMAGENET1K_V1 "
              "or DEFAULT, a state_dict file, 'pretrain' or 'none').")
@click.option("--upstream", "upstream", multiple=True,
              help="NAME=RESULTS: detection configs: the results folder of [upstream.NAME] (its backbones).")
@_verbose
@_clean_errors
def list_cmd(config, out, num_tasks, as_json, data, data_root, weights, upstream) -> None:
    """Show the cells of CONFIG and their state (done / partial / failed / pending / invalid: cannot run)."""
    from .config import load_config
    from .resolve import CellEnv
    from .runner import grid_states

    cfg = load_config(config)
    results = _results_dir(cfg, out)
    env = CellEnv(results_dir=str(results), data_root=data_root, data=_parse_data(data), weights=weights,
                  upstream=_parse_data(upstream, "--upstream"))
    rows = grid_states(cfg, results, num_tasks, env)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        why = f"  ({'; '.join(r['problems'])})" if r.get("problems") else ""
        click.echo(f"{r['state']:8s} task {r['task']:<3d} {r['id']}{why}")
    states = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    click.echo(f"{len(rows)} cells: " + ", ".join(f"{v} {k}" for k, v in sorted(states.items())))


@main.command("leaderboard")
@click.argument("results", type=click.Path(file_okay=False))
@click.option("--config", "config", default=None,
              help="The config whose cells to show (a name recorded in RESULTS/experiments/); required when "
                   "RESULTS holds several configs.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True,
              help="csv: one row per table entry; overall-csv: the overall ranking, one row per criterion.")
@click.option("--output", "-o", default=None, help="Write to this file instead of stdout.")
@click.option("--note", default=None, help="A banner shown above the tables (e.g. 'synthetic data').")
@_verbose
@_clean_errors
def leaderboard_cmd(results, config, fmt, output, note) -> None:
    """Aggregate the runs in RESULTS into the leaderboard (of one config: --config NAME, or the only one
    recorded there)."""
    from .results import CELL_FILE

    if not Path(results).is_dir():
        raise click.UsageError(f"results folder {results} not found; run `imagenet52p-bench run CONFIG --out {results}`")
    if not any(Path(results).glob(f"*/{CELL_FILE}")):
        raise click.UsageError(f"no runs found in {results}; `imagenet52p-bench run CONFIG --out {results}` "
                               "writes them")
    if output:
        _check_output(Path(output))
    text = render(results, fmt, note, config=config)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)


def _check_output(path: Path) -> None:
    """Refuse an output file that cannot be written, before any work; create missing parent folders only
    below an existing folder that is not the filesystem root, and say so."""
    if path.is_dir():
        raise click.UsageError(f"-o {path} is a folder; give a file name (e.g. {path / 'report.html'})")
    parent = path.parent if str(path.parent) else Path(".")
    missing = []
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise click.UsageError(f"-o {path}: {parent} is not a folder")
    if missing and parent.resolve() == Path(parent.resolve().anchor):
        raise click.UsageError(f"-o {path}: {missing[-1]} does not exist and would be created at the filesystem "
                               "root; create it first, or write elsewhere")
    if missing:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise click.UsageError(f"-o {path}: cannot create {e.filename or path.parent}: {e.strerror or e}") from None
        click.echo(f"created folder {path.parent} (for -o {path})", err=True)
    try:  # an existing target is opened for append (content kept); a new one is probed with a temporary file
        if path.exists():  # beside it, so a refusal later leaves no empty file behind
            with open(path, "a", encoding="utf-8"):
                pass
        else:
            import tempfile
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=True):
                pass
    except OSError as e:
        raise click.UsageError(f"-o {path} cannot be written: {e.strerror or e}") from None


@main.command("clean")
@click.argument("config")
@click.option("--out", "out", default=None, help="Results folder (default: results/<config name>).")
@click.option("--stale", is_flag=True, help="Also remove run directories (not done) in no recorded config's grid.")
@click.option("--dry-run", is_flag=True, help="Print what would be removed; remove nothing.")
@_verbose
@_clean_errors
def clean_cmd(config, out, stale, dry_run) -> None:
    """Remove CONFIG's failed and partial cells from RESULTS (never a done cell); see benchmark.clean."""
    from .clean import clean
    from .config import load_config

    cfg = load_config(config)
    results = _results_dir(cfg, out)
    found = clean(cfg, results, stale=stale, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for d, why in found:
        click.echo(f"{verb} {d}: {why}")
    click.echo(f"{len(found)} cell folder(s) {verb} in {results}" if found else f"nothing to clean in {results}")



@main.command("submit")
@click.argument("config")
@click.option("--out", "out", default=None, help="Results folder (default: results/<config name>).")
@click.option("--tasks", type=int, default=1, show_default=True, help="Array tasks the grid is split across.")
@click.option("--executor", type=click.Choice(["slurm", "local"]), default="slurm", show_default=True,
              help="slurm: sbatch one job array; local: run the tasks on this machine (submitit.LocalExecutor).")
@click.option("--gpus-per-task", type=int, default=1, show_default=True)
@click.option("--cpus-per-task", type=int, default=8, show_default=True)
@click.option("--time", "time_min", type=int, default=24 * 60, show_default=True,
              help="Time limit per task in minutes; on timeout the task is requeued and resumes.")
@click.option("--partition", default=None, help="SLURM partition.")
@click.option("--mem-gb", type=float, default=None, help="Memory per task (GB).")
@click.option("--slurm-array-parallelism", "parallelism", type=int, default=None,
              help="At most this many tasks at once.")
@click.option("--logs", default=None, help="submitit's log folder (default: RESULTS/submitit).")
@click.option("--only-task", "only_tasks", type=int, multiple=True,
              help="Submit only this task index of --tasks N (resubmit a killed task); repeatable.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available).")
@click.option("--data", "data", multiple=True, help="NAME=PATH: the build for class set NAME (overrides [data]).")
@click.option("--data-root", default=None, help="Base of relative [data] paths (default: $IMAGENET52P_DATA or .).")
@click.option("--upstream", "upstream", multiple=True,
              help="NAME=RESULTS: detection configs: the results folder of [upstream.NAME] (its backbones).")
@click.option("--weights", default=None, help="Override [model].weights (a weight name such as IMAGENET1K_V1 "
              "or DEFAULT, a state_dict file, 'pretrain' or 'none').")
@click.option("--threads", type=int, default=None, help="torch CPU threads per task (torch.set_num_threads).")
@_workers
@_verbose
@_clean_errors
def submit_cmd(config, out, tasks, executor, gpus_per_task, cpus_per_task, time_min, partition, mem_gb,
               parallelism, logs, only_tasks, device, data, data_root, upstream, weights, threads, workers,
               num_workers_old) -> None:
    """Submit CONFIG's grid as one job array of --tasks shares (each runs `run --resume` on its share)."""
    from .config import default_data_root, load_config
    from .resolve import CellEnv
    from .submit import SubmitOptions, submit_grid

    cfg = load_config(config)
    results = _results_dir(cfg, out).resolve()
    env = CellEnv(results_dir=str(results), data_root=str(Path(default_data_root(data_root)).resolve()),
                  data={k: str(Path(v).resolve()) for k, v in _parse_data(data).items()}, device=device,
                  upstream={k: str(Path(v).resolve()) for k, v in _parse_data(upstream, "--upstream").items()},
                  progress=False, num_workers=workers if workers is not None else num_workers_old,
                  weights=str(Path(weights).resolve()) if weights and Path(weights).exists() else weights)
    opts = SubmitOptions(executor=executor, tasks=tasks, gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task,
                         time_min=time_min, partition=partition, mem_gb=mem_gb, array_parallelism=parallelism,
                         logs=logs, only_tasks=tuple(only_tasks), threads=threads)
    rows = submit_grid(cfg, env, opts)
    click.echo(f"{cfg.name}: submitted {len(rows)} task(s) of {tasks} ({executor}):")
    for r in rows:
        click.echo(f"  task {r['task_index']}: job {r['job_id']}")
    click.echo(f"results: {results}")
    click.echo(f"follow it: imagenet52p-bench status {results} --config {cfg.name}")


@main.command("status")
@click.argument("results")
@click.option("--config", "config", default=None, help="The config whose cells to show (a name recorded in "
              "RESULTS/experiments/); required when RESULTS holds several configs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_verbose
@_clean_errors
def status_cmd(results, config, as_json) -> None:
    """Cells of RESULTS (done / partial / failed / pending / running) and the jobs `submit` started."""
    from .status import grid_status

    st = grid_status(results, config)
    if as_json:
        click.echo(json.dumps(st, indent=1))
        return
    for r in st["cells"]:
        pid = f"  (pid {r['pid']})" if r["pid"] else ""
        click.echo(f"{r['state']:8s} {r['id']}{pid}")
    counts = ", ".join(f"{v} {k}" for k, v in st["counts"].items() if v)
    click.echo(f"{st['config'] or results}: {len(st['cells'])} cells: {counts or 'none'}")
    for j in st["jobs"]:
        click.echo(f"job {j['job_id']} (task {j['task_index']}/{j['num_tasks']}, {j['executor']}): {j['state']}"
                   f"  log {j['log']}")


if __name__ == "__main__":
    main()
