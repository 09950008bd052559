"""Decode attention on bf16 with PyTorch's scaled_dot_product_attention: the baseline of
kv-codec's `gpu_attention` example, run by gpu-bundle/run.sh in the same device call.

One query position per batch row, 32 query heads over 8 KV heads (GQA through
`enable_gqa=True`), head_dim 128, at 4k, 32k and 128k tokens and batch 1 and 8. Each
shape is timed with CUDA events around single calls: the median of --runs calls after
warm-up. Writes JSON rows {batch, context, ms} to --json.
"""

import argparse
import json
import statistics

import torch
import torch.nn.functional as F


def time_ms(fn, runs):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--json", required=True)
    p.add_argument("--contexts", default="4096,32768,131072")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--runs", type=int, default=20)
    a = p.parse_args()
    q_heads, kv_heads, d = 32, 8, 128
    rows = []
    gqa = "enable_gqa=True"
    for batch in [int(x) for x in a.batches.split(",")]:
        for context in [int(x) for x in a.contexts.split(",")]:
            g = torch.Generator(device="cuda").manual_seed(1)
            q = torch.randn(batch, q_heads, 1, d, device="cuda", dtype=torch.bfloat16, generator=g)
            k = torch.randn(batch, kv_heads, context, d, device="cuda", dtype=torch.bfloat16, generator=g)
            v = torch.randn(batch, kv_heads, context, d, device="cuda", dtype=torch.bfloat16, generator=g)
            try:
                F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

                def fn():
                    F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            except TypeError:
                # Torch before 2.5: K and V expanded to the query heads before timing.
                gqa = "K/V repeated to the query heads (no enable_gqa in this torch)"
                k = k.repeat_interleave(q_heads // kv_heads, dim=1)
                v = v.repeat_interleave(q_heads // kv_heads, dim=1)

                def fn():
                    F.scaled_dot_product_attention(q, k, v)
            ms = time_ms(fn, a.runs)
            print(f"torch sdpa bf16 batch={batch} context={context}: {ms:.4f} ms", flush=True)
            rows.append({"batch": batch, "context": context, "ms": ms})
            del q, k, v
            torch.cuda.empty_cache()
    out = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0),
        "dtype": "bf16",
        "gqa": gqa,
        "q_heads": q_heads,
        "kv_heads": kv_heads,
        "head_dim": d,
        "runs": a.runs,
        "rows": rows,
    }
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
