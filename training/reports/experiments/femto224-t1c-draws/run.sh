#!/bin/sh
# tcga-lgg's T1c slices drawn twice as often as its FLAIR and T1 slices (--sequence-weights tcga-lgg/t1c:2) on top of v15;
# every source keeps v15's share of the draws, so the healthy heads, brats and brain-tumor-mri lose nothing to it
set -e
cd /work/main
exec .venv/bin/convnest train work-data/multi-224.npz --run work-data/runs/femto224-t1c-draws --architecture convnext_femto \
    --size 224 --epochs 12 --epoch-images 4000 --batch-size 32 --lr 1.5e-4 --warmup-epochs 1 \
    --source-weights brain-tumor-mri:0.45,tcga-lgg:0.28,brats2013-hgg:0.12,healthy-heads:0.15 \
    --sequence-weights tcga-lgg/t1c:2 --time-budget 2700 \
    --init-from resources/models/convnext-femto-224-multi-v15
