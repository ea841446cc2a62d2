#!/bin/sh
# v15 trained on with tcga-lgg's share raised to 0.38 while every other source is distilled from v15 (learning without forgetting): does T1c gain without the other sources paying?
set -e
cd /work/main
exec .venv/bin/convnest train work-data/multi-224.npz --run work-data/runs/femto224-distil --architecture convnext_femto \
    --size 224 --epochs 12 --epoch-images 4000 --batch-size 32 --lr 1.5e-4 --warmup-epochs 1 \
    --source-weights brain-tumor-mri:0.35,tcga-lgg:0.38,brats2013-hgg:0.12,healthy-heads:0.15 \
    --init-from resources/models/convnext-femto-224-multi-v15 \
    --distil-from resources/models/convnext-femto-224-multi-v15 --distil-weight 1.0 \
    --distil-sources brain-tumor-mri,brats2013-hgg,healthy-heads --distil-temperature 2.0 --time-budget 4200
