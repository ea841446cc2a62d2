#!/usr/bin/env bash
# One prepared run for a lent GPU machine (issue: train the bundled ConvNeXt on a GPU).
#
# Here, first:  .venv/bin/convnest pack ../shared/data/brain-tumor-mri ../shared/data/tcga-lgg \
#                   ../shared/data/brats2013-hgg ../shared/nifti/healthy-volunteer/chris_t1.nii.gz \
#                   --size 224 --jpeg-quality 75 --out work-data/gpu/multi-224-q75.npz   (work-data/ is git-ignored)
#               python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#                   --platform manylinux2014_x86_64 -d work-data/gpu/whl pydicom==3.0.2   (pure Python)
# Then run it with the device tool: carry ["work-data/gpu"], command "bash training/device/gpu_train.sh",
# timeout_s 600. Try it here first on the CPU:  DEVICE=cpu ARCH=test_convnext EPOCHS=1 MAX_IMAGES=64 \
#     PYTHON=.venv/bin/python OUT=/tmp/gpu-dry bash training/device/gpu_train.sh
#
# What comes back ($OUT, at most 8 files of 16 MiB): the fp16 safetensors shards and model card of the
# exported model, the evaluation report as one tar.gz, and the log. The whole-scan evaluation (held-out
# tcga-lgg institution, brats volumes, healthy heads) needs ../shared: run `convnest evaluate` back here.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:?set OUT (the device tool sets it)}"
PACK="${PACK:-work-data/gpu/multi-224-q75.npz}"
ARCH="${ARCH:-convnext_tiny}"
EPOCHS="${EPOCHS:-120}"
BATCH="${BATCH:-128}"
LR="${LR:-2e-3}"
DEVICE="${DEVICE:-cuda}"
MAX_IMAGES="${MAX_IMAGES:-0}"
NAME="${NAME:-${ARCH}-gpu-v1}"
RUN="${RUN:-/tmp/convnest-gpu-run}"
PY="${PYTHON:-python3}"  # the device image's python3 holds torch
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d work-data/gpu/whl ] && ! "$PY" -c "import pydicom" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site work-data/gpu/whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
mkdir -p "$OUT"
{
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv
  "$PY" -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())"
  "$PY" -m training train "$PACK" --run "$RUN" --architecture "$ARCH" --size 224 --epochs "$EPOCHS" \
      --batch-size "$BATCH" --lr "$LR" --warmup-epochs 5 --drop-path 0.1 --ema-decay 0.9995 --label-smoothing 0.1 \
      --device "$DEVICE" --max-train-images "$MAX_IMAGES"
  "$PY" -m training evaluate "$PACK" --run "$RUN" --out "$RUN/report"
  "$PY" -m training export "$PACK" --run "$RUN" --report "$RUN/report/report.json" --name "$NAME" --dest "$RUN/models"
} 2>&1 | tee "$OUT/log.txt"
cp "$RUN/models/$NAME"/* "$OUT/"
cp "$RUN/log.csv" "$RUN/report/training_log.csv" 2>/dev/null || true
tar -czf "$OUT/report.tar.gz" -C "$RUN" report
ls -la "$OUT"
