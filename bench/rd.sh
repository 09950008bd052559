#!/usr/bin/env bash
# Regenerates the committed rate–distortion results in bench/results/ (minutes on 2 cores):
#   rd-smollm2.json       every codec family near each rate on the full real K/V of
#                         ../shared/data/smollm2-pp512 (SmolLM2-135M, 30 layers, d = 64)
#   rd-gaussian-d128.json the same on iid Gaussian vectors at d = 128
# Usage: bench/rd.sh [path/to/kv.safetensors]
set -euo pipefail
cd "$(dirname "$0")/.."
input=${1:-../shared/data/smollm2-pp512/kv.safetensors}
rates=()
for r in 2.5 3 3.5 4 4.5 5.5 6.5 8; do rates+=(--bpv "$r"); done
cargo build --release --locked --bin kvc
./target/release/kvc rd --input "$input" "${rates[@]}" --every-family --codec bf16 \
    --json bench/results/rd-smollm2.json
./target/release/kvc rd --gaussian 16384 --head-dim 128 "${rates[@]}" --every-family \
    --codec bf16 --json bench/results/rd-gaussian-d128.json
