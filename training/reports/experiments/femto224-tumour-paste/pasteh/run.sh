#!/bin/sh
# paste 0.25 with more healthy heads: paste25's run with source weights moved toward the healthy heads
cd /work/main && exec .venv/bin/convnest train work-data/multi-224.npz --run work-data/runs/femto224-pasteh --architecture convnext_femto \
    --size 224 --epochs 14 --epoch-images 4000 --batch-size 32 --lr 1.5e-4 --warmup-epochs 1 \
    --source-weights brain-tumor-mri:0.40,tcga-lgg:0.27,brats2013-hgg:0.10,healthy-heads:0.23 \
    --tumour-paste 0.25 --init-from resources/models/convnext-femto-224-multi-v15
