//! The fast transforms of every tier against the dense f64 definition of `T`.

mod common;

use common::{dense, norm, smooth};
use hadamard::{Fwht, Tier, supported_lengths};

/// Relative error bound: a few ulps per butterfly stage is far below this.
const TOL: f64 = 2e-6;

fn check(tier: Tier, len: usize, seed: Option<u64>) {
    let plan = Fwht::with_tier(len, seed, tier).unwrap();
    let x = smooth(len as u64 ^ 0xABCD, len);
    let scale = norm(&x);

    // Forward: T·diag(s)·x.
    let sx: Vec<f32> = match plan.signs() {
        Some(s) => x.iter().zip(s).map(|(a, b)| a * b).collect(),
        None => x.clone(),
    };
    let want = dense(len, &sx);
    let mut got = vec![0.0; len];
    plan.forward(&x, &mut got);
    let err = got
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max);
    assert!(
        err <= TOL * scale,
        "{tier} forward len {len}: error {err:e} (norm {scale})"
    );

    // Inverse: diag(s)·T·x.
    let mut want = dense(len, &x);
    if let Some(s) = plan.signs() {
        for (w, &si) in want.iter_mut().zip(s) {
            *w *= f64::from(si);
        }
    }
    plan.inverse(&x, &mut got);
    let err = got
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max);
    assert!(
        err <= TOL * scale,
        "{tier} inverse len {len}: error {err:e}"
    );
}

#[test]
fn every_length_up_to_512_matches_the_dense_matrix() {
    for tier in Tier::available() {
        for len in supported_lengths(..=512) {
            check(tier, len, None);
            check(tier, len, Some(len as u64));
        }
    }
}

#[test]
fn large_lengths_match_the_dense_matrix() {
    for tier in Tier::available() {
        for len in [768, 1024, 1792, 2048, 2560, 3072, 3584, 4096] {
            check(tier, len, Some(7));
        }
    }
}
