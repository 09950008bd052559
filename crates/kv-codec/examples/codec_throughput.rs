//! Encode and decode throughput on one core, bf16 in and bf16 out, against a memcpy of the
//! same bf16 batch measured in the same run.
//!
//! Run with `cargo run --release -p kv-codec --example codec_throughput [-- --json OUT]`.
//! For each head_dim (64, 128, 256) and codec it prints millions of vectors per second on one
//! thread ([`Par::Seq`]) and the ratio of the codec's time to the time of copying the bf16
//! batch (`1.0` = as fast as a memcpy). With `--json OUT` the rows are also written as JSON.
//! The inputs are pseudo-Gaussian vectors, so the data-dependent clipping of the Voronoi codec
//! runs as often as on real K/V after rotation.

#[path = "../benches/common/machine.rs"]
mod machine;

use std::hint::black_box;
use std::time::{Duration, Instant};

use half::bf16;
use kv_codec::codecs::voronoi::default_for_rate;
use kv_codec::{CodecConfig, CodecSpec, Input, Output, Par, decode_batch, encode_batch};

/// Vectors per timed batch: large enough to leave the L1 cache, small enough for L2.
const BATCH: usize = 4096;

/// Seconds per call of `f`: the best of several rounds, each long enough to time reliably.
fn time_per_call(mut f: impl FnMut()) -> f64 {
    f();
    let mut reps = 1u32;
    loop {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        if t.elapsed() > Duration::from_millis(50) {
            break;
        }
        reps *= 2;
    }
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / f64::from(reps)
        })
        .fold(f64::INFINITY, f64::min)
}

/// Deterministic pseudo-Gaussian values (a sum of four uniforms), as bf16.
fn inputs(n: usize) -> Vec<bf16> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..n)
        .map(|_| bf16::from_f32(uniform() + uniform() + uniform() + uniform()))
        .collect()
}

fn main() {
    let json_path = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => None,
        [flag, path] if flag == "--json" => Some(path.clone()),
        other => panic!("usage: codec_throughput [--json OUT], got {other:?}"),
    };
    println!(
        "one thread; {BATCH} vectors per batch, bf16 in and out; ratio = codec time / memcpy time"
    );
    println!();
    println!(
        "| {:>4} | {:<22} | {:>6} | {:>11} | {:>9} | {:>11} | {:>9} |",
        "d", "codec", "bpv", "enc Mvec/s", "enc/copy", "dec Mvec/s", "dec/copy"
    );
    println!(
        "|-----:|:-----------------------|-------:|------------:|----------:|------------:|----------:|"
    );
    let mut rows = Vec::new();
    for d in [64usize, 128, 256] {
        let src = inputs(d * BATCH);
        let mut copy = vec![bf16::ZERO; src.len()];
        let memcpy = time_per_call(|| {
            copy.copy_from_slice(black_box(&src));
            black_box(&mut copy);
        });
        let mut specs: Vec<CodecSpec> = [4.0, 6.0]
            .iter()
            .map(|&r| default_for_rate(r, d).expect("the default codec reaches 4 and 6 bpv"))
            .collect();
        specs.extend(
            [
                "compat-d4-q10",
                "compat-e8-q10",
                "turboquant-b4",
                "q4_0",
                "int4",
                "int8",
                "fp8-e4m3",
                "bf16",
            ]
            .iter()
            .map(|s| s.parse::<CodecSpec>().expect("valid spec")),
        );
        for spec in specs {
            let codec = CodecConfig::new(spec, d).build().expect("codec builds");
            let mut bytes = vec![0u8; codec.encoded_len(BATCH)];
            let mut out = vec![bf16::ZERO; src.len()];
            let enc = time_per_call(|| {
                encode_batch(&*codec, Input::Bf16(black_box(&src)), &mut bytes, Par::Seq)
                    .expect("finite input");
            });
            let dec = time_per_call(|| {
                decode_batch(&*codec, black_box(&bytes), Output::Bf16(&mut out), Par::Seq)
                    .expect("own bytes decode");
            });
            let mvec = |secs: f64| BATCH as f64 / secs / 1e6;
            println!(
                "| {d:>4} | {:<22} | {:>6.3} | {:>11.3} | {:>9.1} | {:>11.3} | {:>9.1} |",
                spec.to_string(),
                codec.bits_per_value(),
                mvec(enc),
                enc / memcpy,
                mvec(dec),
                dec / memcpy
            );
            rows.push(serde_json::json!({
                "head_dim": d,
                "codec": spec.to_string(),
                "bits_per_value": codec.bits_per_value(),
                "encode_mvec_s": mvec(enc),
                "decode_mvec_s": mvec(dec),
                "memcpy_mvec_s": mvec(memcpy),
                "encode_vs_memcpy": enc / memcpy,
                "decode_vs_memcpy": dec / memcpy,
            }));
        }
    }
    if let Some(path) = json_path {
        let report = serde_json::json!({
            "threads": 1,
            "batch": BATCH,
            "cpu": machine::cpu_model(),
            "simd_build": machine::simd_build(),
            "rows": rows,
        });
        let text = serde_json::to_string_pretty(&report).expect("JSON values serialise");
        std::fs::write(&path, text + "\n").expect("JSON written");
        println!("\nwrote {path}");
    }
}
