//! Throughput of the transform on one core, per tier, against `copy_from_slice` of the same
//! bytes measured in the same run.
//!
//! Run with `cargo run --release -p hadamard --example fwht_throughput`. For each vector
//! length `d` and batch size it prints millions of vectors per second on one core and the
//! ratio of the transform's time to the time of copying the batch (`1.0` = as fast as a
//! memcpy; the target is at most 2.0 for batches larger than the cache). Other lengths can
//! be given as arguments: `... --example fwht_throughput -- 96 512`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use hadamard::{Fwht, Tier};

/// Seconds per call of `f`: the best of several rounds, each long enough to time reliably.
fn time_per_call(mut f: impl FnMut()) -> f64 {
    f();
    let mut reps = 1u32;
    loop {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        if t.elapsed() > Duration::from_millis(20) {
            break;
        }
        reps *= 2;
    }
    (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / f64::from(reps)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let best = Tier::detect();
    println!("detected tier: {best}; one thread; ratio = transform time / memcpy time");
    println!();
    println!(
        "| {:>4} | {:>6} | {:<20} | {:>12} | {:>9} |",
        "d", "batch", "tier", "M vectors/s", "x memcpy"
    );
    println!("|-----:|-------:|:---------------------|-------------:|----------:|");
    let mut dims: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("lengths must be integers"))
        .collect();
    if dims.is_empty() {
        dims = vec![64, 128, 256];
    }
    for d in dims {
        for batch in [256usize, 65_536] {
            let n = d * batch;
            let src: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
                .collect();
            let mut dst = vec![0.0f32; n];
            let memcpy = time_per_call(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            });
            let row = |name: &str, secs: f64| {
                println!(
                    "| {d:>4} | {batch:>6} | {name:<20} | {:>12.1} | {:>9.2} |",
                    batch as f64 / secs / 1e6,
                    secs / memcpy
                );
            };
            row("memcpy", memcpy);
            let mut rows: Vec<(String, Tier)> = vec![(format!("best ({best})"), best)];
            rows.extend(Tier::available().map(|t| (t.to_string(), t)));
            for (name, tier) in rows {
                let plan = Fwht::with_tier(d, Some(0x5EED), tier).expect("supported");
                let mut data = src.clone();
                let secs = time_per_call(|| plan.forward_inplace(black_box(&mut data)));
                row(&name, secs);
            }
            let plan = Fwht::with_tier(d, Some(0x5EED), best).expect("supported");
            let secs = time_per_call(|| {
                plan.forward(black_box(&src), &mut dst);
                black_box(&mut dst);
            });
            row(&format!("{best} out-of-place"), secs);
        }
    }
}
