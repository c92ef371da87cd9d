#!/usr/bin/env bash
# The kit's CPU training campaign, one step after the other (one training at a time: two on
# 2 cores only slow each other down). Every step resumes per epoch and finished stages
# reload, so the same command continues after an interruption. Run it in the background at
# the start of a session and commit checkpoints/ and report/ regularly:
#
#     nohup scripts/campaign.sh > .dev/campaign.log 2>&1 &
#
# Steps: our pretrained model (200 epochs) -> the improved recipes of Lab 2 (e) and Lab 3 (c)
# tuned on a validation split (tuning.py) -> hw4.ipynb full mode (Lab 2 + 3, both recipes)
# -> deep_compression.ipynb -> lecture_extensions.ipynb -> the report.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export HW4_DATA_DIR=${HW4_DATA_DIR:-data}
if [ ! -f "$HW4_DATA_DIR/cifar10.npz" ] && [ -f ../shared/data/cifar10/prepare.py ]; then
    mkdir -p "$HW4_DATA_DIR"
    $PY ../shared/data/cifar10/prepare.py "$HW4_DATA_DIR/cifar10.npz" --format npz
fi
step() { echo "== $(date -u +%FT%TZ) $*"; }
step "pretraining (resumes per epoch)"
# the log is written after the checkpoint: without it the run is not over (rerunning finishes it)
[ -f checkpoints/pretrained_model.json ] || \
    $PY train_util.py pretrain --epochs 200 --out checkpoints/pretrained_model.pt --data-dir "$HW4_DATA_DIR"
step "tuning the improved recipe of Lab 2 (e) and Lab 3 (c) on a validation split (resumes per epoch)"
$PY tuning.py --data-dir "$HW4_DATA_DIR"
if [ ! -f report/qat_proxy_check.txt ]; then  # the evidence behind tuning.py's QAT check (5 min)
    $PY scripts/qat_proxy_check.py --data-dir "$HW4_DATA_DIR" > report/qat_proxy_check.txt.tmp
    mv report/qat_proxy_check.txt.tmp report/qat_proxy_check.txt
fi
step "hw4.ipynb full mode"
$PY run_notebooks.py --skip-lab1 --skip-extensions --skip-deep-compression --skip-report
for nb in deep_compression lecture_extensions; do
    if [ -f "$nb.ipynb" ]; then
        step "$nb.ipynb full mode"
        $PY -c "import run_notebooks as r; from pathlib import Path; p = Path('$nb.ipynb'); r.execute(p, p, {'HW4_QUICK': '0'})"
    fi
done
step "report"
$PY -m report
step "campaign finished"
