#!/usr/bin/env bash
# The whole test suite, as CI runs it on a clean clone (no GPU): format, lints, every test, the NVRTC
# compile test of every CUDA kernel, and the official OpenAI client against `decdec serve`.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true

# NVRTC + CUDA headers from PyPI, so the kernels compile on a machine without CUDA.
PY=${PYTHON:-python3}
VENV=${DECDEC_VENV:-target/ci-venv}
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check \
    nvidia-cuda-nvrtc==13.0.88 "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" openai
SITE=$("$VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])')
export LD_LIBRARY_PATH="$SITE/nvidia/cu13/lib:${LD_LIBRARY_PATH:-}"
export DECDEC_CUDA_INCLUDE="$SITE/nvidia/cu13/include:$SITE/nvidia/cu13/include/cccl"
export DECDEC_REQUIRE_NVRTC=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
cargo build --release -p decdec-cli
"$VENV/bin/python" scripts/openai_client_check.py "${CARGO_TARGET_DIR:-target}/release/decdec" models/stories260K
echo "all checks passed"
