//! Helpers shared by the integration tests: a dense f64 oracle and test data.

#![allow(dead_code)] // Each test binary uses a different subset of the helpers.

use hadamard::{Shape, SplitMix64};

/// The orthonormal Hartley matrix `C_m` in f64, row-major.
pub fn hartley(m: usize) -> Vec<f64> {
    let mut c = Vec::with_capacity(m * m);
    for r in 0..m {
        for s in 0..m {
            let theta = 2.0 * std::f64::consts::PI * ((r * s) % m) as f64 / m as f64;
            c.push((theta.cos() + theta.sin()) / (m as f64).sqrt());
        }
    }
    c
}

/// `T · x` in f64 by the dense definition `T[r*p + c][s*p + d] = C_m[r][s] * H_p[c][d]`
/// with `H_p[c][d] = (-1)^popcount(c & d) / sqrt(p)` (O(n^2)).
pub fn dense(len: usize, x: &[f32]) -> Vec<f64> {
    let Shape { pow2: p, odd: m } = Shape::of(len).unwrap();
    let cm = hartley(m);
    let hp = 1.0 / (p as f64).sqrt();
    (0..len)
        .map(|i| {
            let (r, c) = (i / p, i % p);
            (0..len)
                .map(|j| {
                    let (s, d) = (j / p, j % p);
                    let h = if (c & d).count_ones() % 2 == 0 {
                        hp
                    } else {
                        -hp
                    };
                    cm[r * m + s] * h * f64::from(x[j])
                })
                .sum()
        })
        .collect()
}

/// Deterministic pseudo-random values in [-1, 1), with some exact zeros, negative zeros
/// and tiny and large magnitudes mixed in, from a SplitMix64 stream.
pub fn data(seed: u64, count: usize) -> Vec<f32> {
    let mut g = SplitMix64::new(seed);
    (0..count)
        .map(|_| {
            let w = g.next_u64();
            let u = (w >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            match w & 63 {
                0 => 0.0,
                1 => -0.0,
                2 => u * 1e-30,
                3 => u * 1e20,
                4 => u * 1e-40, // subnormal
                _ => u,
            }
        })
        .collect()
}

/// Plain Gaussian-ish data without special values, for tolerance tests.
pub fn smooth(seed: u64, count: usize) -> Vec<f32> {
    let mut g = SplitMix64::new(seed);
    (0..count)
        .map(|_| {
            let a = (g.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
            let b = (g.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
            a + b - 1.0
        })
        .collect()
}

/// The bit patterns of a slice, for exact comparison with readable failures.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Euclidean norm in f64.
pub fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&a| f64::from(a) * f64::from(a))
        .sum::<f64>()
        .sqrt()
}
