#!/bin/bash
# eval224.sh [RUN] [DEST]: a run's EMA as the app would read it (v12's card at 224 px, gate refitted), whole held-out scans
# (needs v12's folder back in resources/: git checkout a16b601 -- resources/models/convnext-femto-192-multi-v12)
set -e
S=../shared; run=${1:-work-data/runs/femto224-v13}; dest=${2:-work-data/models/f224}; tag=$(basename $dest)
.venv/bin/python training/reports/experiments/femto192-mask-guidance/make_candidate.py $run $dest convnext-femto-224-multi-candidate 224
.venv/bin/convnest gate-fit work-data/multi-224.npz --model $dest --run-config $run/config.json --shared $S --report work-data/gate-$tag > work-data/gate-$tag.log 2>&1
.venv/bin/convnest scan-eval --model $dest --tcga $S/data/tcga-lgg --institutions CS \
    --volumes $S/data/brats2013-hgg/{validation,test}/* --healthy $S/dicom/sagittal-mprage:t1 \
    --healthy $S/nifti/healthy-volunteer/chris_PD.nii.gz:pd --out work-data/scans-$tag > work-data/scans-$tag.log 2>&1
echo done
