"""Ordinary mistakes become one ``Error: ...`` line in the data CLIs, never a traceback.

:func:`user_errors` wraps a click command: an ``OSError`` (permission denied, read-only file system,
disk full, ...) names its path and the errno's text; undecodable text and bad JSON name the cause;
the package's own errors (:class:`~imagenet52p.builder.BuildError`,
:class:`~imagenet52p.format.ManifestError`) keep their message.  Each exits 1 through
``click.ClickException``.  Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json

import click

from .builder.config import BuildError
from .format import ManifestError


def os_message(exc: OSError) -> str:
    """``PATH: errno text`` (and the second path of a rename), or the error's own text."""
    text = exc.strerror or str(exc)
    if exc.filename is None:
        return text
    where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
    return f"{where}: {text}"


def user_errors(fn):
    """Turn ordinary failures of ``fn`` (a click command callback) into ``click.ClickException``."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except OSError as exc:
            raise click.ClickException(f"{os_message(exc)}; check the path, its permissions and free space") from None
        except UnicodeDecodeError as exc:
            raise click.ClickException(f"a file is not UTF-8 text ({exc}); pass a UTF-8 text file") from None
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"a file is not valid JSON ({exc})") from None
        except (BuildError, ManifestError) as exc:
            raise click.ClickException(str(exc)) from None
    return wrapper
