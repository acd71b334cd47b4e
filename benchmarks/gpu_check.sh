#!/usr/bin/env bash
# The one script that verifies classy_fast on a GPU machine (H100/H200 class, Python with a CUDA
# torch, nvcc and ninja; no network needed). It builds the extension in place, reports the
# environment, runs the CUDA tests and the GPU benchmarks, and prints ONE summary table last.
#
#   bash benchmarks/gpu_check.sh [LOG_DIR]        # LOG_DIR default: $OUT, else ./gpu_check_logs
#
# Environment: PYTHON (default python3), TORCH_CUDA_ARCH_LIST (default 9.0), MAX_JOBS (16),
# CUDA_HOME (found from nvcc when unset), GPU_CHECK_SANITIZER=1 (compute-sanitizer memcheck on
# a small CUDA test subset), GPU_CHECK_SKIP (comma list of step names to skip), GPU_CHECK_BUDGET_S (total time budget, default 460 s: every step's
# timeout is cut to what is left, so the script ends within ~8 minutes), GPU_CHECK_TAR=1 (pack
# the step logs into one tarball: some runners return only a few files).
#
# Every step runs under `timeout`, logs to LOG_DIR/NN_name.log, and a failing step does not stop
# the others; the exit status is non-zero if any step failed. A step stopped because the budget
# ran out (not by its own timeout) shows as CUT and is not a failure. A step's "key figures" are the
# last line its log prints starting with "KEY:", else pytest's summary line, else its last line.
#
# Adding a step: one line, `STEP_TIMEOUT=<seconds> step <name> <command...>` (name: letters,
# digits, '_'). Keep the total of log files small (runners may return at most 8 files).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LOG_DIR="${1:-${OUT:-$ROOT/gpu_check_logs}}"
mkdir -p "$LOG_DIR"
LOG_DIR="$(cd "$LOG_DIR" && pwd)"

PY="${PYTHON:-python3}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"
export CLASSY_FAST_CUDA=1  # fail the build rather than silently produce a CPU-only extension
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export PYTHONFAULTHANDLER=1  # a crash in native code still prints the Python stack
if [ -z "${CUDA_HOME:-}" ]; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then
    CUDA_HOME=/usr/local/cuda
  elif command -v nvcc >/dev/null 2>&1; then  # <toolkit>/bin/nvcc, possibly through a symlink
    CUDA_HOME="$(cd "$(dirname "$(readlink -f "$(command -v nvcc)")")/.." && pwd)"
  fi
  [ -n "${CUDA_HOME:-}" ] && export CUDA_HOME
fi
[ -n "${CUDA_HOME:-}" ] && export PATH="$CUDA_HOME/bin:$PATH"

START=$(date +%s)
DEADLINE=$((START + ${GPU_CHECK_BUDGET_S:-460}))
STEP_NAMES=()
STEP_STATUS=()
STEP_SECONDS=()
STEP_KEYS=()
FAILED=0
CUT=0

key_figures() {  # $1: log file
  local key
  key="$(grep -E '^KEY:' "$1" 2>/dev/null | tail -n 1 | sed 's/^KEY: *//')"
  [ -z "$key" ] && key="$(grep -E '[0-9]+ (passed|failed|error|errors|skipped|deselected)' "$1" 2>/dev/null | grep -E ' in [0-9.]+s' | tail -n 1 | sed 's/=//g; s/^ *//; s/ *$//')"
  [ -z "$key" ] && key="$(grep -v -e '^[[:space:]]*$' -e '^== \[' "$1" 2>/dev/null | tail -n 1)"
  [ -z "$key" ] && key="(no output)"
  printf '%s' "${key:0:320}"
}

record() {  # name status seconds key
  STEP_NAMES+=("$1"); STEP_STATUS+=("$2"); STEP_SECONDS+=("$3"); STEP_KEYS+=("$4")
}

# step NAME CMD... : run CMD under timeout (STEP_TIMEOUT, default 120 s, cut to the budget left).
step() {
  local name="$1"; shift
  local idx log now left limit t0 rc status secs
  if [[ ",${GPU_CHECK_SKIP:-}," == *",$name,"* ]]; then
    record "$name" "SKIP" 0 "in GPU_CHECK_SKIP"
    return 0
  fi
  idx=$(printf '%02d' $(( ${#STEP_NAMES[@]} + 1 )))
  log="$LOG_DIR/${idx}_${name}.log"
  now=$(date +%s)
  left=$((DEADLINE - now))
  limit="${STEP_TIMEOUT:-120}"
  local cut=0
  if [ "$left" -lt "$limit" ]; then limit="$left"; cut=1; fi
  if [ "$limit" -lt 10 ]; then
    echo "skipped: time budget used up" > "$log"
    record "$name" "SKIP" 0 "out of time budget (GPU_CHECK_BUDGET_S)"
    return 0
  fi
  echo "== [$idx] $name (timeout ${limit}s): $*" | tee "$log"
  t0=$(date +%s)
  if declare -F "$1" >/dev/null; then  # a shell function (exported below): run it in a child bash
    timeout --kill-after=10 "$limit" bash -c '"$@"' _ "$@" >> "$log" 2>&1
  else
    timeout --kill-after=10 "$limit" "$@" >> "$log" 2>&1
  fi
  rc=$?
  secs=$(( $(date +%s) - t0 ))
  if [ "$rc" -eq 0 ]; then
    status="ok"
  elif { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && [ "$cut" -eq 1 ]; then
    status="CUT"; CUT=1  # stopped by GPU_CHECK_BUDGET_S, not by its own timeout: not a failure
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    status="TIMEOUT"; FAILED=1
  else
    status="FAIL($rc)"; FAILED=1
  fi
  echo "   -> $status in ${secs}s ($(key_figures "$log"))"
  record "$name" "$status" "$secs" "$(key_figures "$log")"
}

skip_step() {  # name reason
  record "$1" "SKIP" 0 "$2"
}

# ---- step bodies ----

build_extension() {
  # In place: needs neither pip nor network (pip may refuse a system Python, PEP 668).
  echo "CUDA_HOME=${CUDA_HOME:-unset} TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
  "$PY" -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', sys.version.split()[0])"
  local t0=$(date +%s) cxx ok=0
  # An error raised in the extension must arrive as a Python RuntimeError. With Python's default
  # link line (x86_64-linux-gnu-gcc -shared ...) a throw crashed the process on the GPU machine of
  # 2026-11-26, and linking with the C++ driver itself fixed it: so build that way first (one build,
  # not two) and fall back to Python's default toolchain only if the check fails.
  for cxx in /usr/bin/g++ default; do
    [ "$cxx" = default ] || [ -x "$cxx" ] || continue
    rm -rf build classy_fast/_C*.so
    if [ "$cxx" = default ]; then
      echo "building with Python's default toolchain"
      "$PY" setup.py build_ext --inplace || return 1
    else
      echo "building with CXX=$cxx LDSHARED='$cxx -shared'"
      CC="${cxx%/*}/gcc" CXX="$cxx" LDSHARED="$cxx -shared" "$PY" setup.py build_ext --inplace || return 1
    fi
    compiler_report
    if exceptions_propagate; then ok=1; echo "built with $cxx: exceptions propagate"; break; fi
    echo "exceptions from the extension built with $cxx crash the process"
  done
  [ "$ok" = 1 ] || { echo "KEY: errors thrown by the extension crash the process (see log)"; return 1; }
  "$PY" -c "import torch, classy_fast._C as C; assert C.cuda_compiled, 'built without CUDA kernels'; print('KEY: built in', $(( $(date +%s) - t0 )), 's, CUDA archs', C.cuda_archs_raw.replace('_', ';'))"
}

exceptions_propagate() {  # a TORCH_CHECK in the CPU kernel must raise RuntimeError, not kill the process
  "$PY" -X faulthandler -c "
import torch
from classy_fast.ops import cross_entropy
try:
    cross_entropy(torch.zeros(2, 3), torch.tensor([0, 5]), impl='fused')
except RuntimeError as e:
    print('exception propagated:', str(e).splitlines()[0][:100])
else:
    raise SystemExit('no error raised for an out-of-range label')
"
}

compiler_report() {  # which C++ runtime the extension and the process use
  echo "--- compilers: CXX=${CXX:-unset} CC=${CC:-unset}; c++ is $(command -v c++), g++ is $(command -v g++)"
  for c in c++ g++ /usr/bin/g++ /opt/gcc/bin/g++; do command -v "$c" >/dev/null 2>&1 && echo "$c: $("$c" --version | head -1)"; done
  "$PY" -c "import sysconfig; print('python CXX:', sysconfig.get_config_var('CXX'), '| LDSHARED:', sysconfig.get_config_var('LDSHARED'))"
  ldd classy_fast/_C*.so 2>/dev/null | grep -E 'stdc|gcc_s|libc10|libtorch_cpu' || true
  "$PY" -c "
import torch, classy_fast._C
print('loaded:', sorted({l.split()[-1] for l in open('/proc/self/maps') if 'libstdc++' in l or 'libgcc_s' in l}))"
}

environment_info() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
  "$PY" -m classy_fast.info || return 1
  "$PY" - <<'EOF'
import torch
from classy_fast.ops import extension_info
info = extension_info()
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
# The extension links libgomp (-fopenmp) expecting torch's own copy under the same soname: more
# than one OpenMP runtime in the process means torch.set_num_threads no longer governs our loops.
gomp = sorted({line.split()[-1] for line in open("/proc/self/maps") if "gomp" in line})
print("OpenMP runtimes loaded:", gomp)
print(f"KEY: {name}, torch {torch.__version__}, CUDA kernels {'yes' if info['cuda_kernels'] else 'NO'} "
      f"({';'.join(info['cuda_archs']) or '-'}), OpenMP runtimes {len(gomp)}")
raise SystemExit(0 if torch.cuda.is_available() and info["cuda_kernels"] else 1)
EOF
}

# Fused vs torch on CUDA without pytest (so the kernels are checked even where pytest is absent).
cuda_smoke() {
  "$PY" - <<'EOF'
import torch, torch.nn.functional as F
from classy_fast.ops import cross_entropy, mixup_cross_entropy
torch.manual_seed(0)
checks = 0
tol = {torch.float32: 1e-4, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    for b, c in ((1, 1), (3, 7), (17, 1025), (64, 1000), (5, 21843), (2, 128000), (300, 33)):
        x = (torch.randn(b, c, device="cuda") * 3).to(dtype).requires_grad_()
        t = torch.randint(0, c, (b,), device="cuda")
        t[::4] = -100
        xr = x.detach().float().requires_grad_()
        loss = cross_entropy(x, t, label_smoothing=0.1, impl="fused")
        ref = F.cross_entropy(xr, t, label_smoothing=0.1)
        loss.backward(); ref.backward()
        torch.testing.assert_close(loss, ref, rtol=2e-5, atol=2e-5, equal_nan=True)
        torch.testing.assert_close(x.grad.float(), xr.grad.to(dtype).float(), rtol=tol[dtype], atol=1e-6)
        soft = torch.softmax(torch.randn(b, c, device="cuda"), 1)
        torch.testing.assert_close(cross_entropy(x, soft, label_smoothing=0.2, impl="fused"),
                                   F.cross_entropy(xr, soft, label_smoothing=0.2), rtol=2e-5, atol=2e-5)
        ta, tb = t.clamp(min=0), torch.randint(0, c, (b,), device="cuda")
        lam = torch.tensor(0.3, device="cuda")
        torch.testing.assert_close(mixup_cross_entropy(x, ta, tb, lam, label_smoothing=0.1, impl="fused"),
                                   0.3 * F.cross_entropy(xr, ta, label_smoothing=0.1)
                                   + 0.7 * F.cross_entropy(xr, tb, label_smoothing=0.1), rtol=2e-5, atol=2e-5)
        checks += 3
bad = cross_entropy(torch.randn(2, 5, device="cuda"), torch.tensor([1, 9], device="cuda"), reduction="none")
torch.cuda.synchronize()
assert torch.isfinite(bad[0]) and torch.isnan(bad[1]), bad
print(f"KEY: {checks} fused-vs-torch checks passed (fp32/bf16/fp16, C up to 128000); bad label -> NaN row")
EOF
}

run_pytest() {  # args for pytest
  if ! "$PY" -c "import pytest" >/dev/null 2>&1; then
    echo "KEY: pytest is not installed for $PY (no network: bring a pytest wheel); see cuda_smoke"
    return 1
  fi
  local workers=()
  # Worker processes: a crash in native code loses one test (xdist reports it) instead of the whole step.
  "$PY" -c "import xdist" >/dev/null 2>&1 && workers=(-n 4 --dist loadfile)
  "$PY" -m pytest -q -p no:cacheprovider -rfEs "${workers[@]}" "$@"
  local rc=$?
  if [ "$rc" -eq 5 ]; then echo "KEY: no tests selected"; return 0; fi  # nothing marked there yet
  return "$rc"
}

find_sanitizer() {  # prints compute-sanitizer's path, or fails
  local cs
  cs="$(command -v compute-sanitizer || true)"
  [ -z "$cs" ] && [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/compute-sanitizer" ] && cs="$CUDA_HOME/bin/compute-sanitizer"
  [ -n "$cs" ] && echo "$cs"
}

sanitizer_subset() {
  local cs
  cs="$(find_sanitizer)" || { echo "KEY: compute-sanitizer not found"; return 1; }
  # No caching allocator: every tensor is its own allocation, so an out-of-bounds access
  # can't hide inside a pooled block.
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$cs" --tool memcheck --error-exitcode 99 --print-limit 20 \
    "$PY" -m pytest -q -p no:cacheprovider tests/ops/test_cross_entropy.py tests/ops/test_cross_entropy_row_paths.py \
    -m cuda -k "misaligned or empty_batch or out_of_range or (B17xC1025 and float32) or 128k or bad_labels or 16_byte_phase or (reduce_loss_rows_on and not 4000000)" \
    || return 1
  echo "KEY: memcheck clean on the cross-entropy CUDA subset"
}

run_benchmarks() {
  "$PY" benchmarks/bench_cross_entropy.py --device cuda
}

# classy_fast.bench: hand-written baseline vs the task eager vs the whole-step CUDA graph (one process).
train_bench() {  # name, then bench args
  local name="$1" rc; shift
  # The JSON is rewritten after every mode, so the figures of the modes that finished survive a
  # later mode's failure (exit 1, the mode's error in the JSON).
  "$PY" -m classy_fast.bench --device cuda "$@" --json "$LOG_DIR/bench_$name.json"
  rc=$?
  [ -f "$LOG_DIR/bench_$name.json" ] || return 1
  "$PY" - "$LOG_DIR/bench_$name.json" <<'EOF' || return 1
import json, sys
r = json.load(open(sys.argv[1]))["results"]
def fig(m, v):
    if "error" in v:
        return f"{m} FAILED ({v['error'][:60]})"
    ratio = f"{v['ratio_to_baseline']:.2f}x" if v.get("ratio_to_baseline") else "-"
    return (f"{m} {v['images_per_sec']:.0f} img/s ({ratio}"
            + (f", warm-up {v['warmup_s']:.0f} s" if v.get("warmup_s", 0) > 5 else "") + ")")
print("KEY: " + ", ".join(fig(m, v) for m, v in r.items()))
EOF
  return "$rc"
}

# The speed run: full Fashion-MNIST, GPU-resident, graphed, to >= 93% test top-1.
speedrun() {
  local root="${FASHION_MNIST_DIR:-}" d
  for d in "$ROOT/.gpu/fashion-mnist" /usr/share/datasets/fashion-mnist; do
    [ -z "$root" ] && [ -d "$d" ] && root="$d"
  done
  if [ -z "$root" ]; then echo "KEY: no Fashion-MNIST IDX files (set FASHION_MNIST_DIR)"; return 1; fi
  "$PY" -m classy_fast.train --config configs/fashion_mnist_speedrun.yaml --set "data.root=$root" \
    --output-dir /tmp/classy_fast_speedrun || return 1
  cp /tmp/classy_fast_speedrun/metrics.jsonl "$LOG_DIR/speedrun_metrics.jsonl"
  "$PY" - /tmp/classy_fast_speedrun/metrics.jsonl <<'EOF'
import json, sys
phases = [json.loads(l) for l in open(sys.argv[1])]
tests = [p for p in phases if p["phase_type"] == "test"]
hit = next((p for p in tests if "time_to_target_seconds" in p), None)
best = max(p["top1"] for p in tests)
trains = [p["images_per_sec"] for p in phases if p["phase_type"] == "train"]
ips = sorted(trains)[len(trains) // 2]
if hit:
    print(f"KEY: {hit['top1']:.4f} test top-1 at epoch {hit['epoch'] + 1} after {hit['time_to_target_seconds']:.1f} s; best {best:.4f}; median train {ips:.0f} img/s")
else:
    print(f"KEY: target not reached; best {best:.4f}; median train {ips:.0f} img/s")
    raise SystemExit(1)
EOF
}

# Data pipelines: nvJPEG + fused crop kernel vs torchvision's CPU loader (and DALI GPU where
# installed) on a small generated JPEG folder (PIL gradients+shapes when scikit-image is absent).
data_bench() {
  "$PY" benchmarks/bench_data.py --device cuda --images "${GPU_CHECK_DATA_IMAGES:-2048}" \
    --workers "$(nproc)" --root "${TMPDIR:-/tmp}/classy_fast_bench_gpu"
}

# memcheck over the fused crop kernel's CUDA tests (boxes clamped, several launches, HWC views).
data_sanitizer() {
  local cs
  cs="$(find_sanitizer)" || { echo "KEY: compute-sanitizer not found"; return 1; }
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$cs" --tool memcheck --error-exitcode 99 --print-limit 20 \
    "$PY" -m pytest -q -p no:cacheprovider tests/data/test_crop_resize_op.py -m cuda || return 1
  echo "KEY: memcheck clean on the crop_resize_normalize CUDA tests"
}

# DDP over NCCL on one GPU: torchrun with world size 1 and distributed.single_process_ddp, so the
# process group, DDP wrapper (bf16 gradient compression), SyncBatchNorm and NCCL all-reduces of
# the multi-GPU path run on every GPU machine. Synthetic data, 2 short epochs.
ddp_nccl_1gpu() {
  local out=/tmp/classy_fast_ddp_nccl
  rm -rf "$out"
  "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m classy_fast.train \
    --device cuda --epochs 2 --output-dir "$out" --set data.name=synthetic \
    --set data.synthetic_train_size=4096 --set data.synthetic_test_size=1024 --set data.batch_size=256 \
    --set distributed.single_process_ddp=true --set distributed.sync_batchnorm=true \
    --set distributed.grad_compression=bf16 --set distributed.timeout_seconds=120 \
    --set hooks.progress_bar=false > "$out.log" 2>&1
  local rc=$?
  cat "$out.log"
  [ "$rc" -eq 0 ] || return "$rc"
  grep -q "backend nccl" "$out.log" || { echo "KEY: the process group did not use NCCL"; return 1; }
  "$PY" - "$out/metrics.jsonl" <<'EOF'
import json, sys
phases = [json.loads(l) for l in open(sys.argv[1])]
train = [p for p in phases if p["phase_type"] == "train"][-1]
test = [p for p in phases if p["phase_type"] == "test"][-1]
print(f"KEY: NCCL DDP world 1: test top1 {test['top1']:.3f}, train {train['images_per_sec']:.0f} img/s")
EOF
}

# ---- fused optimizers (classy_fast/optim, csrc/*fused_*, multi_tensor_l2norm, ema_update) ----
# CUDA tests: trajectories vs torch / float64 paper references, GradScaler skip, launch splitting
# over many, large and misaligned tensors, one launch for ResNet-50's 161 tensors, CUDA-graph
# replay == eager. Then fused vs torch foreach/fused on ResNet-50's parameter set.
# bench_optim_host: the eager step's host path (161 tiny tensors), which bounds the eager figures.
optim_bench() {
  "$PY" benchmarks/bench_optim.py --device cuda || return 1
  "$PY" benchmarks/bench_optim_host.py --device cuda --repeats 5 --steps 200
}
# Not the launch-splitting test under memcheck: its 85 M-element tensor (needed to span two
# launches) did not finish in a 183 s slot; its results are checked against the reference anyway.
optim_sanitizer() {
  local cs
  cs="$(find_sanitizer)" || { echo "KEY: compute-sanitizer not found"; return 1; }
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$cs" --tool memcheck --error-exitcode 99 --print-limit 20 \
    "$PY" -m pytest -q -p no:cacheprovider tests/optim/test_cuda.py \
    -k "resnet50 or (graph_replay and fused) or ema_cuda or match_cpu_kernels" || return 1
  echo "KEY: memcheck clean on the optimizer CUDA subset"
}
# ---- the steps ----
# Order: build and a correctness smoke check, the op benchmarks, the CUDA tests, the training
# benchmarks, then the (slow) sanitizer runs, so a tight GPU_CHECK_BUDGET_S cuts the least
# important steps.

export PY
export -f find_sanitizer build_extension exceptions_propagate compiler_report environment_info cuda_smoke run_pytest sanitizer_subset run_benchmarks train_bench speedrun
export -f ddp_nccl_1gpu
export -f data_bench data_sanitizer
export -f optim_bench optim_sanitizer
export LOG_DIR ROOT

STEP_TIMEOUT=360 step build build_extension
STEP_TIMEOUT=60 step info environment_info
STEP_TIMEOUT=120 step cuda_smoke cuda_smoke
# The op benchmarks right after the smoke check (a minute together): their figures are the open
# targets, and a tight budget must not cut them. The loss kernels are checked by cuda_smoke first;
# the optimizer tests below check the kernels bench_optim times.
STEP_TIMEOUT=150 step bench_cross_entropy run_benchmarks
STEP_TIMEOUT=120 step bench_optim optim_bench
STEP_TIMEOUT=240 step ops_tests run_pytest tests/ops
STEP_TIMEOUT=240 step cuda_tests run_pytest tests -m cuda --ignore=tests/ops --ignore=tests/data --ignore=tests/optim
STEP_TIMEOUT=180 step optim_cuda_tests run_pytest tests/optim -m cuda
STEP_TIMEOUT=120 step data_cuda_tests run_pytest tests/data -m cuda
STEP_TIMEOUT=120 step ddp_nccl_1gpu ddp_nccl_1gpu
STEP_TIMEOUT=150 step speedrun speedrun
# The training benchmarks (each times its own baseline in the same process). ResNet-50 with the
# compiled forward/backward inside the whole-step graph (inductor fuses BatchNorm, ReLU and the
# residual adds; a minute or two of cold compilation) is a step of its own, so a budget cut there
# loses none of the other figures.
STEP_TIMEOUT=120 step bench_resnet50 train_bench resnet50 --model resnet50 --batch-size 256 --image-size 224 --amp bf16 --channels-last
STEP_TIMEOUT=90 step bench_resnet18_32px train_bench resnet18_32px --model resnet18 --batch-size 512 --image-size 32 --num-classes 10 --amp bf16 --channels-last
STEP_TIMEOUT=270 step bench_resnet50_compile train_bench resnet50_compile --model resnet50 --batch-size 256 --image-size 224 --amp bf16 --channels-last --compile --modes baseline,compile_graphs
STEP_TIMEOUT=150 step bench_data data_bench
if [ "${GPU_CHECK_SANITIZER:-0}" = "1" ]; then
  STEP_TIMEOUT=240 step sanitizer sanitizer_subset
  STEP_TIMEOUT=240 step sanitizer_optim optim_sanitizer
  STEP_TIMEOUT=120 step sanitizer_data data_sanitizer
else
  skip_step sanitizer "set GPU_CHECK_SANITIZER=1 to run"
fi

# ---- summary (last) ----

TOTAL=$(( $(date +%s) - START ))
{
  echo
  echo "classy_fast GPU check: $(date -u '+%Y-%m-%d %H:%M:%SZ'), ${TOTAL}s, logs in $LOG_DIR"
  printf '%-24s %-10s %6s  %s\n' "step" "status" "secs" "key figures"
  printf '%-24s %-10s %6s  %s\n' "------------------------" "----------" "------" "-----------"
  for i in "${!STEP_NAMES[@]}"; do
    printf '%-24s %-10s %6s  %s\n' "${STEP_NAMES[$i]}" "${STEP_STATUS[$i]}" "${STEP_SECONDS[$i]}" "${STEP_KEYS[$i]}"
  done
  if [ "$FAILED" -ne 0 ]; then echo "RESULT: FAILED"
  elif [ "$CUT" -ne 0 ]; then echo "RESULT: OK so far (steps marked CUT or SKIP ran out of GPU_CHECK_BUDGET_S)"
  else echo "RESULT: OK"; fi
} | tee "$LOG_DIR/summary.txt"

if [ "${GPU_CHECK_TAR:-0}" = "1" ]; then
  # Inside LOG_DIR: a runner returns only what is under the directory it named.
  tar -C "$LOG_DIR" --exclude=gpu_check_logs.tar.gz -czf "$LOG_DIR/gpu_check_logs.tar.gz" . 2>/dev/null \
    && echo "packed logs: $LOG_DIR/gpu_check_logs.tar.gz"
fi
exit "$FAILED"
