"""Cost accounting: parameters, MACs (``torch.utils.flop_counter``) and measured latency.

**Convention.**  One MAC is one multiply-accumulate.  ``torch.utils.flop_counter.FlopCounterMode``
counts 2 FLOPs per multiply-accumulate of convolutions and matrix products (``aten.convolution``,
``aten.mm``, ``aten.addmm``, ...), so ``macs = flops / 2``.  Only conv and linear layers are counted:
BatchNorm, activations, pooling, residual adds and the conv/linear bias additions are *not* (they are
< 1% of the MACs of the models here).  Numbers are per forward pass of one image (batch 1) unless
``batch_size`` says otherwise.  ``params`` counts every parameter element (BatchNorm included, buffers not).

**Latency** (:func:`measure_latency`): ``warmup`` untimed forward passes, then ``repeats`` timed ones under
``torch.inference_mode()``; on CUDA each pass is timed with CUDA events (synchronised), on CPU with
``time.perf_counter``.  The median (and 10th/90th percentiles) in milliseconds per batch is reported.
The MAC-predicted speedup of a pruned model is ``macs(original) / macs(pruned)``; the measured speedup
is ``median(original) / median(pruned)``; their ratio tells how much of the MAC saving becomes time.
"""
from __future__ import annotations

import platform
import statistics
import time
from typing import Dict, Sequence, Union

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .surgery import eval_mode


def _input(model: nn.Module, input_size: Sequence[int], batch_size: int, device=None, dtype=None) -> torch.Tensor:
    size = tuple(int(s) for s in input_size)
    if len(size) == 4:
        size = size[1:]
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"input_size must be (C, H, W) (or (N, C, H, W), N ignored); got {tuple(input_size)}")
    param = next(model.parameters())
    return torch.zeros(batch_size, *size, device=device or param.device, dtype=dtype or param.dtype)


def count_params(model: nn.Module) -> int:
    """Parameter elements of ``model`` (BatchNorm included, buffers not): ``count_cost``'s ``params``, without
    the forward pass."""
    return int(sum(p.numel() for p in model.parameters()))


def count_cost(model: nn.Module, input_size: Sequence[int], batch_size: int = 1) -> Dict[str, int]:
    """``{"params", "macs", "flops", "conv_macs", "linear_macs"}`` of one forward pass (module doc)."""
    x = _input(model, input_size, batch_size)
    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.no_grad(), counter:
        model(x)
    by_op: Dict[str, int] = {}
    for op, count in counter.get_flop_counts().get("Global", {}).items():
        by_op[str(op)] = by_op.get(str(op), 0) + int(count)
    conv = sum(v for k, v in by_op.items() if "convolution" in k)
    linear = sum(v for k, v in by_op.items() if k in ("aten.mm", "aten.addmm"))
    flops = int(counter.get_total_flops())
    return {"params": count_params(model), "flops": flops, "macs": flops // 2,
            "conv_macs": conv // 2, "linear_macs": linear // 2}


DEVICE_NAME_STYLES = ("row", "summary")


def device_name(device: Union[str, torch.device], style: str = "row") -> str:
    """Human-readable name of ``device``, the library's one device-name helper.

    ``style="row"`` (result rows, latency and throughput measurements): the GPU's name on CUDA, else the
    processor and the torch thread count.  ``style="summary"`` (a run's ``summary.json``): ``cuda:<GPU name>``
    on CUDA, else ``cpu``.
    """
    if style not in DEVICE_NAME_STYLES:
        raise ValueError(f"style={style!r}; choose one of {', '.join(DEVICE_NAME_STYLES)}")
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"cuda:{name}" if style == "summary" else name
    if style == "summary":
        return "cpu"
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def measure_latency(model: nn.Module, input_size: Sequence[int], batch_size: int = 1,
                    device: Union[str, torch.device] = "cpu", warmup: int = 3, repeats: int = 10,
                    dtype: torch.dtype = None, channels_last: bool = False) -> Dict[str, object]:
    """Median latency (ms per batch) of ``model`` on ``device`` (module doc).  The model is moved to
    ``device`` (and ``dtype``/channels_last when given), in place."""
    if warmup < 0 or repeats < 1 or batch_size < 1:
        raise ValueError(f"need warmup >= 0, repeats >= 1, batch_size >= 1; got {warmup}, {repeats}, {batch_size}")
    device = torch.device(device)
    model.to(device=device, dtype=dtype)
    x = _input(model, input_size, batch_size, device=device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with eval_mode(model), torch.inference_mode():
        for _ in range(warmup):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model(x)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
        else:
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1e3)
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    median = statistics.median(times)
    return {"median_ms": median, "p10_ms": pick(0.1), "p90_ms": pick(0.9), "repeats": repeats,
            "batch_size": batch_size, "images_per_s": batch_size / (median / 1e3),
            "device": device_name(device), "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "channels_last": channels_last}
