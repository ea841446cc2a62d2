#!/bin/sh
# Stage 2 read as the first stage was (../eval.sh), from its own run folder into this folder
cd /work/main
E=training/reports/experiments/femto224-t1c-draws/stage2 RUN=femto224-t1c-draws2 NAME=t1c-draws2 \
    exec training/reports/experiments/femto224-t1c-draws/eval.sh
