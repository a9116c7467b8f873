#!/usr/bin/env bash
# The device check: on a machine with CUDA, the tests marked `gpu` and the benchmark at a
# realistic size (224 px, a convnext_tiny teacher, the six students at full size, 2
# repetitions), written as one JSON, $OUT/gpu-check.json; within 8 minutes on one H100.
#
#   OUT=gpu-check bash tests/gpu_check.sh                       # on the GPU machine
#   OUT=/tmp/check GPU_CHECK_DEVICE=cpu bash tests/gpu_check.sh # the same steps, toy size, on the CPU
#
# Packages the machine lacks (it may have only torch, timm, torchvision and h5py) are
# installed from wheels/, downloaded beforehand on a machine with a registry:
#   pip download --python-version 3.12 --only-binary=:all: --platform manylinux2014_x86_64 \
#     --platform manylinux_2_28_x86_64 -d wheels zarr luigi "dask[distributed]" safetensors tqdm matplotlib pytest
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
PY=${PYTHON:-$(command -v python3 || command -v python)}
mkdir -p "$OUT"
started=$(date +%s)

pip_rc=0
if ! "$PY" -c "import zarr, luigi, dask, distributed, safetensors, tqdm, matplotlib, pytest" 2>/dev/null; then
    PACKAGES=(zarr luigi "dask[distributed]" safetensors tqdm matplotlib pytest)
    # A system Python (PEP 668) takes them with this variable; a read-only one, into the user's site.
    export PIP_BREAK_SYSTEM_PACKAGES=1
    "$PY" -m pip install --no-index --find-links wheels "${PACKAGES[@]}" \
        > "$OUT/pip.log" 2>&1 ||
        "$PY" -m pip install --user --no-index --find-links wheels "${PACKAGES[@]}" >> "$OUT/pip.log" 2>&1
    pip_rc=$?
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$DEVICE" = cpu ]; then
    BENCH=(--device cpu --precision fp32 --image-size 32 --per-class 4 --views 2 --reps 1 --epochs 1
           --batch-size 16 --teacher-batch-size 32 --shard-rows 16 --threads 2 --teacher convnext_atto
           --students "vit_tiny_patch16_224 img_size=32 patch_size=8 embed_dim=32 depth=1 num_heads=2")
else
    BENCH=(--device "$DEVICE" --precision bf16 --image-size 224 --per-class 32 --views 8 --reps 2 --epochs 2
           --batch-size 64 --teacher-batch-size 256 --teacher convnext_tiny
           --students vit_tiny_patch16_224 pvt_v2_b0 convit_tiny mvitv2_tiny swin_tiny_patch4_window7_224
                      twins_pcpvt_small)
fi

# Only the files holding gpu tests: collecting the others would import what this machine lacks.
mapfile -t GPU_TESTS < <(grep -l "mark.gpu" tests/test_*.py)
timeout 120 "$PY" -m pytest -m gpu -q -rA -p no:cacheprovider "${GPU_TESTS[@]}" > "$OUT/pytest.log" 2>&1
pytest_rc=$?
bench_json=$(mktemp)
timeout 300 "$PY" -m pipeline.bench "${BENCH[@]}" --json "$bench_json" > "$OUT/bench.log" 2>&1
bench_rc=$?
# Reads of a store onto the device: raw copied, jpeg decoded there by nvJPEG (toy size on the CPU).
STORE_SIZE=$([ "$DEVICE" = cpu ] && echo 32 || echo 224)
store_json=$(mktemp)
timeout 120 "$PY" -m pipeline.bench.store --source synthetic --options train_per_class=16 test_per_class=0 \
    --sizes "$STORE_SIZE" --seconds 2 --device "$DEVICE" --json "$store_json" > "$OUT/store.log" 2>&1
store_rc=$?

"$PY" - "$OUT" "$DEVICE" "$pip_rc" "$pytest_rc" "$bench_rc" "$bench_json" "$store_rc" "$store_json" "$started" \
    "${BENCH[@]}" <<'EOF'
import json, platform, subprocess, sys, time
from pathlib import Path

out, device, pip_rc, pytest_rc, bench_rc, bench_json, store_rc, store_json, started, *bench_args = sys.argv[1:]
out, bench_json, store_json = Path(out), Path(bench_json), Path(store_json)


def tail(name: str, lines: int = 30) -> list[str]:
    path = out / name
    return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []


def smi() -> str:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


result = {
    "device": device, "gpus": smi(), "python": platform.python_version(), "host": platform.node(),
    "pip": {"rc": int(pip_rc), "log_tail": tail("pip.log", 10)},
    "pytest_gpu": {"rc": int(pytest_rc), "timed_out": pytest_rc in ("124", "137"),
                   "summary": tail("pytest.log", 1), "log_tail": tail("pytest.log")},
    "bench": {"rc": int(bench_rc), "timed_out": bench_rc in ("124", "137"), "args": bench_args,
              "result": json.loads(bench_json.read_text()) if bench_json.stat().st_size else None,
              "log_tail": tail("bench.log")},
    "store": {"rc": int(store_rc), "result": json.loads(store_json.read_text()) if store_json.stat().st_size else None,
              "log_tail": tail("store.log")},
    "wall_seconds": round(time.time() - int(started)),
}
result["ok"] = all(result[step]["rc"] == 0 for step in ("pip", "pytest_gpu", "bench", "store"))
# The teacher pass's figure at a glance: warm passes over the bare forward; the first, untimed pass apart.
bench = result["bench"]["result"] or {}
result["teacher_pass"] = {"ratio": bench.get("metrics", {}).get("teacher_pass_ratio"),
                          "warmup_seconds": bench.get("timings", {}).get("teacher_pass", {}).get("teacher_pass_warmup")}
(out / "gpu-check.json").write_text(json.dumps(result, indent=1))
ratio = (result["teacher_pass"]["ratio"] or {}).get("median")
print(f"{out / 'gpu-check.json'}: ok={result['ok']} in {result['wall_seconds']} s; "
      f"pytest: {' '.join(result['pytest_gpu']['summary'])}; bench rc {bench_rc}; "
      f"teacher_pass_ratio {ratio} (warm-up pass apart: {result['teacher_pass']['warmup_seconds']} s); "
      f"store reads img/s onto {device}: {[(r['format'], r.get('img_per_s_device')) for r in (result['store']['result'] or {}).get('results', [])]}")
sys.exit(0 if result["ok"] else 1)
EOF
check_rc=$?
rm -f "$bench_json" "$store_json"
exit $check_rc
