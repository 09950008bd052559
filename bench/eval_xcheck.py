#!/usr/bin/env python3
"""Independent cross-check of kv-eval's compressed-cache protocol with the shared numpy
Llama (../shared/tools/extract_kv.py), outside the Rust code base.

For one passage of bench/results/eval-smollm2-iso.json it prefills the prefix exactly,
quantizes the prefix K/V, then decodes the continuation token by token, quantizing each new
token's K/V before it attends (as kv-eval's stores do: write, then read), and scores the next
tokens. The quantizer is kv-codec's `int<b>` baseline re-implemented in numpy (symmetric
absmax per vector, f16 scale, ties-to-even), so the perplexities should match kv-eval's
`ppl_passages` of the same plans closely (int8 and int6 to a fraction of a percent; int4 is
chaotic at this rate and only agrees in magnitude).

Needs: pip install numpy gguf tokenizers, and the model (cargo xtask fetch-model).
Usage: python3 bench/eval_xcheck.py [PASSAGE_INDEX]
"""
import json
import math
import os
import sys

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "..", "shared", "tools"))
import extract_kv  # noqa: E402  (the shared reference implementation)

BITS = [8, 6, 4]


def int_quant(x, bits):
    """kv-codec's int<b> baseline: levels ±(2^(b-1) - 1), one f16 absmax scale per vector."""
    levels = 2 ** (bits - 1) - 1
    scale = (np.abs(x).max(-1, keepdims=True) / levels).astype(np.float16).astype(np.float32)
    safe = np.where(scale > 0, scale, 1)
    q = np.where(scale > 0, np.clip(np.round(x / safe), -levels, levels), 0)
    return (q * scale).astype(np.float32)


def step(m, tok, pos, cache, quant):
    """One token through the model; its K/V are quantized and appended before attention."""
    x = m.emb[[tok]].astype(np.float32)
    grp = m.n_heads // m.n_kv
    for i, L in enumerate(m.layers):
        h = m._rms(x, L["an"])
        heads = lambda y, n: np.ascontiguousarray(y.reshape(1, n, -1).transpose(1, 0, 2))
        q = m._rope(heads(h @ L["q"].T, m.n_heads), np.array([pos]))
        k = m._rope(heads(h @ L["k"].T, m.n_kv), np.array([pos]))
        v = heads(h @ L["v"].T, m.n_kv)
        if quant:
            k, v = quant(k), quant(v)
        K = np.concatenate([cache[i][0], k], 1)
        V = np.concatenate([cache[i][1], v], 1)
        cache[i] = (K, V)
        s = q @ np.repeat(K, grp, 0).transpose(0, 2, 1) / math.sqrt(m.head_dim)
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ np.repeat(V, grp, 0)
        x = x + a.transpose(1, 0, 2).reshape(1, -1) @ L["o"].T
        h = m._rms(x, L["fn"])
        g = h @ L["g"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ L["u"].T)) @ L["d"].T
    logits = (m._rms(x, m.norm) @ m.out.T)[0].astype(np.float64)
    top = logits.max()
    return logits - (top + np.log(np.exp(logits - top).sum()))


def main():
    which = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    m = extract_kv.NumpyLlama(os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    text = open(os.path.join(ROOT, "..", "shared", "data", "text", "prideprejudice.txt"),
                encoding="utf-8").read()
    ids = m.tokenizer()(text)
    report = json.load(open(os.path.join(ROOT, "bench", "results", "eval-smollm2-iso.json")))
    ev = report["eval"]
    P, C = ev["settings"]["prefix"], ev["settings"]["cont"]
    start = ev["passage_starts"][which]
    toks = ids[start:start + P + C + 1]
    _, prefix = m.forward(toks[:P])
    targets = toks[P + 1:P + C + 1]
    runs = {"exact": None}
    runs.update({f"int{b}": (lambda x, b=b: int_quant(x, b)) for b in BITS})
    rust = {"exact": ev["exact"]["ppl_passages"][which]}
    rust.update({p["plan"]: p["ppl_passages"][which] for p in ev["plans"]})
    print(f"passage {which} (tokens {start}..{start + P + C + 1}), prefix {P}, continuation {C}")
    for name, quant in runs.items():
        cache = [(quant(c["k"]) if quant else c["k"], quant(c["v"]) if quant else c["v"])
                 for c in prefix]
        nll = -np.mean([step(m, toks[P + i], P + i, cache, quant)[t]
                        for i, t in enumerate(targets)])
        print(f"{name:6s} numpy ppl {math.exp(nll):9.4f}   kv-eval ppl {rust[name]:9.4f}")


if __name__ == "__main__":
    main()
