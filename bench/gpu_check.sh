#!/usr/bin/env bash
# One command for a CUDA machine (also `make test-gpu`): the tests parametrised over devices, run on CUDA only,
# then a short explainer benchmark on CUDA. Fails at once, saying so, when this machine has no CUDA device.
#
#     bash bench/gpu_check.sh            (PY=/path/to/python to use another interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

if ! "$PY" - <<'PYEOF'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"gpu_check: no CUDA device here (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
             "nothing was tested. Run this on a machine with an NVIDIA GPU and a CUDA build of torch.")
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PYEOF
then
    exit 2
fi

# Every device-parametrised test has "cuda" in its id (tests/explain/devices.py); -k picks exactly those.
"$PY" -m pytest -q -p no:cacheprovider -k cuda tests/core tests/explain tests/lessons tests/embed
# The explainer benchmark's default device is CUDA when present (core.zoo.default_device): a few fast methods.
"$PY" -m bench.explainers --methods grad_cam,saliency,integrated_gradients,occlusion --repeats 0.5
