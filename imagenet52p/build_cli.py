"""``build-imagenet52p`` (build shards) and ``imagenet52p verify`` / ``imagenet52p info``.

Thin click commands over :mod:`imagenet52p.builder` (options become a :class:`BuildConfig`) and
:mod:`imagenet52p.format` (verify, info); the printed table is :mod:`imagenet52p.summary`.
"""

from __future__ import annotations

import logging
import sys

import click

from ._version import __version__
from .builder import LAYOUTS, BuildConfig, BuildError, run_build
from .classes import BUILTIN_SETS
from .cli_errors import user_errors
from .format import load_manifest, verify_build
from .summary import format_summary


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s: %(message)s",
                        stream=sys.stderr)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="build-imagenet52p")
@click.option("--root", required=True, type=click.Path(), help="The ImageNet copy (any layout, see --layout).")
@click.option("--out", required=True, type=click.Path(), help="Output directory for shards and manifest.")
@click.option("--classes", default="imagenet52p", help=f"{' | '.join(BUILTIN_SETS)} | PATH of a wnid list")
@click.option("--layout", type=click.Choice(LAYOUTS), default="auto", help="Input layout (auto = detect).")
@click.option("--val-per-class", type=int, default=50, help="Train images per class held out as the val split.")
@click.option("--seed", type=int, default=0, help="Seed of the held-out choice and the shard order.")
@click.option("--shard-size", type=int, default=None,
              help="Fixed samples per train shard (the last one shorter; val/test then 250 unless "
                   "--eval-shard-size) [default: automatic counts: a multiple of 240 shards of at most 1000, "
                   "fewer for small splits; docs/builder.md].")
@click.option("--eval-shard-size", type=int, default=None,
              help="Fixed samples per val/test shard (train then 1000 unless --shard-size) [default: automatic "
                   "counts, shards of at most 250].  Builds made before automatic counts: "
                   "--shard-size 1000 --eval-shard-size 250.")
@click.option("--shards-per-split", type=int, default=None,
              help="Exactly N shards per split, sizes equal to within one sample (not with --shard-size or "
                   "--eval-shard-size; check a count with `imagenet52p info OUT --readers`).")
@click.option("--resize", type=int, default=None, help="Cap the shorter side at N pixels (re-encoded).")
@click.option("--quality", type=int, default=90, help="JPEG quality of re-encoded images.")
@click.option("--decode-check", is_flag=True, help="Fully decode every kept JPEG (slower, stricter check).")
@click.option("--workers", type=int, default=None, help="Worker processes [default: all cores].")
@click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip",
              help="Bad images: skip and list them, or stop at the first one.")
@click.option("--allow-missing", is_flag=True, help="Build even if chosen classes have no train images.")
@click.option("--overwrite", is_flag=True, help="Replace a different build (or other files) in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("-v", "--verbose", is_flag=True)
@user_errors
def main(root, out, classes, layout, val_per_class, seed, shard_size, eval_shard_size, shards_per_split,
         resize, quality, decode_check, workers, on_error, allow_missing, overwrite, quiet, verbose) -> None:
    """Build ImageNet-52P (or any class set) as deterministic webdataset shards.

    Splits: train (ImageNet train minus the held-out part), val (--val-per-class train images per
    class, seeded), test (ImageNet's official validation images; ImageNet's test labels are not
    public).  Rerun the same command after a crash to resume.
    """
    _setup_logging(verbose)
    cfg = BuildConfig(root=root, out=out, classes=classes, layout=layout, val_per_class=val_per_class, seed=seed,
                      shard_size=shard_size, eval_shard_size=eval_shard_size,
                      shards_per_split=shards_per_split, resize=resize, quality=quality,
                      decode_check=decode_check, workers=workers, on_error=on_error, allow_missing=allow_missing,
                      overwrite=overwrite, progress=not quiet)
    try:
        result = run_build(cfg)
    except (BuildError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_summary(result.manifest, result.timings, result.reused))
    mb = result.source_bytes / 1e6
    click.echo(f"wall time {result.seconds:.1f}s, {mb:.0f} MB read from new shards' sources; "
               f"manifest: {cfg.out_path / 'manifest.json'}")


@click.command("verify")
@click.argument("out", type=click.Path())
@click.option("--workers", type=int, default=1, show_default=True, help="Processes hashing shards.")
@user_errors
def verify_cmd(out: str, workers: int) -> None:
    """Re-hash every shard of OUT against its manifest and check sample counts (exit 1 on any mismatch)."""
    if workers < 1:
        raise click.ClickException(f"--workers must be a positive integer, got {workers!r}")
    try:
        problems = verify_build(out, workers=workers)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    manifest = load_manifest(out)
    n = sum(len(s["shards"]) for s in manifest["splits"].values())
    if problems:
        for p in problems:
            click.echo(f"FAIL {p}", err=True)
        click.echo(f"{out}: {len(problems)} problem(s) in {n} shards", err=True)
        sys.exit(1)
    click.echo(f"{out}: OK, {n} shards match manifest.json")


@click.command("info")
@click.argument("out", type=click.Path())
@click.option("--readers", is_flag=True,
              help="Also say whether timm's wds reader and webdataset read each split exactly (docs/dataset.md).")
@click.option("--world-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --readers: DDP ranks.")
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="With --readers: DataLoader workers per rank (timm's -j).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --readers: timm's -b (it rounds train epochs up to whole batches).")
@click.option("--seed", type=int, default=42, show_default=True, help="With --readers: timm's --seed.")
@click.option("--epoch", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --readers: the epoch (timm reshuffles train shards per epoch).")
@user_errors
def info_cmd(out: str, readers: bool, world_size: int, workers: int, batch_size: int, seed: int,
             epoch: int) -> None:
    """Print the summary of the build in OUT (from its manifest); with --readers, what timm and
    webdataset would repeat, miss or hang on (informational: exit 0)."""
    try:
        manifest = load_manifest(out)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_summary(manifest))
    if readers:
        from .format.readers import readers_report

        click.echo("\n".join(readers_report(manifest, world_size, workers, batch_size, seed, epoch)))
    if manifest["skipped"]:
        click.echo(f"skipped ({len(manifest['skipped'])}):")
        for e in manifest["skipped"][:20]:
            click.echo(f"  [{e['split']}] {e['source']}: {e['reason']}")
    if manifest["converted"]:
        click.echo(f"converted ({len(manifest['converted'])}):")
        for e in manifest["converted"][:20]:
            click.echo(f"  [{e['split']}] {e['source']}: {e['reason']}")


if __name__ == "__main__":  # pragma: no cover
    main()
