#!/usr/bin/env bash
# One prepared run for a lent GPU machine (issue 17): a larger ConvNeXt trained from scratch with the bundled
# model's multi-source recipe, within a time budget, its final weights carried back as fp16 shards.
#
# Here, first (work-data/ is git-ignored; the full pack stays here for the evaluation):
#   S=../shared
#   .venv/bin/convnest pack $S/data/brain-tumor-mri $S/data/tcga-lgg $S/data/brats2013-hgg \
#       --healthy $S/nifti/healthy-volunteer/chris_t1.nii.gz --healthy $S/dicom/patient-positions/In/HFS/3_t1_fl2d_sag \
#       --healthy $S/dicom/patient-positions/In/HFP/2_t1_fl2d_sag --healthy $S/dicom/enhanced-multiframe/In/5_anat-T1w_acq-tfl \
#       --size 224 --out work-data/multi-224-v9.npz                                  # ~1 minute, 874 MB
#   .venv/bin/convnest carry-pack work-data/multi-224-v9.npz --out work-data/gpu/carry-224.npz   # ~1.5 min, 38 MiB
# The carried pack holds only the training and validation slices (WebP, quality 40) and its split beside it
# (carry-224.split.json), so the machine trains on exactly the split the full pack gives here. Training imports
# no DICOM/NIfTI/Qt code, so the machine's python3 (torch, timm, opencv, safetensors, matplotlib) needs nothing more.
#
# Then with the device tool: carry ["work-data/gpu"], command "bash training/device/gpu_train.sh", timeout_s 600
# (the working tree and the carried folder must stay under 64 MiB together). Training stops within BUDGET seconds
# (the epochs are cut after the second epoch, the cosine schedule with them). Try it here first on the CPU, with the
# modules the machine lacks blocked (PYTHONPATH=training/device/bare_python refuses pydicom, SimpleITK, PySide6, ...):
#   PYTHONPATH=training/device/bare_python DEVICE=cpu ARCH=test_convnext EPOCH_IMAGES=64 BATCH=16 BUDGET=60 PYTHON=.venv/bin/python OUT=/tmp/gpu-dry \
#       bash training/device/gpu_train.sh
#
# What comes back ($OUT, at most 8 files of 16 MiB): the final (EMA) weights as fp16 shards under 15 MiB
# (weights-*.safetensors), run.tar.gz (config, per-epoch log, curves) and log.txt. Back here:
#   .venv/bin/convnest import-run FILES_AT --run work-data/runs/NAME
#   .venv/bin/convnest evaluate work-data/multi-224-v9.npz --run work-data/runs/NAME --out training/reports/NAME \
#       --healthy $S/dicom/sagittal-mprage:t1 --healthy $S/nifti/healthy-volunteer/chris_PD.nii.gz:pd \
#       --healthy $S/nifti/healthy-volunteer/chris_t1.nii.gz:t1
# then export, gate-fit and explain-eval as for the CPU model (README, Training).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:?set OUT (the device tool sets it)}"
PACK="${PACK:-work-data/gpu/carry-224.npz}"
ARCH="${ARCH:-convnext_tiny}"
SIZE="${SIZE:-224}"
EPOCHS="${EPOCHS:-60}"          # an upper bound: the time budget decides
EPOCH_IMAGES="${EPOCH_IMAGES:-16000}"
BATCH="${BATCH:-128}"
LR="${LR:-2e-3}"
BUDGET="${BUDGET:-390}"         # seconds of training; the whole command stays near 7 minutes
DEVICE="${DEVICE:-cuda}"
RUN="${RUN:-/tmp/convnest-gpu-run}"
PY="${PYTHON:-python3}"         # the machine's python3 holds torch, timm, opencv, safetensors
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
rm -rf "$RUN"
{
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv || true
  "$PY" -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())"
  "$PY" -m training train "$PACK" --run "$RUN" --architecture "$ARCH" --size "$SIZE" --epochs "$EPOCHS" \
      --epoch-images "$EPOCH_IMAGES" --batch-size "$BATCH" --lr "$LR" --warmup-epochs 3 --drop-path 0.1 \
      --ema-decay 0.999 --label-smoothing 0.1 --time-budget "$BUDGET" --device "$DEVICE" \
      --source-weights brain-tumor-mri:0.45,tcga-lgg:0.28,brats2013-hgg:0.12,healthy-heads:0.15
  "$PY" -m training carry-back --run "$RUN" --out "$OUT"
} 2>&1 | tee "$OUT/log.txt"
ls -la "$OUT"
