#!/bin/sh
# Read the run as a candidate for bundling is read: evaluate, export, gate-fit, context-fit, scan-eval, compare with v15
set -e
cd /work/main
S=../shared; E=training/reports/experiments/femto224-t1c-draws/stage2; R=work-data/runs/femto224-t1c-draws2; M=work-data/models/t1c-draws2
.venv/bin/convnest evaluate work-data/multi-224.npz --run $R --out $E/evaluate \
    --healthy $S/dicom/sagittal-mprage:t1 --healthy $S/nifti/healthy-volunteer/chris_PD.nii.gz:pd \
    --healthy $S/nifti/healthy-volunteer/chris_t1.nii.gz:t1
.venv/bin/convnest export work-data/multi-224.npz --run $R --report $E/evaluate/report.json --name t1c-draws2 --dest work-data/models
.venv/bin/convnest gate-fit work-data/multi-224.npz --model $M --run-config $E/evaluate/run_config.json --report $E
.venv/bin/convnest context-fit --model $M --tcga $S/data/tcga-lgg --run-config $E/evaluate/run_config.json \
    --report $E/context --write-card
.venv/bin/convnest scan-eval --model $M --tcga $S/data/tcga-lgg --institutions CS \
    --volumes $S/data/brats2013-hgg/validation/* $S/data/brats2013-hgg/test/* --healthy $S/dicom/sagittal-mprage:t1 \
    --healthy $S/nifti/healthy-volunteer/chris_PD.nii.gz:pd --out $E/scans --write-card
.venv/bin/convnest compare $E/scans training/reports/convnext-femto-224-multi-v15/scans --out $E/compare_v15.md
