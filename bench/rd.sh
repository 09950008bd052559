#!/usr/bin/env bash
# Regenerates the committed rate–distortion results in bench/results/ (minutes on 2 cores):
#   rd-smollm2.json       every codec family near each rate (3.25 … 6.25 pair the default
#                         codec with TurboQuant-b3…b6 at equal bits, d = 64) on the full K/V of
#                         ../shared/data/smollm2-pp512 (SmolLM2-135M, 30 layers, d = 64)
#   rd-gaussian-d128.json the same on iid Gaussian vectors at d = 128
# Usage: bench/rd.sh [path/to/kv.safetensors]
set -euo pipefail
cd "$(dirname "$0")/.."
input=${1:-../shared/data/smollm2-pp512/kv.safetensors}
rates=()
for r in 2.5 3 3.25 3.5 4 4.25 4.5 5.25 5.5 6.25 6.5 8; do rates+=(--bpv "$r"); done
# At d = 128 TurboQuant-b<b> takes b + 0.125 bits per value: pair it at those rates.
gaussian_rates=()
for r in 2.5 3 3.125 3.5 4 4.125 4.5 5.125 5.5 6.125 6.5 8; do gaussian_rates+=(--bpv "$r"); done
cargo build --release --locked --bin kvc
./target/release/kvc rd --input "$input" "${rates[@]}" --every-family --codec bf16 \
    --json bench/results/rd-smollm2.json
./target/release/kvc rd --gaussian 16384 --head-dim 128 "${gaussian_rates[@]}" --every-family \
    --codec bf16 --json bench/results/rd-gaussian-d128.json
