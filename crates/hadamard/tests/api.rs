//! API behaviour: errors, supported lengths, planner cache, tiers, panics.

use std::sync::Arc;

use hadamard::{Error, Fwht, MAX_LEN, Planner, Shape, Tier, is_supported, supported_lengths};

#[test]
fn supported_lengths_are_exactly_the_documented_set() {
    let all: Vec<usize> = supported_lengths(..).collect();
    for n in 0..=2 * MAX_LEN {
        let pow2 = if n == 0 { 0 } else { 1 << n.trailing_zeros() };
        let odd = if n == 0 { 0 } else { n / pow2 };
        let want =
            (1..=MAX_LEN).contains(&n) && (odd == 1 || ([3, 5, 7].contains(&odd) && pow2 >= 4));
        assert_eq!(is_supported(n), want, "{n}");
        assert_eq!(all.binary_search(&n).is_ok(), want, "{n}");
    }
    // Head dimensions of common models.
    for n in [
        64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768,
    ] {
        assert!(is_supported(n), "{n}");
    }
    assert_eq!(Shape::of(96).unwrap(), Shape { pow2: 32, odd: 3 });
    assert_eq!(Shape::of(112).unwrap().len(), 112);
    assert_eq!(
        supported_lengths(10..=24).collect::<Vec<_>>(),
        [12, 16, 20, 24]
    );
}

#[test]
fn unsupported_lengths_error_and_say_what_is_supported() {
    for len in [0, 6, 9, 10, 14, 25, 100, 4097, 6144, 8192, usize::MAX] {
        let err = Fwht::new(len).unwrap_err();
        assert_eq!(
            err,
            Error::UnsupportedLength {
                len,
                max_len: MAX_LEN
            }
        );
        let msg = err.to_string();
        assert!(msg.contains(&len.to_string()), "{msg}");
        assert!(msg.contains("supported: 2^k for 1 <= 2^k <= 4096"), "{msg}");
        assert!(msg.contains("2^k*m with m in {3, 5, 7}"), "{msg}");
        assert!(Planner::new().plan(len).is_err());
    }
}

#[test]
fn planner_caches_plans_by_length_and_seed() {
    let mut planner = Planner::new();
    assert_eq!(planner.tier(), Tier::detect());
    let a = planner.plan(128).unwrap();
    let b = planner.plan(128).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let s1 = planner.plan_with_signs(128, 1).unwrap();
    let s1b = planner.plan_with_signs(128, 1).unwrap();
    let s2 = planner.plan_with_signs(128, 2).unwrap();
    assert!(Arc::ptr_eq(&s1, &s1b));
    assert!(!Arc::ptr_eq(&s1, &s2));
    assert!(!Arc::ptr_eq(&a, &s1));
    assert_eq!(a.len(), 128);
    assert_eq!(s2.seed(), Some(2));
    assert_eq!(a.tier(), planner.tier());
}

#[test]
fn tiers_are_detected_and_can_be_forced() {
    let best = Tier::detect();
    assert!(best.is_available());
    assert!(Tier::Scalar.is_available());
    assert_eq!(Tier::available().next(), Some(Tier::Scalar));
    for tier in Tier::ALL {
        match Planner::with_tier(tier) {
            Ok(p) => {
                assert!(tier.is_available());
                assert_eq!(p.tier(), tier);
                assert_eq!(Fwht::with_tier(64, None, tier).unwrap().tier(), tier);
            }
            Err(e) => {
                println!("tier {tier} unavailable: {e}");
                assert!(!tier.is_available());
                assert!(matches!(e, Error::TierUnavailable { tier: t, .. } if t == tier));
                assert!(e.to_string().contains("not available"));
            }
        }
    }
    println!("detected tier: {best}");
}

#[test]
fn empty_batches_are_fine() {
    let plan = Fwht::new(64).unwrap();
    plan.forward_inplace(&mut []);
    plan.inverse(&[], &mut []);
}

#[test]
#[should_panic(expected = "not a multiple of the transform length 64")]
fn a_ragged_batch_panics() {
    Fwht::new(64).unwrap().forward_inplace(&mut [0.0; 65]);
}

#[test]
#[should_panic(expected = "differs from output length")]
fn mismatched_out_of_place_lengths_panic() {
    Fwht::new(4).unwrap().forward(&[0.0; 8], &mut [0.0; 4]);
}

#[test]
fn plans_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Fwht>();
    check::<Planner>();
}
