#!/usr/bin/env bash
# The benchmark tables of docs/speed.md on a GPU, in a few minutes: the MNIST CNN (500 digits) and timm resnet18
# on exact CIFAR-10 (200 images) and at 224 pixels (16 images), every attack, every library, --device cuda.
#
#   experiments/bench/gpu.sh OUT_DIR MNIST_CHECKPOINT RESNET18_CHECKPOINT RESNET18_224_CHECKPOINT [DATA_ROOT]
#
# The checkpoints are folders that `cli.py train` printed (a machine without internet cannot train or download
# them fast enough); DATA_ROOT is the shared data folder (default ../shared/data; the MNIST rows need none).
# On the device tool's machine (no internet): carry the three checkpoint folders and any wheel it lacks, e.g.
#   run(command="experiments/bench/gpu.sh $OUT ckpt/mnist ckpt/r18 ckpt/r18-224 shared/data", carry=["ckpt"])
# Each table is written as soon as it is measured, so a run stopped at its limit keeps the finished ones.
set -euo pipefail
out=${1:?usage: gpu.sh OUT_DIR MNIST_CHECKPOINT RESNET18_CHECKPOINT RESNET18_224_CHECKPOINT [DATA_ROOT]}
mnist=${2:?MNIST checkpoint folder}
r18=${3:?resnet18 CIFAR-10 checkpoint folder}
r18_224=${4:?resnet18 224-pixel checkpoint folder}
data=${5:-../shared/data}
py=${PYTHON:-python3}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
run() { PYTHONUNBUFFERED=1 "$py" cli.py bench --device cuda --quiet --repeats 3 "$@"; }
run --checkpoint "$mnist" --n 500 --out "$out/bench-gpu-mnist"
run --dataset cifar10-exact --data-root "$data" --model resnet18 --checkpoint "$r18" --n 200 --out "$out/bench-gpu-resnet18"
run --dataset cifar10-exact --data-root "$data" --model resnet18 --image-size 224 --checkpoint "$r18_224" --n 16 \
    --out "$out/bench-gpu-resnet18-224"
