#!/usr/bin/env bash
# The GPU verification run (issue 22), as run on the lent GPU machine from the repository
# root.  That machine reaches no package index: refdiff's pure-Python dependencies that its
# image lacks (array-api-compat, array-api-strict) travel as wheels in .whl/ (see
# benchmarks/README.md); NumPy, SciPy, CuPy, PyTorch, pytest, hypothesis, pytest-xdist are
# the image's own.
#
#   bash benchmarks/gpu_check.sh [suite|gpu|bench|profile|all]   (default: all)
#
# Writes its logs to $OUT (or ./gpu-out): suite.log (pytest), bench.log (bench_gpu.py),
# env.log (versions), profile.log (gpu_profile.py).
set -uo pipefail
what=${1:-all}
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PYTHONDONTWRITEBYTECODE=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import sys, numpy, scipy, cupy, array_api_compat, array_api_strict, hypothesis; print(sys.version.split()[0], 'numpy', numpy.__version__, 'scipy', scipy.__version__, 'cupy', cupy.__version__, 'cuda runtime', cupy.cuda.runtime.runtimeGetVersion(), 'array-api-compat', array_api_compat.__version__, 'strict', array_api_strict.__version__, 'hypothesis', hypothesis.__version__)"
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
} 2>&1 | tee "$OUT/env.log"
rc=0
case $what in
  suite|all) timeout "${SUITE_TIMEOUT:-420}" python3 -m pytest -p no:cacheprovider -q -rfEs --tb=short \
               -n "${NPROC:-12}" --junitxml="$OUT/suite.xml" 2>&1 | tee "$OUT/suite.log"; rc=$? ;;
  gpu)       timeout "${SUITE_TIMEOUT:-300}" python3 -m pytest -p no:cacheprovider -q -rfEs --tb=short \
               -n "${NPROC:-12}" -m gpu --junitxml="$OUT/suite.xml" 2>&1 | tee "$OUT/suite.log"; rc=$? ;;
esac
case $what in
  profile|all) timeout "${PROFILE_TIMEOUT:-180}" python3 benchmarks/gpu_profile.py 2>&1 | tee "$OUT/profile.log" ;;
esac
case $what in
  bench|all) timeout "${BENCH_TIMEOUT:-240}" python3 benchmarks/bench_gpu.py ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
             brc=${PIPESTATUS[0]}; [ "$rc" -eq 0 ] && rc=$brc ;;
esac
exit $rc
