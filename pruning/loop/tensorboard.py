"""An optional TensorBoard copy of ``events.jsonl`` (``RunOptions.tensorboard``; docs/algorithm1.md, "TensorBoard").

Definitions:

* where: ``out_dir/tensorboard/``, written by rank 0 only, with ``torch.utils.tensorboard.SummaryWriter``
  (opened at the first event, flushed after every event, closed when the run ends).
* what: every numeric field of every event, as a scalar.  Numeric = ``int`` or ``float`` (not ``bool``),
  found by walking nested dicts (by key) and lists (by index); strings and None are left out.
* tag: ``"<event kind>/<path>"``, the path's parts joined by ``/``: ``epoch/val/top1``,
  ``layer_step/timing/score_s``, ``layer_step/per_layer/features.4/1``, ``baseline/params``.
* step: the event's index in ``events.jsonl`` (its 0-based line number), so steps increase by one per
  event across all kinds; an epoch's images are also there as ``epoch/images_total``.
* resume: the writer of a resumed run is opened with ``purge_step`` = the index of its first event (the
  line count the checkpoint saw), so TensorBoard (and ``EventAccumulator``) hides whatever the interrupted
  run wrote from that step on: no step is shown twice.  Each event is written here before it is appended
  to ``events.jsonl``, so a kill between the two leaves a step that the resume purges and writes again.

``import pruning`` never imports tensorboard: :func:`check_available` and :class:`TensorBoardLog` import it
when a run asks for it.
"""

from __future__ import annotations

from pathlib import Path

INSTALL = "pip install tensorboard"


def check_available() -> None:
    """ValueError (one line, saying ``pip install tensorboard``) when TensorBoard cannot be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ValueError(f"--tensorboard (RunOptions.tensorboard) needs the tensorboard package: {INSTALL}") from None


def scalars(event: dict) -> dict[str, float]:
    """The scalars of ``event`` (``{"event": kind, ...}``), by tag (see the module docstring)."""
    kind = event["event"]
    out: dict[str, float] = {}

    def walk(path: str, v) -> None:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return
        if isinstance(v, (int, float)):
            out[path] = float(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(f"{path}/{k}", x)
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(f"{path}/{i}", x)

    for k, v in event.items():
        if k != "event":
            walk(f"{kind}/{k}", v)
    return out


class TensorBoardLog:
    """The TensorBoard writer of one run's ``log_dir``, opened at the first :meth:`write`."""

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        self._writer = None

    def write(self, index: int, event: dict) -> None:
        """Write ``event``'s scalars at step ``index`` (its line in ``events.jsonl``) and flush."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter(str(self.log_dir), purge_step=index)
        for tag, value in scalars(event).items():
            self._writer.add_scalar(tag, value, global_step=index)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
