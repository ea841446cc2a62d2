#!/bin/sh
# Stage 2: the first stage's weights (work-data/models/t1c-draws) trained on with the same recipe for as many epochs
# again (the first stage's time budget cut it to 6): does the T1c gain grow while the other sources hold?
set -e
cd /work/main
exec .venv/bin/convnest train work-data/multi-224.npz --run work-data/runs/femto224-t1c-draws2 --architecture convnext_femto \
    --size 224 --epochs 6 --epoch-images 4000 --batch-size 32 --lr 1.5e-4 --warmup-epochs 1 \
    --source-weights brain-tumor-mri:0.45,tcga-lgg:0.28,brats2013-hgg:0.12,healthy-heads:0.15 \
    --sequence-weights tcga-lgg/t1c:2 --init-from work-data/models/t1c-draws
