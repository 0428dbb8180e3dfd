#!/usr/bin/env bash
# decode.compile's kernels (torch.compile / inductor on the CPU) are C++ built at run time: a compiler is needed
# to run them and to test them (tests/test_compiled_attention.py). Install g++ where we can, else say how.
set -euo pipefail
for name in g++ c++ clang++; do
  if command -v "$name" >/dev/null 2>&1; then
    exit 0
  fi
done
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "C++ compiler not found: installing g++ with apt-get (needed by decode.compile and its tests)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
  exit 0
fi
echo "error: decode.compile's tests need a C++ compiler; install one (Debian/Ubuntu: sudo apt-get install g++;" \
     "macOS: xcode-select --install) and rerun. Without it those tests are skipped (and fail when CI=true)." >&2
exit 1
