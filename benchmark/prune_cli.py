"""``imagenet52p prune``: Algorithm 1 (layer-by-layer prune and fine-tune) into a run directory.

A thin click layer: options become a :class:`benchmark.run.RunSpec`, a
:class:`pruning.loop.LoopConfig` and :class:`pruning.loop.RunOptions`, and
:func:`benchmark.run.run_spec` does the work.  See docs/algorithm1.md.

``main`` is the ``imagenet52p`` console script: the data floor's commands (:mod:`imagenet52p.cli`)
plus ``prune``, composed here so the data floor never imports the application.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys

import click

class _LibraryChoice(click.Choice):
    """A ``click.Choice`` whose choices are read from the library when first needed (``--help`` of the
    ``prune`` command, or parsing its options), so ``imagenet52p --help`` and the data commands never
    import torch, and the choices are the library's own, never a copy."""

    def __init__(self, module: str, name: str):
        self._where = (module, name)
        self.case_sensitive = True

    @property
    def choices(self):
        import importlib
        module, name = self._where
        return tuple(getattr(importlib.import_module(module), name))


ORDERS = _LibraryChoice("pruning.loop.config", "ORDERS")
SCHEDULES = _LibraryChoice("pruning.loop.config", "SCHEDULES")
SELECTIONS = _LibraryChoice("pruning.loop.config", "SELECTIONS")
HEADS = _LibraryChoice("benchmark.data", "HEADS")
LABEL_SPACES = _LibraryChoice("benchmark.data", "LABEL_SPACES")
PROTOCOLS = _LibraryChoice("pruning.layers", "PROTOCOLS")


def _layers(value: str):
    """A protocol name, or comma-separated conv names (one name is a list of one)."""
    if value in PROTOCOLS.choices:
        return value
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _labels(value: str | None):
    if value is None:
        return None
    return tuple(int(v) for v in value.split(",") if v.strip())


@click.command("prune")
@click.option("--model", required=True,
              help="torchvision model name (vgg16, resnet50, ...), timm/<name> (timm/resnet50.a1_in1k) or tinyvgg")
@click.option("--weights", default=None,
              help="starting weights: a torchvision weight name (IMAGENET1K_V1, DEFAULT), a timm tag or DEFAULT "
                   "(from torchvision's / the Hugging Face cache), or a state_dict file (default: random init, "
                   "seeded)")
@click.option("--num-classes", type=int, default=None, help="outputs of the model as built (default: from the data)")
@click.option("--criterion", required=True, help="pruning criterion (see `pruning.list_criteria()`)")
@click.option("--criterion-options", default=None, help='JSON object of criterion options, e.g. \'{"bins": 20}\'')
@click.option("--ratio", type=float, required=True, help="fraction of filters removed per layer, e.g. 0.5")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="build directory (build-imagenet52p --out) or folders tree with train/ val/ [test/]")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--layers", default="all", show_default=True,
              help="protocol (vgg16, resnet50-16, resnet50-32, all) or comma-separated conv names")
@click.option("--order", type=ORDERS, default="last_to_first", show_default=True)
@click.option("--one-shot", is_flag=True, help="prune every layer at once, then fine-tune q epochs")
@click.option("--p", "--p-epochs", "p", type=float, default=1.0, show_default=True,
              help="fine-tuning epochs after each layer (--p-epochs under torchrun, which takes --p itself)")
@click.option("--q", "--q-epochs", "q", type=float, default=12.0, show_default=True, help="final fine-tuning epochs")
@click.option("--data-fraction", type=float, default=1.0, show_default=True,
              help="fraction of the training set used for fine-tuning")
@click.option("--final-data-fraction", type=float, default=None,
              help="fraction for the final fine-tune only (paper: 0.1 with --data-fraction 1)")
@click.option("--classes", default=None, help="class set restricting all splits (imagenet52p, random52, FILE)")
@click.option("--head", type=HEADS, default="full", show_default=True,
              help="class-subset setting: full | restrict (cut a 1000-way classifier) | subset-logits")
@click.option("--label-space", type=LABEL_SPACES, default="subset", show_default=True)
@click.option("--score-images", type=int, default=None, help="images for scoring each layer (default: all)")
@click.option("--score-labels", default=None, help="comma-separated labels scoring is restricted to")
@click.option("--round-to", type=int, default=1, show_default=True)
@click.option("--min-keep", type=int, default=1, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="the global batch: images per optimizer step, summed over ranks and --accum-steps "
                   "(each process loads batch-size / (accum-steps x ranks))")
@click.option("--accum-steps", type=int, default=1, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="LR of the per-layer fine-tuning")
@click.option("--final-lr", type=float, default=None, help="LR of the final fine-tune (default: --lr)")
@click.option("--schedule", type=SCHEDULES, default="cosine", show_default=True)
@click.option("--step-epochs", type=float, default=4.0, show_default=True)
@click.option("--gamma", type=float, default=0.1, show_default=True)
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option("--select", type=SELECTIONS, default="best", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--image-size", type=int, default=224, show_default=True)
@click.option("--resize", type=int, default=None, help="eval resize (default: image-size * 256/224)")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
@click.option("--workers", type=click.IntRange(min=0), default=min(4, os.cpu_count() or 1), show_default=True,
              help="DataLoader worker processes per rank")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads (default: torch's; 1-2 on a busy shared CPU is often faster)")
@click.option("--no-amp", is_flag=True, help="no bf16 autocast on CUDA")
@click.option("--deterministic", is_flag=True, help="deterministic algorithms (slower on CUDA)")
@click.option("--resume", is_flag=True, help="continue an interrupted run (a complete one is left as is)")
@click.option("--keep-step-checkpoints", is_flag=True, help="also keep checkpoints/step_XX.pt after every layer step")
@click.option("--no-progress", is_flag=True)
@click.option("--tensorboard", is_flag=True,
              help="also write every event of events.jsonl as TensorBoard scalars into OUT/tensorboard/ "
                   "(needs: pip install tensorboard)")
@click.option("-v", "--verbose", count=True)
def prune_cmd(model, weights, num_classes, criterion, criterion_options, ratio, data_dir, out_dir, layers, order,
              one_shot, p, q, data_fraction, final_data_fraction, classes, head, label_space, score_images, score_labels, round_to,
              min_keep, batch_size, accum_steps, lr, final_lr, schedule, step_epochs, gamma, momentum,
              weight_decay, select, seed, image_size, resize, device, workers, threads, no_amp, deterministic,
              resume, keep_step_checkpoints, no_progress, tensorboard, verbose):
    """Prune MODEL layer by layer with CRITERION and fine-tune (the paper's Algorithm 1).

    Writes OUT/config.json, events.jsonl, checkpoints/, model/ (plan.json + state_dict.pt)
    and, last, summary.json (damage, recovery, per-epoch recovery curve, data used, test);
    with --tensorboard also OUT/tensorboard/.
    """
    from pruning.loop import LoopConfig, RunOptions

    from .run import RunSpec

    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), format="%(levelname)s %(name)s: %(message)s")
    _check_device(device)
    if threads is not None:
        import torch
        torch.set_num_threads(threads)
    try:
        opts = None if criterion_options is None else json.loads(criterion_options)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--criterion-options") from None
    with user_errors(out_dir):
        cfg = LoopConfig(criterion=criterion, ratio=ratio, criterion_options=opts, layers=_layers(layers),
                         order=order, one_shot=one_shot, round_to=round_to, min_keep=min_keep,
                         score_images=score_images, score_classes=_labels(score_labels), p=p, q=q,
                         data_fraction=data_fraction, final_data_fraction=final_data_fraction, lr=lr,
                         final_lr=final_lr, schedule=schedule, step_epochs=step_epochs, gamma=gamma,
                         momentum=momentum, weight_decay=weight_decay, batch_size=batch_size,
                         accum_steps=accum_steps, select=select, seed=seed)
        spec = RunSpec(model=model, data=data_dir, weights=weights, num_classes=num_classes, head=head,
                       label_space=label_space, classes=classes, image_size=image_size, resize=resize)
        options = RunOptions(device=device, amp=not no_amp, deterministic=deterministic, num_workers=workers,
                             progress=not no_progress, keep_step_checkpoints=keep_step_checkpoints,
                             tensorboard=tensorboard)
        if tensorboard:
            from pruning.loop.tensorboard import check_available
            check_available()  # before the data and the model are opened
        _run_and_report(spec, cfg, out_dir, options, resume)


def _check_device(device: str | None) -> None:
    """The library's device check (:func:`pruning.loop.train.check_device`), named by the option."""
    if device is None:
        return
    from pruning.loop.train import check_device
    try:
        check_device(device)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None


def _run_and_report(spec, cfg, out_dir, options, resume: bool) -> None:
    from .run import run_spec
    from .run_report import format_run_summary

    summary = run_spec(spec, cfg, out_dir, options, resume=resume)
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return
    click.echo(format_run_summary(summary, out_dir))


@contextlib.contextmanager
def user_errors(out_dir):
    """Ordinary mistakes (bad options, files, folders, a full disk) and Ctrl-C end with one message and a
    non-zero status, never a traceback: the library's errors name the file, option or key already; an
    ``OSError`` is named by its path here.  Ctrl-C says that the same command with ``--resume`` continues."""
    from pruning import WriteError
    from pruning.weights import WeightsNotFound

    try:
        yield
    except KeyboardInterrupt as exc:  # pruning.loop.Interrupted carries the message; a bare Ctrl-C gets ours
        click.echo("\n" + (str(exc) or f"interrupted: rerun the same command with --resume to continue {out_dir} "
                                        "from its last checkpoint"), err=True)
        sys.exit(130)
    except (ValueError, KeyError, EOFError, UnicodeDecodeError) as exc:
        raise click.ClickException(str(exc).strip('"') or type(exc).__name__) from None
    except WriteError as exc:  # names the file being written, the reason, and that --resume continues
        raise click.ClickException(str(exc)) from None
    except WeightsNotFound as exc:  # names the file, the folder and how to fetch it (pruning.weights)
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        from imagenet52p.cli_errors import os_message
        where = os_message(exc) if exc.filename is not None else f"{out_dir}: {exc.strerror or exc}"
        raise click.ClickException(f"{where}; check that the path exists and is writable (a run stopped "
                                   "by a full disk continues with --resume once there is space)") from None


def _compose():
    from imagenet52p.cli import main as data_main

    from .library_cli import criteria_cmd, layers_cmd

    commands = {**data_main.commands, "prune": prune_cmd, "criteria": criteria_cmd, "layers": layers_cmd}
    return click.Group(name="imagenet52p", commands=commands, help=data_main.help,
                       params=list(data_main.params), callback=data_main.callback,
                       context_settings=dict(data_main.context_settings),
                       invoke_without_command=data_main.invoke_without_command,
                       no_args_is_help=data_main.no_args_is_help)


main = _compose()

if __name__ == "__main__":  # pragma: no cover
    main()
