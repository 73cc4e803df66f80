#!/usr/bin/env bash
# Download the wheels of benchmarks/device_wheels.txt (what the GPU machine's image lacks) into
# .whl/ (git-ignored through .git/info/exclude), for that machine's Python 3.12 on x86-64.
# Run here, from the repository root, where pip reaches the package index; the device call then
# carries .whl and benchmarks/gpu_check.sh installs it:
#
#     bash benchmarks/device_wheels.sh   # then run(command="bash benchmarks/gpu_check.sh 540", carry=[".whl"])
#
# A package published as source only is built into a (pure-Python) wheel here.
set -euo pipefail
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
PLATFORMS=(--python-version 3.12 --implementation cp)
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux_2_5 manylinux1; do
    PLATFORMS+=(--platform "${p}_x86_64")
done
grep -v '^#' benchmarks/device_wheels.txt | while read -r req; do
    [ -n "$req" ] || continue
    python3 -m pip download -q --no-deps --only-binary=:all: "${PLATFORMS[@]}" -d .whl "$req" 2>/dev/null \
        || python3 -m pip wheel -q --no-deps -w .whl "$req"
done
du -sh .whl
