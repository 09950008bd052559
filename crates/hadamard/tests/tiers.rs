//! Cross-tier parity: every available SIMD tier gives exactly the scalar tier's bits.
//!
//! A tier the CPU lacks is skipped with a printed reason (run with `--nocapture` to see it),
//! never silently passed.

mod common;

use common::{bits, data};
use hadamard::{Fwht, Tier, supported_lengths};
use proptest::prelude::*;

/// The SIMD tiers this CPU has; prints why each missing one is skipped.
fn simd_tiers() -> Vec<Tier> {
    Tier::ALL
        .into_iter()
        .filter(|&t| t != Tier::Scalar)
        .filter(|&t| match Fwht::with_tier(4, None, t) {
            Ok(_) => true,
            Err(e) => {
                println!("skipping tier {t}: {e}");
                false
            }
        })
        .collect()
}

/// Runs all four entry points of both plans on the same data and compares bits.
fn compare(tier: Tier, len: usize, count: usize, seed: Option<u64>, data_seed: u64) {
    let reference = Fwht::with_tier(len, seed, Tier::Scalar).unwrap();
    let fast = Fwht::with_tier(len, seed, tier).unwrap();
    let x = data(data_seed, len * count);
    let ctx = format!("tier {tier}, len {len}, count {count}, seed {seed:?}");

    let (mut a, mut b) = (x.clone(), x.clone());
    reference.forward_inplace(&mut a);
    fast.forward_inplace(&mut b);
    assert_eq!(bits(&a), bits(&b), "forward_inplace, {ctx}");

    let (mut a, mut b) = (x.clone(), x.clone());
    reference.inverse_inplace(&mut a);
    fast.inverse_inplace(&mut b);
    assert_eq!(bits(&a), bits(&b), "inverse_inplace, {ctx}");

    let (mut a, mut b) = (vec![0.0; x.len()], vec![1.0; x.len()]);
    reference.forward(&x, &mut a);
    fast.forward(&x, &mut b);
    assert_eq!(bits(&a), bits(&b), "forward, {ctx}");

    reference.inverse(&x, &mut a);
    fast.inverse(&x, &mut b);
    assert_eq!(bits(&a), bits(&b), "inverse, {ctx}");
}

/// Every supported length, with and without signs, a batch of three vectors.
#[test]
fn every_length_is_bit_identical_to_scalar() {
    for tier in simd_tiers() {
        for len in supported_lengths(..) {
            compare(tier, len, 3, None, len as u64);
            compare(tier, len, 3, Some(len as u64 * 31), len as u64 + 1);
        }
    }
}

/// The in-place and out-of-place calls of one plan agree bit for bit.
#[test]
fn inplace_and_out_of_place_agree() {
    for tier in Tier::available() {
        for len in [8, 64, 96, 128, 4096] {
            let plan = Fwht::with_tier(len, Some(1), tier).unwrap();
            let x = data(5, 4 * len);
            let mut a = x.clone();
            plan.forward_inplace(&mut a);
            let mut b = vec![0.0; x.len()];
            plan.forward(&x, &mut b);
            assert_eq!(bits(&a), bits(&b), "{tier} {len}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random lengths, batch sizes, sign seeds and data.
    #[test]
    fn random_batches_are_bit_identical(
        idx in 0usize..1000,
        count in 1usize..5,
        seed in proptest::option::of(any::<u64>()),
        data_seed in any::<u64>(),
    ) {
        let lens: Vec<usize> = supported_lengths(..).collect();
        let len = lens[idx % lens.len()];
        for tier in simd_tiers() {
            compare(tier, len, count, seed, data_seed);
        }
    }
}
