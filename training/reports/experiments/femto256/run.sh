#!/bin/sh
# 256 px input on top of v15 (the next size step after 160->192->224): pack at 256, then 16 epochs from v15 at lr 3e-4, v15's recipe otherwise
set -e
cd /work/main
S=../shared
[ -f work-data/multi-256.npz ] || .venv/bin/convnest pack $S/data/brain-tumor-mri $S/data/tcga-lgg $S/data/brats2013-hgg \
    --healthy $S/nifti/healthy-volunteer/chris_t1.nii.gz --healthy $S/dicom/patient-positions/In/HFS/3_t1_fl2d_sag \
    --healthy $S/dicom/patient-positions/In/HFP/2_t1_fl2d_sag --healthy $S/dicom/enhanced-multiframe/In/5_anat-T1w_acq-tfl \
    --size 256 --out work-data/multi-256.npz
exec .venv/bin/convnest train work-data/multi-256.npz --run work-data/runs/femto256 --architecture convnext_femto \
    --size 256 --epochs 16 --epoch-images 4000 --batch-size 32 --lr 3e-4 --warmup-epochs 1 \
    --source-weights brain-tumor-mri:0.45,tcga-lgg:0.28,brats2013-hgg:0.12,healthy-heads:0.15 \
    --init-from resources/models/convnext-femto-224-multi-v15
