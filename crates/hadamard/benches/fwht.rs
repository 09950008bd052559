//! Criterion benchmarks of the transform against a memcpy of the same bytes.
//!
//! For `d` in {64, 128, 256} and batches of 256 vectors (in cache) and 65 536 vectors
//! (larger than the cache), each group times the best tier's in-place forward transform
//! (with signs, as the codec uses it) and `copy_from_slice` of the same bytes, with
//! throughput in elements, so the report shows both side by side. CI only compiles this
//! (`cargo bench -p hadamard --no-run`); `examples/fwht_throughput.rs` prints a table.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hadamard::Planner;

fn fwht(c: &mut Criterion) {
    let mut planner = Planner::new();
    for d in [64usize, 128, 256] {
        let plan = planner
            .plan_with_signs(d, 0x5EED)
            .expect("supported length");
        let mut group = c.benchmark_group(format!("fwht_d{d}_{}", planner.tier()));
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20);
        for batch in [256usize, 65_536] {
            let n = d * batch;
            group.throughput(Throughput::Elements(n as u64));
            let src: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
                .collect();
            let mut data = src.clone();
            group.bench_function(BenchmarkId::new("forward_inplace", batch), |b| {
                b.iter(|| plan.forward_inplace(black_box(&mut data)));
            });
            let mut dst = vec![0.0f32; n];
            group.bench_function(BenchmarkId::new("memcpy", batch), |b| {
                b.iter(|| {
                    dst.copy_from_slice(black_box(&src));
                    black_box(&mut dst);
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, fwht);
criterion_main!(benches);
