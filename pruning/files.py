"""Reading weights and checkpoints, and writing run files, with errors a user can act on.

``torch.load`` fails on a file that is not what it should be with its unpickler's own words (``KeyError:
101`` for a text file, ``EOFError`` for an empty one, a refused pickle's advice to load it with
``weights_only=False``, which must never be followed for a file of unknown origin).
:func:`read_torch_file` turns each into a ``ValueError`` naming the file, saying what was found and what to
do; :func:`read_state_dict` also checks that the file holds a ``state_dict``.  :func:`writing` turns a
failed write (``OSError``, or torch's ``RuntimeError`` from ``torch.save`` on a full disk) into a
:class:`WriteError` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Mapping

import torch

#: How to make a file that :func:`read_state_dict` reads.
HOW_TO_SAVE = "save one with torch.save(model.state_dict(), PATH)"


class WriteError(OSError):
    """A run file could not be written (full disk, read-only or unwritable folder, a path under a file);
    ``filename`` is the file, ``errno``/``strerror`` the system's reason where known; ``str()`` the whole
    message (file, reason, and that the run resumes)."""

    def __init__(self, err: int | None, reason: str, filename: str, message: str):
        super().__init__(err, reason, filename)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _found(exc: BaseException) -> str:
    """What a failed ``torch.load`` says the file is, in a user's words (never the unpickler's advice)."""
    import pickle

    if isinstance(exc, EOFError):
        return "the file is empty or cut short"
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc):
        return "it is a pickle holding Python objects other than tensors (e.g. a whole pickled model), which " \
               "is refused: loading it would run code from the file"
    if isinstance(exc, RuntimeError) and "zip archive" in str(exc):
        return "it is a damaged or truncated torch file"
    return f"it is not a torch file ({type(exc).__name__})"


def read_torch_file(path: str | os.PathLike, what: str, remedy: str, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; a file that is no torch file (text, empty, truncated, a refused
    pickle) is a ``ValueError`` naming ``what`` and ``path``, what was found and ``remedy``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory, not a file; {remedy}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # the unpickler's KeyError/EOFError/UnpicklingError/RuntimeError...
        raise ValueError(f"{what} {path} cannot be read: {_found(exc)}; {remedy}") from None


def read_state_dict(path: str | os.PathLike, map_location="cpu") -> dict:
    """The ``state_dict`` saved in ``path`` (``{"state_dict": sd}`` unwrapped); a ``ValueError`` naming the
    file when it is not one (:func:`read_torch_file`), or when it holds something else (a list, a tensor)."""
    remedy = f"it must be a state_dict: {HOW_TO_SAVE}"
    if str(path).endswith(".safetensors"):
        return _read_safetensors(Path(path), remedy)
    state = read_torch_file(path, "weights file", remedy, map_location)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"weights file {path} holds a {type(state).__name__}, not a state_dict; {remedy}")
    return state


def _read_safetensors(path: Path, remedy: str) -> dict:
    """A ``.safetensors`` file's tensors (timm's and Hugging Face's format); a ValueError naming it otherwise."""
    if path.is_dir():
        raise ValueError(f"weights file {path} is a directory, not a file; {remedy}")
    try:
        import safetensors.torch
    except ImportError:
        raise ValueError(f"weights file {path} is a .safetensors file: pip install safetensors") from None
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors' SafetensorError / ValueError for a damaged file
        raise ValueError(f"weights file {path} cannot be read as safetensors ({type(exc).__name__}: "
                         f"{str(exc)[:200]}); {remedy}") from None


def load_weights(model: torch.nn.Module, state: Mapping, path, strict: bool = True) -> None:
    """``model.load_state_dict(state)``; torch's ``RuntimeError`` (missing or unexpected keys, shapes) becomes a
    ``ValueError`` naming ``path`` and keeping torch's list of the keys."""
    try:
        model.load_state_dict(state, strict=strict)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ValueError(f"weights file {path} does not fit {type(model).__name__}: {exc}; give the state_dict of "
                         f"this architecture with the same number of classes ({HOW_TO_SAVE})") from None


_RESUME = "the run continues with --resume (resume=True) once the folder is writable and has space"


@contextlib.contextmanager
def writing(path: str | os.PathLike):
    """Run the block that writes ``path``; a failure to write is a :class:`WriteError` naming the file and the
    system's reason, and saying that the run resumes (``torch.save``'s ``RuntimeError`` included)."""
    path = Path(path)
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise WriteError(exc.errno, reason, str(path), f"cannot write {path}: {reason}; {_RESUME}") from exc
    except RuntimeError as exc:  # torch.save: "unexpected pos ...", "PytorchStreamWriter failed ..."
        text = str(exc)
        if not any(s in text for s in ("unexpected pos", "PytorchStreamWriter", "Parent directory",
                                       "file write failed", "No space")):
            raise
        err = errno.ENOSPC if ("unexpected pos" in text or "No space" in text) else None
        reason = f"{os.strerror(err)} (the write was cut short)" if err else text.splitlines()[0][:160]
        raise WriteError(err, reason, str(path), f"cannot write {path}: {reason}; {_RESUME}") from exc
