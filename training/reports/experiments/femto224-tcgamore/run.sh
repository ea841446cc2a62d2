#!/bin/sh
# Longer epochs on top of v15: tcga-lgg gets 1,720 draws per epoch (v15: 1,120) while brain-tumor-mri (1,800), brats (480) and the healthy heads (600) keep v15's absolute draws
set -e
cd /work/main
exec .venv/bin/convnest train work-data/multi-224.npz --run work-data/runs/femto224-tcgamore --architecture convnext_femto \
    --size 224 --epochs 12 --epoch-images 4600 --batch-size 32 --lr 1.5e-4 --warmup-epochs 1 \
    --source-weights brain-tumor-mri:0.3913,tcga-lgg:0.3739,brats2013-hgg:0.1043,healthy-heads:0.1305 \
    --init-from resources/models/convnext-femto-224-multi-v15
