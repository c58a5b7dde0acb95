#!/usr/bin/env bash
# One prepared training run for a GPU machine (the device tool's, or any CUDA
# host): ingest an image folder, or a .tar.gz holding one, as task TASK; train
# every model of the task (`knowcache build-models --train-only`); pack the
# work folder into $OUT/TASK-work.tar. Export, calibration and the staged
# program then run on the CPU, where ExecuTorch is:
#   tar -xf TASK-work.tar -C out/work
#   knowcache export --task TASK --work out/work/TASK --staged
#
#   scripts/gpu_train.sh TASK SOURCE TASK_FILE [build-models options, e.g. --device cuda]
#
# It runs under the machine's own python3 (torch, click, numpy, pillow), with
# host_tools on PYTHONPATH: training needs neither ExecuTorch nor the C++
# runtime (tests/test_image_tasks.py runs this script with both unimportable).
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 TASK SOURCE TASK_FILE [build-models options]" >&2
  exit 2
fi
task=$1 src=$2 task_file=$3
shift 3
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$here/host_tools${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export KNOWCACHE_DATA_DIR="${KNOWCACHE_DATA_DIR:-$here/out/data}"
py=${PYTHON:-python3}
out=${OUT:-$here/out/gpu}
work="$here/out/work/$task"
mkdir -p "$out"
if [[ -f $src ]]; then
  unpacked="$here/out/unpacked/$task"
  rm -rf "$unpacked" && mkdir -p "$unpacked"
  tar -xzf "$src" -C "$unpacked"
  train=$(find "$unpacked" -maxdepth 3 -type d -name train | head -n 1)
  if [[ -z $train ]]; then
    echo "$src holds no train/ folder: an image task needs train/<class>/*.jpg|png" >&2
    exit 2
  fi
  src=$(dirname "$train")
fi
"$py" -m knowcache.cli data images --folder "$src" --task "$task" --task-file "$task_file"
"$py" -m knowcache.cli build-models --task "$task" --work "$work" --train-only "$@"
tar -cf "$out/$task-work.tar" -C "$(dirname "$work")" "$task"
echo "$out/$task-work.tar: $(du -h "$out/$task-work.tar" | cut -f1)"
