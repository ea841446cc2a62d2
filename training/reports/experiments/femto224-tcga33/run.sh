#!/bin/sh
# tcga-lgg's share raised from 0.28 to 0.33 (brain-tumor-mri 0.45 -> 0.40) on top of v15: does the held-out T1c ranking move with more tcga draws?
set -e
cd /work/main
exec .venv/bin/convnest train work-data/multi-224.npz --run work-data/runs/femto224-tcga33 --architecture convnext_femto \
    --size 224 --epochs 12 --epoch-images 4000 --batch-size 32 --lr 1.5e-4 --warmup-epochs 1 \
    --source-weights brain-tumor-mri:0.40,tcga-lgg:0.33,brats2013-hgg:0.12,healthy-heads:0.15 \
    --init-from resources/models/convnext-femto-224-multi-v15
