#!/usr/bin/env bash
# Fetch and run the paper's own code (Lorenzen, Igel & Nielsen, ICLR 2022,
# github.com/StephanLorenzen/ExactIBAnalysisInQNNs, commit 2d426df) for the SYN curves that
# benchmarks/paper_code/compare.py sets next to ours. Nothing of the paper code enters this
# repository: it lives in PAPER_CODE, its TensorFlow venv in TF_VENV, its output in OUT.
#
#   benchmarks/paper_code/run_paper_code.sh setup               # clone + venv (once)
#   benchmarks/paper_code/run_paper_code.sh run ACT REP [EPOCHS] # one repetition, e.g. relu 1
#   benchmarks/paper_code/run_paper_code.sh queue "tanh:1 relu:2 ..." [EPOCHS] [STOP_HHMM_UTC]
#
# ACT is tanh or relu, REP 1..50 (the paper's repetition REP, seed 1000 + REP - 1), EPOCHS
# 8000 (the paper's; MI every 5 epochs). Output: OUT/SYN-<Act>/8/{mi,accuracy,activations,qrange}/,
# the layout of the paper's out/quantized/SYN-<Act>/8/. Each run is niced (nice -n 10) and
# single-threaded; run at most two queues at a time on a 2-core machine.
set -euo pipefail
PAPER_CODE=${PAPER_CODE:-../paper-code}
TF_VENV=${TF_VENV:-../tf-venv}
OUT=${OUT:-../paper-out}
DATA=${DATA:-../shared/data/var_u.mat}
BITS=${BITS:-8}
here=$(cd "$(dirname "$0")" && pwd)

setup() {
  if [ ! -d "$PAPER_CODE/IB" ]; then
    git clone https://github.com/StephanLorenzen/ExactIBAnalysisInQNNs "$PAPER_CODE"
    git -C "$PAPER_CODE" checkout 2d426df9d73fd48849e9b6c7c5a41f8285f374d3
  fi
  # TF 2.21 + TF-MOT 0.8.1 need Keras 2 (tf_keras, selected by TF_USE_LEGACY_KERAS=1 below).
  [ -x "$TF_VENV/bin/python" ] || python3 -m venv "$TF_VENV"
  "$TF_VENV/bin/pip" install tensorflow-cpu tensorflow-model-optimization tf_keras pandas scipy scikit-learn
  # the paper repository's own copy of the data must be the file we point it at
  cmp "$PAPER_CODE/IB/data/var_u.mat" "$DATA" && echo "var_u.mat: identical to $DATA"
}

run() {  # run ACT REP [EPOCHS]
  local act=$1 rep=$2 epochs=${3:-8000} name
  name=SYN-$([ "$act" = tanh ] && echo Tanh || echo ReLU)
  TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 OMP_NUM_THREADS=1 \
  TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 \
    nice -n 10 "$TF_VENV/bin/python" "$here/run_one.py" --paper-code "$PAPER_CODE" \
      --act "$act" --bits "$BITS" --rep "$rep" --epochs "$epochs" --data "$DATA" \
      --out "$OUT/$name/$BITS/"
}

queue() {  # queue "act:rep act:rep ..." [EPOCHS] [STOP_HHMM_UTC]: runs one after another,
           # starting none that would end (at the last run's duration) after STOP
  local epochs=${2:-8000} stop=${3:-} last=0 t0
  for job in $1; do
    if [ -n "$stop" ] && [ $(( $(date -u +%s) + last )) -gt "$(date -u -d "$stop" +%s)" ]; then
      echo "$(date -u +%T) skip $job: would end after $stop UTC"; continue
    fi
    t0=$(date +%s); echo "$(date -u +%T) start $job"
    run "${job%%:*}" "${job##*:}" "$epochs"
    last=$(( $(date +%s) - t0 )); echo "$(date -u +%T) end $job (${last}s)"
  done
}

cmd=${1:-}; shift || true
case "$cmd" in
  setup) setup ;;
  run) run "$@" ;;
  queue) queue "$@" ;;
  *) sed -n 2,16p "$0"; exit 2 ;;
esac
