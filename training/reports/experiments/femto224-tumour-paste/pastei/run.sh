#!/bin/sh
# paste 0.25 into the tumour sources' no-tumour slices only (never a healthy volunteer's head), at v15's source weights
cd /work/main && exec .venv/bin/convnest train work-data/multi-224.npz --run work-data/runs/femto224-pastei --architecture convnext_femto \
    --size 224 --epochs 14 --epoch-images 4000 --batch-size 32 --lr 1.5e-4 --warmup-epochs 1 \
    --source-weights brain-tumor-mri:0.45,tcga-lgg:0.28,brats2013-hgg:0.12,healthy-heads:0.15 \
    --tumour-paste 0.25 --paste-into brain-tumor-mri,tcga-lgg,brats2013-hgg --init-from resources/models/convnext-femto-224-multi-v15
