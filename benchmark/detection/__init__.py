"""Detection cells of the benchmark (paper sec. 6, Tables 5-7): Faster R-CNN on PASCAL VOC.

A detection config (``task = "detection"``, :mod:`benchmark.detection.config`) expands into
:class:`benchmark.detection.grid.DetCell` s of two kinds:

* ``plugin``: the final model of an UPSTREAM classification cell (a Table 1 or Table 4 cell, named by its
  fields and found by hash in that config's results folder) plugged into Faster R-CNN, trained on VOC,
  evaluated (VOC07 11-point and VOC2010+ mAP) and timed (fps, GFLOPs).  Ratio 0: the upstream config's
  unpruned baseline cell.
* ``direct``: a trained detector (the ``plugin`` baseline cell of the same config) pruned directly by
  Algorithm 1 over its backbone convs, fine-tuned, evaluated and timed.

They run through the same runner, leaderboard and report as the classification cells (docs/detection.md).
"""
