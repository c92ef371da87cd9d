#!/usr/bin/env bash
# Download the wheels that execute notebooks (nbclient, nbformat, ipykernel and their
# dependencies) for an x86-64 Linux machine without internet, e.g. a GPU box whose Python
# has torch but no Jupyter. Usage: scripts/notebook_wheels.sh [OUT_DIR=.whl] [PYTHON=3.12]
# There: python3 -m pip install --no-index --find-links OUT_DIR --target /tmp/site \
#          nbclient nbformat ipykernel && export PYTHONPATH=/tmp/site
set -euo pipefail
out=${1:-.whl}
py=${2:-3.12}
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux_2_5_x86_64 manylinux1_x86_64 any; do
  platforms+=(--platform "$p")
done
python3 -m pip download --quiet --only-binary=:all: --python-version "$py" --implementation cp \
  "${platforms[@]}" -d "$out" nbclient==0.11.0 nbformat==5.11.1 ipykernel==7.4.0
du -sh "$out"
