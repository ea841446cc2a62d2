#!/bin/sh
# Read the run as a candidate for bundling is read: evaluate, export, gate-fit, context-fit, scan-eval, compare with v15
set -e
cd /work/main
# stage2/eval.sh runs this with E, RUN and NAME set to its own report folder, run folder and model name
S=../shared; E=${E:-training/reports/experiments/femto224-t1c-draws}; R=work-data/runs/${RUN:-femto224-t1c-draws}
NAME=${NAME:-t1c-draws}; M=work-data/models/$NAME
.venv/bin/convnest evaluate work-data/multi-224.npz --run $R --out $E/evaluate \
    --healthy $S/dicom/sagittal-mprage:t1 --healthy $S/nifti/healthy-volunteer/chris_PD.nii.gz:pd \
    --healthy $S/nifti/healthy-volunteer/chris_t1.nii.gz:t1
.venv/bin/convnest export work-data/multi-224.npz --run $R --report $E/evaluate/report.json --name $NAME --dest work-data/models
.venv/bin/convnest gate-fit work-data/multi-224.npz --model $M --run-config $E/evaluate/run_config.json --report $E
.venv/bin/convnest context-fit --model $M --tcga $S/data/tcga-lgg --run-config $E/evaluate/run_config.json \
    --report $E/context --write-card
.venv/bin/convnest scan-eval --model $M --tcga $S/data/tcga-lgg --institutions CS \
    --volumes $S/data/brats2013-hgg/validation/* $S/data/brats2013-hgg/test/* --healthy $S/dicom/sagittal-mprage:t1 \
    --healthy $S/nifti/healthy-volunteer/chris_PD.nii.gz:pd --out $E/scans --write-card
.venv/bin/convnest compare $E/scans training/reports/convnext-femto-224-multi-v15/scans --out $E/compare_v15.md
