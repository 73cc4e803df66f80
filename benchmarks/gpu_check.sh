#!/usr/bin/env bash
# The GPU session's checks, in one call, run from the repository root:
#
#     bash benchmarks/gpu_check.sh [BUDGET_S] [--rehearse]
#
# Within BUDGET_S seconds (default 540), each stage under its own time limit so that one
# stage's failure or hang does not eat the others' time:
#   0. nvidia-smi and torch.cuda.is_available() (stops here without CUDA);
#   1. pytest -q tests/test_step.py (the captured step's CUDA tests);
#   2. benchmarks/train.py --device cuda --epochs 4 --models 1 25 125 --methods svae_plus
#      (captured step), --models 125 --mixed (one stack of every method, stack_methods), then
#      --models 1 --cuda-graph off (the eager step);
#   3. benchmarks/iwelbo.py --device cuda --particles 1000 5000;
#   4. with the time left, the paper grid with config/gpu.yaml (each dataset's models in one
#      stack and process, the GPU jobs one at a time: --resources gpu=1; snakemake, 16 cores,
#      results in /tmp/paper_gpu), under timeout and
#      /usr/bin/time -v.
# Every stage's output is tee'd to "$OUT/<stage>.log" (OUT: set by the device machine, else
# ./gpu_out); "$OUT/summary.tsv" holds each stage's exit status and seconds (124: its time
# limit). Wheels carried in .whl/ (or $WHEELS; packages the device image lacks: anndata,
# snakemake, ...: benchmarks/device_wheels.sh) are installed into /tmp/site first. At most 7
# files are written under $OUT (8 come back from a device call).
#
# --rehearse: the same stages on CPU, small (2 epochs, 1 and 2 models, 10 particles; the grid as
# a dry run), to check the script and every command's flags on a machine without a GPU.
set -uo pipefail

BUDGET=540
REHEARSE=0
for arg in "$@"; do
    case "$arg" in
        --rehearse) REHEARSE=1 ;;
        *[!0-9]*|'') echo "usage: $0 [BUDGET_S] [--rehearse]" >&2; exit 2 ;;
        *) BUDGET=$arg ;;
    esac
done
OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
START=$SECONDS

WHEELS=${WHEELS:-.whl}
if (( ! REHEARSE )) && compgen -G "$WHEELS/*.whl" > /dev/null; then  # benchmarks/device_wheels.sh
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
        2>&1 | tee "$OUT/gpu.log"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    export PATH=/tmp/site/bin:$PATH
fi
export PYTHONPATH=$PWD/workflow/scripts${PYTHONPATH:+:$PYTHONPATH}

printf 'stage\trc\tseconds\n' > "$OUT/summary.tsv"

left() { echo $(( BUDGET - (SECONDS - START) )); }

# stage NAME CAP COMMAND...: run COMMAND under timeout min(CAP, time left), output to $OUT/NAME.log
stage() {
    local name=$1 cap=$2
    shift 2
    local limit
    limit=$(left)
    (( limit > cap )) && limit=$cap
    if (( limit < 5 )); then
        echo "== $name: skipped, $(left) s left" | tee -a "$OUT/$name.log"
        printf '%s\tskipped\t0\n' "$name" >> "$OUT/summary.tsv"
        return 0
    fi
    echo "== $name (limit ${limit} s, $(left) s of the budget left): $*" | tee ${stage_append:+-a} "$OUT/$name.log"
    local t0=$SECONDS rc
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/$name.log"
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$OUT/summary.tsv"
    return 0
}

if (( REHEARSE )); then
    DEVICE=cpu
    MODELS=(1 2); EPOCHS=2; PARTICLES=(10); GRID=(-n --quiet rules)
    echo "rehearsal on CPU" | tee -a "$OUT/gpu.log"
else
    DEVICE=cuda
    MODELS=(1 25 125); EPOCHS=4; PARTICLES=(1000 5000); GRID=()
    { nvidia-smi; $PY -c 'import torch; print(torch.__version__, torch.cuda.is_available())'; } 2>&1 | tee -a "$OUT/gpu.log"
    if ! $PY -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
        echo "no CUDA device: stopping" | tee -a "$OUT/gpu.log"
        exit 3
    fi
fi

stage tests 120 $PY -m pytest -q -p no:cacheprovider tests/test_step.py
stage train_captured 150 $PY benchmarks/train.py --device $DEVICE --epochs $EPOCHS --models "${MODELS[@]}" \
    --methods svae_plus --cuda-graph on
# one stack of every method (stack_methods), in the same log
stage_append=1 stage train_captured 60 $PY benchmarks/train.py --device $DEVICE --epochs $EPOCHS \
    --models "${MODELS[-1]}" --mixed --cuda-graph on
stage train_eager 60 $PY benchmarks/train.py --device $DEVICE --epochs $EPOCHS --models 1 \
    --methods svae_plus --cuda-graph off
stage iwelbo 90 $PY benchmarks/iwelbo.py --device $DEVICE --particles "${PARTICLES[@]}"
# The grid: whatever is left, less 10 s to write the summary.
TIME=(/usr/bin/time -v)
[ -x /usr/bin/time ] || TIME=()
GRID_CAP=$(( $(left) - 10 ))
stage grid "$GRID_CAP" "${TIME[@]}" $PY -m snakemake --cores 16 --resources gpu=1 --keep-going --configfile config/paper.yaml config/gpu.yaml \
    --config results=/tmp/paper_gpu device=$DEVICE "enrichment={'methods': []}" "${GRID[@]}" -- simulation
if [ -d /tmp/paper_gpu ]; then  # what the grid finished, for the record (at most 8 files come back)
    echo "== files of the grid's job benchmarks:" >> "$OUT/grid.log"
    find /tmp/paper_gpu -path '*benchmark*' -type f 2>/dev/null | head -300 >> "$OUT/grid.log"
fi
echo "== total $((SECONDS - START)) s of $BUDGET" | tee -a "$OUT/summary.tsv"
cat "$OUT/summary.tsv"
