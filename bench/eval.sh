#!/usr/bin/env bash
# Regenerates the committed end-to-end results of kv-eval in bench/results/ (SmolLM2-135M-
# Instruct, Q4_1 GGUF, on the CPU; well over an hour on 2 cores, most of it the iso sweep):
#   eval-smollm2-verify.json  ppl of the first 512 tokens (prefill and token by token), token
#                             ids and every layer's K/V against ../shared/data/smollm2-pp512
#   eval-smollm2-iso.json     every family's settings under protect=4:16:64 (the default codec
#                             and TurboQuant-MSE also split, K one bit finer than V) and the
#                             default codec bare, 32 passages × 96 continuation tokens decoded token by
#                             token through kv-codec's KvCache (attention on the pages) after a
#                             512-token prefix; iso-quality table
#   eval-smollm2-sensitivity.json  the KL each layer's K and V cost when coded alone (the
#                             default codec at ~3.5 bpv under protect=4:16:64), 8 passages ×
#                             32 tokens from token 2000 on; kvc plan weighs budgets by it into
#                             bench/plans/smollm2-{voronoi,turboquant}-R.json, which the iso
#                             sweep evaluates as the "per-layer" families, and the same plans
#                             with sinks and window held in int8 (-w8r16: 16 recent tokens,
#                             -w8r32: 32; -w8r32 also at budgets between, where the 1% line
#                             is crossed), merged into the sweep as their own families
#   eval-smollm2-iso-1536.json  two settings each of the per-layer 4:32:64:int8 default codec
#                             and TurboQuant-MSE after 1536-token prefixes (32 passages × 96)
#   eval-smollm2-protection-sweep.json  sinks / recent window / key centring of the default
#                             codec at 4.5 and 3.5 bpv, 16 passages × 64 tokens
#   eval-smollm2-needle.json  a fact at 5 depths of 4096 tokens, greedy retrieval
#   eval-smollm2-needle-8k.json  the same at 3 depths of 8100 tokens (close to the model's
#                             8192-token context)
# The README's tables come from these files (`kv-eval table bench/results/eval-smollm2-iso.json`).
# Needs the model: cargo xtask fetch-model
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin kv-eval
# candle asks for the core count at every matmul unless this is set.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-$(nproc)}
./target/release/kv-eval verify --decode --json bench/results/eval-smollm2-verify.json
./target/release/kv-eval sensitivity --decoded-copy --json bench/results/eval-smollm2-sensitivity.json
cargo build --release --locked --bin kvc
sens=(--sensitivity bench/results/eval-smollm2-sensitivity.json)
planned=()
for r in 2.75 3.0 3.25 3.5 4.0 4.5; do
    ./target/release/kvc plan --budget-bpv $r "${sens[@]}" --out bench/plans/smollm2-voronoi-$r.json
    planned+=(--plan bench/plans/smollm2-voronoi-$r.json)
done
tq=turboquant-b2,turboquant-b3,turboquant-b4,turboquant-b5,turboquant-b6,turboquant-b7,turboquant-b8
for r in 3.0 3.5 4.0 4.5; do
    ./target/release/kvc plan --budget-bpv $r "${sens[@]}" --candidates $tq \
        --out bench/plans/smollm2-turboquant-$r.json
    planned+=(--plan bench/plans/smollm2-turboquant-$r.json)
done
./target/release/kv-eval iso --passages 32 --cont 96 --defaults "${planned[@]}" \
    --json bench/results/eval-smollm2-iso.json
int8=()
for family in voronoi-2.75 voronoi-3.0 voronoi-3.25 voronoi-3.5 voronoi-4.0 voronoi-4.5 \
    turboquant-3.0 turboquant-3.5 turboquant-4.0 turboquant-4.5; do
    r=${family#*-}
    candidates=()
    case $family in turboquant-*) candidates=(--candidates $tq) ;; esac
    for recent in 16 32; do
        out=bench/plans/smollm2-$family-w8r$recent.json
        ./target/release/kvc plan --budget-bpv $r "${sens[@]}" "${candidates[@]}" \
            --protect 4:$recent:64:int8 --out $out
        int8+=(--plan $out)
    done
done
# Finer budgets around the 1% crossing, 32 recent tokens in int8 only.
for family in voronoi-3.125 voronoi-3.375 turboquant-3.25 turboquant-3.75; do
    r=${family#*-}
    candidates=()
    case $family in turboquant-*) candidates=(--candidates $tq) ;; esac
    out=bench/plans/smollm2-$family-w8r32.json
    ./target/release/kvc plan --budget-bpv $r "${sens[@]}" "${candidates[@]}" \
        --protect 4:32:64:int8 --out $out
    int8+=(--plan $out)
done
./target/release/kv-eval iso --passages 32 --cont 96 "${int8[@]}" \
    --merge bench/results/eval-smollm2-iso.json --json bench/results/eval-smollm2-iso.json
# The same protection at a longer context (1536-token prefixes), where the fixed protected
# tokens weigh a third as much: two settings each of the default codec and TurboQuant-MSE.
./target/release/kv-eval iso --passages 32 --prefix 1536 --cont 96 \
    --plan bench/plans/smollm2-voronoi-3.125-w8r32.json --plan bench/plans/smollm2-voronoi-3.25-w8r32.json \
    --plan bench/plans/smollm2-turboquant-3.75-w8r32.json --plan bench/plans/smollm2-turboquant-4.0-w8r32.json \
    --json bench/results/eval-smollm2-iso-1536.json
plans=()
for c in voronoi-e8-q17-s3 voronoi-e8-q9-s2; do
    for p in "" ,protect=0:16:0 ,protect=4:16:0 ,protect=4:16:64 ,protect=4:8:64 \
        ,protect=4:32:64 ,protect=4:16:16 ,protect=1:16:64 ,protect=4:16:128; do
        plans+=(--codec "$c$p")
    done
done
./target/release/kv-eval eval "${plans[@]}" --passages 16 --cont 64 --decoded-copy \
    --json bench/results/eval-smollm2-protection-sweep.json
v=voronoi-e8; p=,protect=4:16:64
./target/release/kv-eval needle --context 4096 --codec k=$v-q17-s3,v=$v-q9-s2$p \
    --codec k=$v-q13-s2,v=$v-q6-s3$p --codec $v-q13-s2$p --codec turboquant-b4$p --codec int8$p \
    --json bench/results/eval-smollm2-needle.json
./target/release/kv-eval needle --context 8100 --depths 0.1,0.5,0.9 --codec k=$v-q17-s3,v=$v-q9-s2$p \
    --codec $v-q13-s2$p --codec turboquant-b4$p --json bench/results/eval-smollm2-needle-8k.json
