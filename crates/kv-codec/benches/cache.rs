//! Criterion benchmarks of the paged KV cache: decode attention on compressed pages against
//! the same kernel on f32 and bf16 pages, and append throughput.
//!
//! * `decode_attention_b{batch}_t{tokens}`: one decode step (`attend` of one query
//!   position) over `tokens` tokens of context, d = 128, 8 KV heads, 32 query heads, batch
//!   1 and 8, for the formats of `common::formats` (the default codec, compressed
//!   baselines, uncompressed f32 and bf16 pages), all in one run so that their ratios
//!   compare like with like.
//! * `append_{prefill,decode}`: tokens per second appended as one 1024-token prefill chunk
//!   and token by token.
//!
//! The contexts are 1024, 8192 and 32768 tokens; `KV_BENCH_TOKENS=1024,8192` (a comma
//! list) picks others: filling the 32k batch-8 caches encodes 4 M vectors per format,
//! which takes minutes with a slow encoder. CI only compiles this file
//! (`cargo check --benches`).

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{D, KV_HEADS, Q_HEADS, filled, formats, token, token_counts, values};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kv_codec::cache::{CacheConfig, KvCache};
use kv_codec::{Input, Output};

fn decode_attention(c: &mut Criterion) {
    for batch in [1usize, 8] {
        for tokens in token_counts() {
            let mut group = c.benchmark_group(format!("decode_attention_b{batch}_t{tokens}"));
            group
                .sample_size(10)
                .warm_up_time(Duration::from_millis(300))
                .measurement_time(Duration::from_secs(2));
            let q = values(batch * Q_HEADS * D, 99);
            let mut out = vec![0f32; q.len()];
            for (name, policy) in formats() {
                let cache = filled(policy, batch, tokens);
                group.bench_function(BenchmarkId::from_parameter(name), |b| {
                    b.iter(|| {
                        cache
                            .attend(0, Input::F32(black_box(&q)), Q_HEADS, Output::F32(&mut out))
                            .expect("attention");
                        black_box(&mut out);
                    });
                });
            }
            group.finish();
        }
    }
}

fn append(c: &mut Criterion) {
    let prefill = 1024;
    let k = values(KV_HEADS * prefill * D, 7);
    let v = values(k.len(), 8);
    let mut group = c.benchmark_group("append_prefill");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(prefill as u64));
    for (name, policy) in formats() {
        let config = CacheConfig::new(1, KV_HEADS, D, vec![policy]);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let cache = KvCache::new(config.clone()).expect("valid");
                    let start = Instant::now();
                    cache
                        .append(0, Input::F32(&k), Input::F32(&v))
                        .expect("finite");
                    total += start.elapsed();
                }
                total
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("append_decode");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    let steps: Vec<(Vec<f32>, Vec<f32>)> = (0..prefill)
        .map(|t| (token(&k, prefill, t), token(&v, prefill, t)))
        .collect();
    for (name, policy) in formats() {
        let config = CacheConfig::new(1, KV_HEADS, D, vec![policy]);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                // One growing cache per sample: iteration i appends token i.
                let cache = KvCache::new(config.clone()).expect("valid");
                let start = Instant::now();
                for i in 0..iters as usize {
                    let (k, v) = &steps[i % prefill];
                    cache
                        .append(0, Input::F32(k), Input::F32(v))
                        .expect("finite");
                }
                start.elapsed()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decode_attention, append);
criterion_main!(benches);
