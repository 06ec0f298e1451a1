#!/usr/bin/env bash
# Recompile requirements/lock.txt: every dependency of lmlab (with the dev and hf extras) pinned to one version, for
# supported Python (3.10+), resolved against the torch release in requirements/torch.txt. Torch itself and the CUDA
# libraries only torch needs are left out: scripts/install_torch.sh installs the build that fits the machine (the
# CUDA wheel pins its own CUDA libraries exactly). `make install` installs from the lock, so two installs a month
# apart get the same versions. Run after changing pyproject.toml's dependencies (`make lock`), and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-uv}
"$uv" pip compile pyproject.toml --extra dev --extra hf --universal --python-version 3.10 \
  --constraint requirements/torch.txt --no-emit-package torch --no-header --quiet |
  grep -v -E '^(nvidia-|cuda-|triton==)' >requirements/lock.txt.new
mv requirements/lock.txt.new requirements/lock.txt
echo "requirements/lock.txt: $(grep -c '==' requirements/lock.txt) pinned packages"
