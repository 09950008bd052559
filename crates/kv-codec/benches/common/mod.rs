//! The caches the cache benchmarks compare: shared by the criterion bench (`benches/cache.rs`)
//! and the side-by-side ratio table (`examples/cache_throughput.rs`), so both measure the
//! same formats on the same data.

use kv_codec::Input;
use kv_codec::cache::{CacheConfig, Kivi, KvCache, LayerPolicy};
use kv_codec::format::Dtype;

/// Values per head vector.
pub const D: usize = 128;
/// KV heads per layer.
pub const KV_HEADS: usize = 8;
/// Query heads per layer (GQA groups of 4).
pub const Q_HEADS: usize = 32;

/// The formats compared, by name: the default codec at 4.3 bits per value, three compressed
/// baselines (llama.cpp `q4_0` after rotation, per-token `int4` as the GPU's tensor-core
/// attention takes it, KIVI-2) and uncompressed f32 and bf16 pages.
pub fn formats() -> Vec<(&'static str, LayerPolicy)> {
    let codec = |s: &str| {
        let spec = s.parse().expect("a valid spec");
        LayerPolicy::codecs(spec, spec)
    };
    vec![
        ("voronoi-e8-q16-s4", codec("voronoi-e8-q16-s4")),
        ("q4_0", codec("q4_0")),
        ("int4", codec("int4")),
        ("kivi-2", LayerPolicy::Kivi(Kivi::KIVI2)),
        ("f32", LayerPolicy::uncompressed(Dtype::F32)),
        ("bf16", LayerPolicy::uncompressed(Dtype::Bf16)),
    ]
}

/// Deterministic pseudo-Gaussian-ish values (a cheap hash, not a distribution test).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let mut x = (i ^ seed.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            x ^= x >> 29;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 32;
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0
        })
        .collect()
}

/// A one-layer cache of `tokens` tokens, appended in prefill chunks of 512.
pub fn filled(policy: LayerPolicy, batch: usize, tokens: usize) -> KvCache {
    let cache = KvCache::new(CacheConfig::new(batch, KV_HEADS, D, vec![policy]))
        .expect("a valid configuration");
    let chunk = 512;
    for c in 0..tokens / chunk {
        let k = values(batch * KV_HEADS * chunk * D, 2 * c as u64);
        let v = values(k.len(), 2 * c as u64 + 1);
        cache
            .append(0, Input::F32(&k), Input::F32(&v))
            .expect("finite values");
    }
    cache
}

/// The contexts measured: 1024, 8192 and 32768 tokens, or the comma list in
/// `KV_BENCH_TOKENS`.
pub fn token_counts() -> Vec<usize> {
    std::env::var("KV_BENCH_TOKENS")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1024, 8192, 32768])
}

/// Token `t` of a `[1, KV_HEADS, tokens, D]` tensor as a `[1, KV_HEADS, 1, D]` tensor.
pub fn token(x: &[f32], tokens: usize, t: usize) -> Vec<f32> {
    (0..KV_HEADS)
        .flat_map(|h| x[(h * tokens + t) * D..][..D].to_vec())
        .collect()
}
