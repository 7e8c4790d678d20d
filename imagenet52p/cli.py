"""The ``imagenet52p`` command: class lists, WordNet, and (from other modules) verify/info/prune."""

from __future__ import annotations

import json
import sys
import warnings

import click

from ._version import __version__
from .classes import BUILTIN_SETS, load_class_set
from .cli_errors import user_errors
from .tables import format_table, format_tsv


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="imagenet52p")
def main() -> None:
    """ImageNet-52P: class lists, shards, pruning runs."""


@main.command("classes")
@click.option("--set", "set_name", default="imagenet52p", show_default=True,
              help=f"{' | '.join(BUILTIN_SETS)} | a frozen name (imagenet52p-v1) | PATH of a wnid list")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "tsv"]), default="table", show_default=True)
@click.option("--derive", is_flag=True,
              help="Re-derive the frozen lists from WordNet 3.0; exit 1 on any difference.")
@click.option("--wordnet-dir", type=click.Path(file_okay=False), default=None,
              help="WordNet 3.0 dict directory (else $IMAGENET52P_WORDNET_DIR, NLTK data, /usr/share/wordnet).")
@user_errors
def classes_cmd(set_name: str, fmt: str, derive: bool, wordnet_dir: str | None) -> None:
    """Print a class set (label order = ImageNet-1k order), or check the frozen lists."""
    if derive:
        from .derive import SpecError, diff_frozen
        from .wordnet import WordNetNotFoundError, WordNetVersionError

        warnings.filterwarnings("ignore", message="The multilingual functions")
        try:
            diffs = diff_frozen(wordnet_dir)
        except (WordNetNotFoundError, WordNetVersionError, SpecError) as exc:
            raise click.ClickException(str(exc)) from None
        bad = {k: v for k, v in diffs.items() if v}
        for name, d in diffs.items():
            click.echo(f"{name}: {'OK, matches WordNet 3.0' if not d else f'{len(d)} difference(s)'}")
            for line in d:
                click.echo(f"  {line}")
        if bad:
            sys.exit(1)
        return
    try:
        cs = load_class_set(set_name)
    except (ValueError, FileNotFoundError) as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from None
    if fmt == "json":
        click.echo(json.dumps([c.to_dict() for c in cs], indent=1, ensure_ascii=False))
    elif fmt == "tsv":
        click.echo(format_tsv(cs))
    else:
        click.echo(format_table(cs))


@main.command("wordnet")
@click.option("--wordnet-dir", type=click.Path(file_okay=False), default=None)
@user_errors
def wordnet_cmd(wordnet_dir: str | None) -> None:
    """Locate WordNet 3.0 and check its version (exit 1 with install help if missing)."""
    from .wordnet import WordNetNotFoundError, WordNetVersionError, open_wordnet

    warnings.filterwarnings("ignore", message="The multilingual functions")
    try:
        loc, wn = open_wordnet(wordnet_dir)
    except (WordNetNotFoundError, WordNetVersionError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{loc.describe()}: version {wn.get_version()}")


from .build_cli import info_cmd, verify_cmd  # noqa: E402

main.add_command(verify_cmd)
main.add_command(info_cmd)

from .voc.cli import voc_group  # noqa: E402

main.add_command(voc_group)


if __name__ == "__main__":  # pragma: no cover
    main()
