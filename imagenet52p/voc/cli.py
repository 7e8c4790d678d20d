"""``imagenet52p voc verify ROOT`` and ``imagenet52p voc fake OUT``: thin commands over the library.

Exit codes: 0 clean; 1 problems found (verify) or the output exists (fake); 2 a root that is missing
or not a complete VOCdevkit, or a bad option (one ``Error:`` line, no traceback).
"""

from __future__ import annotations

import sys

import click

from ..cli_errors import user_errors


class VOCRootError(click.ClickException):
    """A missing or incomplete VOC root: one ``Error:`` line, exit 2."""
    exit_code = 2


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@click.group("voc", context_settings={"help_option_names": ["-h", "--help"]})
def voc_group() -> None:
    """PASCAL VOC: verify a VOCdevkit, or write a synthetic one (docs/voc.md)."""


@voc_group.command("verify")
@click.argument("root", type=click.Path())
@click.option("--sets", "sets_", default="2007-trainval,2007-test", show_default=True,
              help="comma-separated set specs, each <year>-<set> or a union joined by '+' (07+12)")
@click.option("--decode", is_flag=True, help="fully decode every JPEG (slower; also catches truncated files)")
@click.option("--quiet", is_flag=True, help="no progress bar")
@user_errors
def verify_cmd(root: str, sets_: str, decode: bool, quiet: bool) -> None:
    """Count images/objects/difficult per class and set; exit 1 listing every missing or malformed file."""
    from .verify import format_report, verify_voc

    try:
        report = verify_voc(root, _csv(sets_), decode=decode, progress=not quiet)
    except FileNotFoundError as exc:
        raise VOCRootError(str(exc)) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sets") from None
    click.echo(format_report(report))
    n = report.total.n_images
    if report.problems:
        for p in report.problems:
            click.echo(f"FAIL {p}", err=True)
        click.echo(f"{report.devkit}: {len(report.problems)} problem(s) in {n} images", err=True)
        sys.exit(1)
    click.echo(f"{report.devkit}: OK, {n} images, no problem")


@voc_group.command("fake")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--years", default="2007,2012", show_default=True, help="comma-separated: 2007, 2012")
@click.option("--trainval", type=int, default=20, show_default=True, help="trainval images per year")
@click.option("--test", type=int, default=12, show_default=True, help="VOC2007 test images")
@click.option("--classes", default="all", show_default=True, help="'all' or comma-separated VOC class names")
@click.option("--min-size", type=int, default=96, show_default=True, help="smallest image width/height (pixels)")
@click.option("--max-size", type=int, default=160, show_default=True, help="largest image width/height (pixels)")
@click.option("--max-objects", type=int, default=3, show_default=True, help="objects per image: 1..N")
@click.option("--difficult-fraction", type=float, default=0.1, show_default=True)
@click.option("--truncated-fraction", type=float, default=0.15, show_default=True)
@user_errors
def fake_cmd(out, seed, years, trainval, test, classes, min_size, max_size, max_objects, difficult_fraction,
             truncated_fraction) -> None:
    """Write a deterministic synthetic OUT/VOCdevkit (readable by torchvision's VOCDetection)."""
    from .annotations import VOC_CLASSES
    from .fake import make_fake_voc

    names = VOC_CLASSES if classes.strip() == "all" else tuple(_csv(classes))
    try:
        tree = make_fake_voc(out, years=tuple(_csv(years)), trainval=trainval, test=test, classes=names,
                             size=(min_size, max_size), seed=seed, difficult_fraction=difficult_fraction,
                             truncated_fraction=truncated_fraction, max_objects=max_objects)
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    n_obj = sum(len(v) for v in tree.objects.values())
    lists = ", ".join(f"{y}-{s}: {len(ids)}" for (y, s), ids in tree.sets.items())
    click.echo(f"{tree.devkit}: {len(tree.objects)} images, {n_obj} objects ({lists})")
