#!/usr/bin/env bash
# Every GPU measurement docs/algorithm1.md, docs/benchmark.md and docs/detection-speed.md quote, in one command, into one folder:
#
#   bash scripts/bench_gpu.sh [OUT]          (or: make bench-gpu BENCH_OUT=OUT)
#
#   OUT/env.txt                  GPU, driver, torch / torchvision versions, CPU count
#   OUT/pytest_gpu.txt           the @pytest.mark.gpu tests (bf16/channels_last loop, no host sync per
#                                batch, CUDA scores = CPU scores, nvJPEG decode, CUDA-event latency)
#   OUT/loop_throughput.json     our training loop vs a minimal PyTorch loop, ResNet-50 and VGG-16, bf16,
#                                channels_last, batch 256, in-memory data (compute-bound), + eval images/s
#   OUT/loop_throughput_data.json  the same through the loop's own shard loaders on a build of ~100 KB
#                                500x375 JPEGs (shows whether JPEG decoding keeps up: data vs compute time)
#   OUT/overhead.json            host time per optimizer step our loop adds (near-free model: launch-bound)
#   OUT/speedup.json             scripts/bench_speedup.py --gpu-extra (pruned-model latency, batch 256 bf16)
#   OUT/stats.json               scripts/bench_stats.py (statistics pass vs plain forward)
#   OUT/loader.txt               scripts/bench_loader.py --gpu-decode (loader throughput, nvJPEG eval path)
#   OUT/detect.json              scripts/bench_detect.py: Faster R-CNN VGG-16 (voc-vgg16 preset, shorter side 600)
#                                unpruned and pruned at random 25/50/75%: GFLOPs, fps at batch 1 interleaved with
#                                a per-stage breakdown, measured/predicted speedup + the 50% target (PASS/FAIL),
#                                training and eval images/s at batch 1 and 2 (docs/detection-speed.md)
#
# Needs the package installed (make install, or pip install -e .) and a CUDA device.  Each step writes
# its file as it finishes, and a step that fails is reported and the script goes on, so a partial
# run still leaves the finished measurements.  DEVICE=cpu SMOKE=1 runs every step at toy sizes on the
# CPU (what tests/benchmark/test_loop_bench.py does to keep this script working; its numbers mean nothing).
set -uo pipefail
OUT=${1:-bench_gpu_out}
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
SMOKE=${SMOKE:-0}
WORKERS=${WORKERS:-$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."

if [ "$DEVICE" = cuda ] && ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "bench_gpu: torch.cuda.is_available() is False; run this on a machine with a CUDA GPU (or DEVICE=cpu SMOKE=1)" >&2
    exit 2
fi

if [ "$SMOKE" = 1 ]; then
    MODELS=tinyvgg; BS=8; IMAGES=32; SIZE=32; PER_CLASS=3; HOLD=1; W=64; H=48; REPEATS=1
    SPEEDUP=(--configs vgg16:vgg16 --ratios 0.5 --batch-sizes 1 --size 32 --repeat 1)
    STATS=(--models resnet18 --size 32 --batch-size 2 --batches 1 --repeat 1)
    OVERHEAD=(--steps 20 --repeats 1)
    LOADER=(--images 52 --batch-size 8 --workers 0 --repeat 1 --cache "$OUT/loader_cache")
    DETECT=(--smoke)
else
    MODELS=resnet50,vgg16; BS=256; IMAGES=5120; SIZE=224; PER_CLASS=110; HOLD=10; W=500; H=375; REPEATS=3
    SPEEDUP=(--gpu-extra)
    STATS=(--models resnet50 vgg16_bn)  # (never empty: "${A[@]}" of an empty array fails under set -u, bash < 4.4)
    OVERHEAD=(--steps 2000)
    LOADER=(--gpu-decode --workers "$WORKERS" --batch-size 256 --cache "$OUT/loader_cache")
    DETECT=(--images 10 --repeats 5 --warmup 3 --train-steps 10)
fi

failed=()
step() {  # step NAME COMMAND...: run, report, go on
    local name=$1; shift
    echo "== $name: $*" >&2
    local t0=$SECONDS
    if "$@"; then echo "== $name: done in $((SECONDS - t0)) s" >&2; else echo "== $name: FAILED" >&2; failed+=("$name"); fi
}
to() {  # to FILE COMMAND...: run COMMAND with its standard output (and errors, for .txt) in FILE
    local file=$1; shift
    if [[ $file == *.txt ]]; then "$@" >"$file" 2>&1; else "$@" >"$file"; fi
}

{
    date -u
    "$PY" -c 'import torch, torchvision, os; print("torch", torch.__version__, "torchvision", torchvision.__version__,
"cuda", torch.version.cuda, "cpus", os.cpu_count()); print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")'
    command -v nvidia-smi >/dev/null && nvidia-smi
} >"$OUT/env.txt" 2>&1

if [ "$DEVICE" = cuda ]; then
    step pytest-gpu to "$OUT/pytest_gpu.txt" "$PY" -m pytest -q -m gpu tests -p no:cacheprovider
fi
step loop-throughput "$PY" -m benchmark.throughput throughput --model "$MODELS" --device "$DEVICE" --batch-size "$BS" \
    --images "$IMAGES" --size "$SIZE" --repeats "$REPEATS" --out "$OUT/loop_throughput.json"
step overhead to "$OUT/overhead.json" "$PY" -m benchmark.throughput overhead --device "$DEVICE" "${OVERHEAD[@]}"
if [ ! -f "$OUT/data/build/manifest.json" ]; then
    step fake-tree "$PY" scripts/make_fake_imagenet.py "$OUT/data/tree" --train-per-class "$PER_CLASS" \
        --val-per-class "$HOLD" --width "$W" --height "$H" --noise 40
    step build "$PY" -m imagenet52p.build_cli --root "$OUT/data/tree" --out "$OUT/data/build" --val-per-class "$HOLD" \
        --workers "$WORKERS" --quiet
fi
step loop-throughput-data "$PY" -m benchmark.throughput throughput --model "$MODELS" --device "$DEVICE" \
    --batch-size "$BS" --size "$SIZE" --repeats "$REPEATS" --workers "$WORKERS" --data "$OUT/data/build" \
    --out "$OUT/loop_throughput_data.json"
step speedup "$PY" scripts/bench_speedup.py --device "$DEVICE" "${SPEEDUP[@]}" --json "$OUT/speedup.json"
step stats "$PY" scripts/bench_stats.py --device "$DEVICE" "${STATS[@]}" --json "$OUT/stats.json"
step loader to "$OUT/loader.txt" "$PY" scripts/bench_loader.py "${LOADER[@]}" --json "$OUT/loader.json"
step detect "$PY" scripts/bench_detect.py --device "$DEVICE" "${DETECT[@]}" --quiet --out "$OUT/detect.json"

if [ ${#failed[@]} -gt 0 ]; then
    echo "bench_gpu: failed steps: ${failed[*]} (see the messages above; the other results are in $OUT)" >&2
    exit 1
fi
echo "bench_gpu: all results in $OUT" >&2
