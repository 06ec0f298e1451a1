#!/usr/bin/env bash
# Install PyTorch into the given interpreter before the project itself, so that the project's torch
# requirement is already satisfied and nothing pulls a multi-GB CUDA build onto a machine without a GPU.
# The version is the one locked in requirements/torch.txt.
#   GPU machine (nvidia-smi lists a device): PyPI's wheel of that version, which is a CUDA build.
#   CPU machine: torch==$TORCH_VERSION as a CPU build, from the PyTorch CPU index when it is reachable,
#   else from whatever pip is configured with (e.g. a local wheel directory).
# Set TORCH_SPEC to override the requirement entirely (e.g. TORCH_SPEC="torch==2.5.1").
set -euo pipefail
py=${1:?usage: install_torch.sh PYTHON}
TORCH_VERSION=${TORCH_VERSION:-$(sed -n 's/^torch==//p' "$(dirname "$0")/../requirements/torch.txt")}
CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

if "$py" -c "import torch" 2>/dev/null; then
  installed=$("$py" -c 'import torch; print(torch.__version__)')
  if [ -n "${TORCH_SPEC:-}" ] || [ "${installed%%+*}" = "$TORCH_VERSION" ]; then
    echo "torch $installed already installed"
    exit 0
  fi
  echo "torch $installed is installed but requirements/torch.txt locks $TORCH_VERSION: reinstalling"
fi

if [ -n "${TORCH_SPEC:-}" ]; then
  exec "$py" -m pip install "$TORCH_SPEC"
fi

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "GPU found: installing the CUDA build torch==$TORCH_VERSION from PyPI"
  exec "$py" -m pip install "torch==$TORCH_VERSION"
fi

if "$py" - "$CPU_INDEX" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=5)
PY
then
  echo "no GPU: installing the CPU build torch==$TORCH_VERSION from $CPU_INDEX"
  exec "$py" -m pip install "torch==$TORCH_VERSION" --extra-index-url "$CPU_INDEX"
fi
echo "no GPU and $CPU_INDEX unreachable: installing torch==$TORCH_VERSION from the configured indexes"
exec "$py" -m pip install "torch==$TORCH_VERSION"
