"""Object detection with pruned backbones (paper sec. 6): Faster R-CNN with a VGG backbone on PASCAL VOC.

Modules: :mod:`pruning.detection.metric` (the VOC metric, 07 11-point and 2010+ area),
:mod:`pruning.detection.model` (the detector and its presets), :mod:`pruning.detection.io` (plans and
weights of detectors; classification runs plugged in), :mod:`pruning.detection.train` (the iteration
trainer), :mod:`pruning.detection.evaluate`, :mod:`pruning.detection.prune` (Algorithm 1 on a trained
detector's backbone), :mod:`pruning.detection.speed` (fps and GFLOPs).  Import them directly: this package
imports torchvision, which ``import pruning`` itself never does.
"""
