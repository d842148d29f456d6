#!/usr/bin/env bash
# The benchmark tables of docs/speed.md on a GPU, each in a few minutes: every attack, every library, --device cuda.
#
#   experiments/bench/gpu.sh OUT_DIR mnist                                    # the MNIST CNN, 500 digits
#   experiments/bench/gpu.sh OUT_DIR resnet18 CHECKPOINT DATA_ROOT            # resnet18, exact CIFAR-10, 200 images
#   experiments/bench/gpu.sh OUT_DIR resnet18-224 CHECKPOINT DATA_ROOT        # resnet18 at 224 pixels, 16 images
#
# The MNIST model is the committed test fixture (tests/fixtures/mnist_cnn). A resnet18 CHECKPOINT is a folder that
# `cli.py train --dataset cifar10 --model resnet18 [--image-size 224]` printed; DATA_ROOT holds
# cifar10_exact_partial/ (15.6 MB). On the device tool's machine (no internet, 64 MiB carried per call), one
# model per call: a resnet18 checkpoint (45 MB) and the exact CIFAR-10 file fit together, two checkpoints do not.
# The tables land in OUT_DIR as bench-gpu-<model>.csv/.md; gpu.txt names the GPU.
set -euo pipefail
out=${1:?usage: gpu.sh OUT_DIR mnist|resnet18|resnet18-224 [CHECKPOINT DATA_ROOT]}
which=${2:?which model: mnist, resnet18 or resnet18-224}
case "$which" in mnist|resnet18|resnet18-224) ;; *) echo "expected mnist, resnet18 or resnet18-224, got $which" >&2; exit 2 ;; esac
py=${PYTHON:-python3}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
run() { PYTHONUNBUFFERED=1 "$py" cli.py bench --device cuda --quiet --repeats 3 --out "$out/bench-gpu-$which" "$@"; }
case "$which" in
  mnist) run --checkpoint tests/fixtures/mnist_cnn --n 500 ;;
  resnet18) run --dataset cifar10-exact --data-root "${4:?DATA_ROOT}" --checkpoint "${3:?CHECKPOINT}" --n 200 ;;
  resnet18-224)
    run --dataset cifar10-exact --data-root "${4:?DATA_ROOT}" --checkpoint "${3:?CHECKPOINT}" --image-size 224 --n 16 ;;
esac
