#!/usr/bin/env bash
# Before a lent GPU session (the `device` tool; most sessions have none): put what the GPU machine
# lacks into .device/ (ignored by git; it travels with `carry: [".device"]`, about 32 MB):
#   .device/whl/   hydra-core, omegaconf and antlr4-python3-runtime wheels (its image holds torch,
#                  timm, tensorboard, scikit-learn, matplotlib, tqdm and PyYAML, and no network)
#   .device/data/  Fashion-MNIST's four .gz files (the evidence tables' data)
# Then run there, as one call:  bash scripts/device/gpu_session.sh 420   (see that file).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=${PY:-.venv/bin/python}
mkdir -p .device/whl .device/data
version() { "$PY" -m pip show "$1" | sed -n 's/^Version: //p'; }  # what the tests ran with here
rm -f .device/whl/*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation py --platform any -d .device/whl "hydra-core==$(version hydra-core)" \
  "omegaconf==$(version omegaconf)"
"$PY" -m pip wheel -q --no-deps -w .device/whl \
  "antlr4-python3-runtime==$(version antlr4-python3-runtime)"  # an sdist on PyPI
DATA=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
cp "$DATA"/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz .device/data/
ls -la .device/whl .device/data
du -sh .device
