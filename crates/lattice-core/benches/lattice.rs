//! Criterion benchmarks: closest point and codebook encode/decode, per 8- or 4-dim block on
//! one core. Inputs are Gaussian-like blocks scaled to the published operating point.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lattice_core::{Codebook, D4, D4Box, E8, E8Box, Lattice, VoronoiCodebook};

const BLOCKS: usize = 4096;

/// Deterministic pseudo-Gaussian inputs (sum of uniforms), scaled by `scale`.
fn inputs<const N: usize>(scale: f32) -> Vec<[f32; N]> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..BLOCKS)
        .map(|_| std::array::from_fn(|_| scale * (uniform() + uniform() + uniform() + uniform())))
        .collect()
}

fn bench<const N: usize>(c: &mut Criterion, name: &str, scale: f32, f: impl Fn(&[f32; N]) -> u128) {
    let xs = inputs::<N>(scale);
    let mut group = c.benchmark_group("lattice");
    group.throughput(Throughput::Elements(BLOCKS as u64));
    group.bench_function(name, |b| {
        b.iter(|| xs.iter().fold(0u128, |acc, x| acc ^ f(black_box(x))))
    });
    group.finish();
}

fn closest(c: &mut Criterion) {
    bench::<4>(c, "d4_closest_point", 10.0, |x| {
        D4::closest_point(x)[0].to_bits() as u128
    });
    bench::<8>(c, "e8_closest_point", 10.0, |x| {
        E8::closest_point(x)[0].to_bits() as u128
    });
}

fn boxes(c: &mut Criterion) {
    let d4 = D4Box::new(38).unwrap();
    bench::<4>(c, "d4_box_q38_quantize", 38.0, |x| {
        d4.quantize(x)[0].to_bits() as u128
    });
    bench::<4>(c, "d4_box_q38_encode", 38.0, |x| d4.encode(x));
    let e8 = E8Box::new(38).unwrap();
    bench::<8>(c, "e8_box_q38_quantize", 38.0, |x| {
        e8.quantize(x)[0].to_bits() as u128
    });
    bench::<8>(c, "e8_box_q38_encode", 38.0, |x| e8.encode(x));
    let indices: Vec<u128> = inputs::<8>(38.0).iter().map(|x| e8.encode(x)).collect();
    let mut group = c.benchmark_group("lattice");
    group.throughput(Throughput::Elements(BLOCKS as u64));
    group.bench_function("e8_box_q38_decode", |b| {
        b.iter(|| {
            indices.iter().fold(0u32, |acc, &i| {
                acc ^ e8.point_at(black_box(i)).unwrap()[7].to_bits()
            })
        })
    });
    group.finish();
}

fn voronoi(c: &mut Criterion) {
    let book = VoronoiCodebook::<E8, 8>::new(16).unwrap();
    bench::<8>(c, "e8_voronoi_q16_encode", 3.0, |x| book.encode(x));
    let indices: Vec<u128> = inputs::<8>(3.0).iter().map(|x| book.encode(x)).collect();
    let mut group = c.benchmark_group("lattice");
    group.throughput(Throughput::Elements(BLOCKS as u64));
    group.bench_function("e8_voronoi_q16_decode", |b| {
        b.iter(|| {
            indices.iter().fold(0u32, |acc, &i| {
                acc ^ book.point_at(black_box(i)).unwrap()[7].to_bits()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, closest, boxes, voronoi);
criterion_main!(benches);
