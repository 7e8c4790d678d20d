"""The application floor: the runs themselves (docs/benchmark.md, docs/algorithm1.md).

It imports the data floor (:mod:`imagenet52p`) and the library (:mod:`pruning`); neither imports it.

The run path, shared by ``imagenet52p prune`` and every grid cell:
:mod:`~benchmark.data` (a build opened through the one DataLoader recipe, the one head vocabulary and
label map), :mod:`~benchmark.run` (data opened -> head chosen -> model built -> engine run;
:func:`~benchmark.run.run_spec` for a single run), :mod:`~benchmark.prune_cli` (``imagenet52p prune``,
and the ``imagenet52p`` console script composed from the data floor's commands).

Grids: :mod:`~benchmark.config` (TOML experiment configs), :mod:`~benchmark.grid` (cells, stable ids,
partitioning), :mod:`~benchmark.resolve` (a cell resolved once against this machine),
:mod:`~benchmark.execute` (one cell: its starting model, scoring data, then the run path),
:mod:`~benchmark.architectures` (the ``scratch``/``reduced`` networks), :mod:`~benchmark.runner` (a grid
with failure recording and resume), :mod:`~benchmark.cellmain` (one cell under torchrun),
:mod:`~benchmark.results` (the only reader of run directories), :mod:`~benchmark.leaderboard`
(aggregation over seeds, ranking), :mod:`~benchmark.formats` (md/csv/json), :mod:`~benchmark.plots`,
:mod:`~benchmark.report` (self-contained HTML, and :func:`~benchmark.report.render` of every format),
:mod:`~benchmark.reference` (published numbers), :mod:`~benchmark.estimate` (GPU-hours),
:mod:`~benchmark.cli` (``imagenet52p-bench``).

Tools: :mod:`~benchmark.throughput` (the loop's throughput against a minimal PyTorch loop,
``python -m benchmark.throughput``), :mod:`~benchmark.synthetic` (in-memory synthetic data for tests,
demos and CPU timing).
"""
