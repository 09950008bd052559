//! Algebraic properties: involution, inverse, energy preservation (proptest).

mod common;

use common::norm;
use hadamard::{Fwht, Tier, supported_lengths};
use proptest::prelude::*;

/// A supported length chosen by index.
fn length(idx: usize) -> usize {
    let lens: Vec<usize> = supported_lengths(..).collect();
    lens[idx % lens.len()]
}

fn max_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
        .fold(0.0, f64::max)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// `T` is its own inverse: forward twice (no signs) is the identity up to rounding.
    #[test]
    fn forward_is_an_involution(idx in 0usize..1000, seed in any::<u64>()) {
        let len = length(idx);
        let x = common::smooth(seed, 2 * len);
        for tier in Tier::available() {
            let plan = Fwht::with_tier(len, None, tier).unwrap();
            let mut y = x.clone();
            plan.forward_inplace(&mut y);
            plan.forward_inplace(&mut y);
            prop_assert!(max_diff(&x, &y) < 1e-5, "{} {}", tier, len);
        }
    }

    /// With signs, inverse undoes forward (and forward undoes inverse).
    #[test]
    fn inverse_undoes_forward(idx in 0usize..1000, signs in any::<u64>(), seed in any::<u64>()) {
        let len = length(idx);
        let x = common::smooth(seed, 3 * len);
        for tier in Tier::available() {
            let plan = Fwht::with_tier(len, Some(signs), tier).unwrap();
            let mut y = vec![0.0; x.len()];
            plan.forward(&x, &mut y);
            plan.inverse_inplace(&mut y);
            prop_assert!(max_diff(&x, &y) < 1e-5, "{} {}", tier, len);
            plan.inverse(&x, &mut y);
            plan.forward_inplace(&mut y);
            prop_assert!(max_diff(&x, &y) < 1e-5, "{} {}", tier, len);
        }
    }

    /// The transform is orthonormal: every vector keeps its Euclidean norm.
    #[test]
    fn energy_is_preserved(
        idx in 0usize..1000,
        signs in proptest::option::of(any::<u64>()),
        x in proptest::collection::vec(-1e3f32..1e3, 4096),
    ) {
        let len = length(idx);
        let plan = Fwht::with_tier(len, signs, Tier::detect()).unwrap();
        let count = x.len() / len;
        let x = &x[..count * len];
        let mut y = x.to_vec();
        plan.forward_inplace(&mut y);
        for (a, b) in x.chunks_exact(len).zip(y.chunks_exact(len)) {
            let (na, nb) = (norm(a), norm(b));
            prop_assert!((na - nb).abs() <= 1e-5 * na.max(1e-3), "{} -> {}", na, nb);
        }
    }

    /// Linearity, checked exactly where it must be exact: scaling by a power of two.
    #[test]
    fn scaling_by_two_commutes(idx in 0usize..1000, seed in any::<u64>()) {
        let len = length(idx);
        let x = common::smooth(seed, len);
        let plan = Fwht::new(len).unwrap();
        let mut a = x.clone();
        plan.forward_inplace(&mut a);
        let mut b: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
        plan.forward_inplace(&mut b);
        for (p, q) in a.iter().zip(&b) {
            prop_assert_eq!((p * 2.0).to_bits(), q.to_bits());
        }
    }
}
