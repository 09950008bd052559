//! Decode attention and append throughput of the paged KV cache, every format side by side in
//! one run: the default codec's compressed pages against the same attention kernel on f32
//! and bf16 pages (and two compressed baselines), with the bits per value each cache really
//! holds.
//!
//! Run with `cargo run --release -p kv-codec --example cache_throughput [-- --json OUT]`;
//! `-- --from JSON` prints the tables of a results file (the README's)
//! (`KV_BENCH_TOKENS=1024,8192` picks the contexts; rayon's pool, so `RAYON_NUM_THREADS`
//! sets the threads). The formats and data are the criterion bench's (`benches/cache.rs`).
//!
//! Attention: one decode step (`attend` of one query position per batch row) over the whole
//! context, d = 128, 8 KV heads, 32 query heads, batch 1 and 8. Each format is timed in
//! turn within each of several rounds, and each format's median over the rounds is kept, so
//! that drifts of a shared machine hit every format alike; the ratios to f32 and bf16 pages
//! are what the run shows, not the absolute times. Append: tokens per second for one
//! 1024-token prefill chunk and for 1024 tokens appended one by one, also interleaved.

#[path = "../benches/common/mod.rs"]
mod common;
#[path = "../benches/common/machine.rs"]
mod machine;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{D, KV_HEADS, Q_HEADS, filled, formats, token, token_counts, values};
use kv_codec::cache::{CacheConfig, KvCache, LayerPolicy, Storage};
use kv_codec::format::Dtype;
use kv_codec::{CodecConfig, Input, Output};
use serde_json::json;

/// Rounds over all formats; each format's median is kept.
const ROUNDS: usize = 7;
/// Least time of one format's timed calls within a round.
const MIN_ROUND: Duration = Duration::from_millis(40);
/// Tokens appended by the append measurements.
const APPEND_TOKENS: usize = 1024;

/// The median of `ROUNDS` measurements of seconds per call, each call of `fs[i]` timed in
/// turn within every round.
fn interleaved_secs(fs: &mut [Box<dyn FnMut() + '_>]) -> Vec<f64> {
    // Calls per round, per format: enough for MIN_ROUND.
    let reps: Vec<u32> = fs
        .iter_mut()
        .map(|f| {
            let t = Instant::now();
            f();
            let once = t.elapsed().max(Duration::from_micros(1));
            (MIN_ROUND.as_secs_f64() / once.as_secs_f64())
                .ceil()
                .max(1.0) as u32
        })
        .collect();
    let mut samples = vec![Vec::with_capacity(ROUNDS); fs.len()];
    for _ in 0..ROUNDS {
        for ((f, &n), s) in fs.iter_mut().zip(&reps).zip(&mut samples) {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            s.push(t.elapsed().as_secs_f64() / f64::from(n));
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect()
}

/// The bits per value a policy's formats nominally take (KIVI: its codes and per-group
/// minimum and step, not its f16 window).
fn nominal_bits_per_value(policy: &LayerPolicy) -> f64 {
    let storage = |s: &Storage| match s {
        Storage::Dense(Dtype::F32) => 32.0,
        Storage::Dense(_) => 16.0,
        Storage::Codec(spec) => CodecConfig::new(*spec, D)
            .build()
            .expect("the bench's codecs build")
            .bits_per_value(),
    };
    match policy {
        LayerPolicy::PerVector { k, v, .. } => f64::midpoint(storage(k), storage(v)),
        LayerPolicy::Kivi(k) => f64::from(k.bits) + 32.0 / f64::from(k.group),
    }
}

fn attention_rows(rows: &mut Vec<serde_json::Value>) {
    for batch in [1usize, 8] {
        for tokens in token_counts() {
            let caches: Vec<(&str, LayerPolicy, KvCache)> = formats()
                .into_iter()
                .map(|(name, policy)| (name, policy, filled(policy, batch, tokens)))
                .collect();
            let q = values(batch * Q_HEADS * D, 99);
            let mut outs = vec![vec![0f32; q.len()]; caches.len()];
            let mut calls: Vec<Box<dyn FnMut() + '_>> = caches
                .iter()
                .zip(&mut outs)
                .map(|((_, _, cache), out)| {
                    let q = &q;
                    Box::new(move || {
                        cache
                            .attend(0, Input::F32(black_box(q)), Q_HEADS, Output::F32(out))
                            .expect("attention");
                        black_box(&mut *out);
                    }) as Box<dyn FnMut() + '_>
                })
                .collect();
            let secs = interleaved_secs(&mut calls);
            drop(calls);
            let of = |name: &str| {
                secs[caches
                    .iter()
                    .position(|c| c.0 == name)
                    .expect("f32 and bf16 are measured")]
            };
            let (f32_secs, bf16_secs) = (of("f32"), of("bf16"));
            for ((name, policy, cache), &s) in caches.iter().zip(&secs) {
                let values = batch * KV_HEADS * tokens * D * 2;
                let held = cache.bytes_held();
                rows.push(json!({
                    "batch": batch,
                    "tokens": tokens,
                    "format": name,
                    "held_bits_per_value": (held * 8) as f64 / values as f64,
                    "nominal_bits_per_value": nominal_bits_per_value(policy),
                    "bytes_held": held,
                    "seconds_per_step": s,
                    "vs_f32": s / f32_secs,
                    "vs_bf16": s / bf16_secs,
                }));
            }
        }
    }
}

/// Seconds to fill a fresh cache of each configuration with `chunks` of `[1, KV_HEADS,
/// tokens, D]` keys and values, appended in order.
fn append_secs(configs: &[(&str, CacheConfig)], chunks: &[(Vec<f32>, Vec<f32>)]) -> Vec<f64> {
    let mut calls: Vec<Box<dyn FnMut() + '_>> = configs
        .iter()
        .map(|(_, config)| {
            Box::new(move || {
                let cache = KvCache::new(config.clone()).expect("valid");
                for (k, v) in chunks {
                    cache
                        .append(0, Input::F32(k), Input::F32(v))
                        .expect("finite");
                }
                black_box(cache);
            }) as Box<dyn FnMut() + '_>
        })
        .collect();
    interleaved_secs(&mut calls)
}

fn append_rows(rows: &mut Vec<serde_json::Value>) {
    let k = values(KV_HEADS * APPEND_TOKENS * D, 7);
    let v = values(k.len(), 8);
    let steps: Vec<(Vec<f32>, Vec<f32>)> = (0..APPEND_TOKENS)
        .map(|t| (token(&k, APPEND_TOKENS, t), token(&v, APPEND_TOKENS, t)))
        .collect();
    let configs: Vec<(&str, CacheConfig)> = formats()
        .into_iter()
        .map(|(name, policy)| (name, CacheConfig::new(1, KV_HEADS, D, vec![policy])))
        .collect();
    let prefill_secs = append_secs(&configs, &[(k, v)]);
    let decode_secs = append_secs(&configs, &steps);
    for (((name, _), p), d) in configs.iter().zip(&prefill_secs).zip(&decode_secs) {
        rows.push(json!({
            "format": name,
            "prefill_tokens_s": APPEND_TOKENS as f64 / p,
            "decode_tokens_s": APPEND_TOKENS as f64 / d,
        }));
    }
}

/// The report's two tables as Markdown (what `--from` prints for the README).
fn markdown(report: &serde_json::Value) -> String {
    let f = |row: &serde_json::Value, key: &str| row[key].as_f64().unwrap_or(f64::NAN);
    // Runs before the build was recorded leave it out.
    let build = report["simd_build"]
        .as_str()
        .map_or(String::new(), |b| format!(", {b} build"));
    let mut out = format!(
        "{}, {} threads{build}; d = {D}, {KV_HEADS} KV heads, {Q_HEADS} query heads; one decode step, median of {} interleaved rounds; ratios = time / time on f32 (bf16) pages.\n\n",
        report["cpu"].as_str().unwrap_or("unknown CPU"),
        report["threads"],
        report["rounds"]
    );
    out.push_str("| batch | tokens | format | held bpv | nominal bpv | ms/step | vs f32 | vs bf16 | GB/s held |\n");
    out.push_str("|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for r in report["attention"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {:.1} |\n",
            r["batch"],
            r["tokens"],
            r["format"].as_str().unwrap_or("?"),
            f(r, "held_bits_per_value"),
            f(r, "nominal_bits_per_value"),
            f(r, "seconds_per_step") * 1e3,
            f(r, "vs_f32"),
            f(r, "vs_bf16"),
            f(r, "bytes_held") / f(r, "seconds_per_step") / 1e9,
        ));
    }
    out.push_str(&format!(
        "\nAppend, one batch row, tokens/s ({} tokens as one prefill chunk / one by one):\n\n",
        report["append_tokens"]
    ));
    out.push_str("| format | prefill tokens/s | decode tokens/s |\n|---|---:|---:|\n");
    for r in report["append"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} |\n",
            r["format"].as_str().unwrap_or("?"),
            f(r, "prefill_tokens_s"),
            f(r, "decode_tokens_s")
        ));
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json_path = match args.as_slice() {
        [] => None,
        [flag, path] if flag == "--json" => Some(path.clone()),
        [flag, path] if flag == "--from" => {
            let text = std::fs::read_to_string(path).expect("a readable results file");
            let report = serde_json::from_str(&text).expect("a results file of this example");
            print!("{}", markdown(&report));
            return;
        }
        other => panic!("usage: cache_throughput [--json OUT | --from JSON], got {other:?}"),
    };
    let mut attention = Vec::new();
    attention_rows(&mut attention);
    let mut append = Vec::new();
    append_rows(&mut append);
    let report = json!({
        "cpu": machine::cpu_model(),
        "simd_build": machine::simd_build(),
        "threads": rayon::current_num_threads(),
        "head_dim": D,
        "kv_heads": KV_HEADS,
        "q_heads": Q_HEADS,
        "rounds": ROUNDS,
        "append_tokens": APPEND_TOKENS,
        "attention": attention,
        "append": append,
    });
    print!("{}", markdown(&report));
    if let Some(path) = json_path {
        let text = serde_json::to_string_pretty(&report).expect("JSON values serialise");
        std::fs::write(&path, text + "\n").expect("JSON written");
        println!("\nwrote {path}");
    }
}
