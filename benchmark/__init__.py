"""The benchmark runner and leaderboard (README.md, section "Benchmark runner and leaderboard").

Modules: :mod:`~benchmark.config` (TOML experiment configs), :mod:`~benchmark.grid` (cells, stable
ids, partitioning), :mod:`~benchmark.runner` (run a grid with failure recording and resume),
:mod:`~benchmark.execute` (one cell: the only caller of the Algorithm 1 engine),
:mod:`~benchmark.results` (the only reader of run directories), :mod:`~benchmark.leaderboard`
(aggregation over seeds, ranking), :mod:`~benchmark.formats` (md/csv/json),
:mod:`~benchmark.plots`, :mod:`~benchmark.report` (self-contained HTML),
:mod:`~benchmark.reference` (published numbers), :mod:`~benchmark.estimate` (GPU-hours),
:mod:`~benchmark.cli` (``imagenet52p-bench``).
"""
