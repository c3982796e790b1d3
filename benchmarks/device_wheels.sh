#!/usr/bin/env bash
# Wheels the GPU machines lack, fetched here (where the package registry is reachable) into .whl/,
# for `benchmarks/device_check.sh` to install there (the device tool carries .whl with the tree:
# carry [".whl"]). The machines' image (docs of the device tool, KINDS.md) has torch, Triton and
# every module of polycom's lab extra but omegaconf; omegaconf 2.4 needs only PyYAML, which the
# image has. Python there is 3.12; omegaconf is pure Python (py3-none-any).
#
#   bash benchmarks/device_wheels.sh        # then: run with carry [".whl"]
set -eu
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "omegaconf==2.4.0"
ls -l .whl
