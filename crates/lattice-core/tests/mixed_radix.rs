//! Joint mixed-radix indexing: round trips, exact widths and rejection of out-of-range data.
#![allow(
    clippy::manual_div_ceil,
    reason = "the closed forms ((2Q+1)^n + 1)/2 are written as in the literature"
)]

use lattice_core::{Codebook, E8Box, MixedRadix};
use proptest::prelude::*;

fn digits_and_radices() -> impl Strategy<Value = (Vec<u64>, Vec<u64>)> {
    prop::collection::vec(1u64..=u64::MAX, 0..24).prop_flat_map(|radices| {
        let digits: Vec<_> = radices.iter().map(|&r| 0..r).collect();
        (digits, Just(radices))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_decode_round_trip((digits, radices) in digits_and_radices()) {
        let m = MixedRadix::new(&radices).unwrap();
        let mut limbs = vec![0; m.limbs()];
        m.encode(&digits, &mut limbs);
        let used_bits = limbs.iter().rposition(|&l| l != 0).map_or(0, |i| 64 * i as u32 + 64 - limbs[i].leading_zeros());
        prop_assert!(used_bits <= m.bits());
        let mut back = vec![0; digits.len()];
        let mut scratch = vec![0; m.limbs()];
        m.decode(&limbs, &mut back, &mut scratch).unwrap();
        prop_assert_eq!(back, digits);
    }

    #[test]
    fn width_is_the_ceiling_of_the_log(radices in prop::collection::vec(2u64..1000, 1..6)) {
        let product: u128 = radices.iter().map(|&r| u128::from(r)).product();
        let m = MixedRadix::new(&radices).unwrap();
        prop_assert_eq!(m.bits(), 128 - (product - 1).leading_zeros());
    }

    #[test]
    fn random_limbs_decode_or_error(radices in prop::collection::vec(2u64..=u64::MAX, 1..8), seed in any::<u64>()) {
        let m = MixedRadix::new(&radices).unwrap();
        // Random bits within the width: decoding either succeeds and re-encodes to the same
        // limbs, or reports an out-of-range index.
        let mut limbs: Vec<u64> = (0..m.limbs() as u64).map(|i| seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(i as u32 * 7) ^ i).collect();
        let spare = 64 * m.limbs() as u32 - m.bits();
        if let Some(top) = limbs.last_mut() { *top >>= spare; }
        let mut digits = vec![0; radices.len()];
        let mut scratch = vec![0; m.limbs()];
        if m.decode(&limbs, &mut digits, &mut scratch).is_ok() {
            let mut again = vec![0; m.limbs()];
            m.encode(&digits, &mut again);
            prop_assert_eq!(again, limbs);
        }
    }
}

#[test]
fn joint_packing_saves_the_per_block_ceiling() {
    // Published D4 at Q = 38, d = 128: 32 blocks of (77^4 + 1)/2 points. Rounding each
    // block up costs 32 · 25 = 800 bits; jointly the same indices need 771.
    let count = (77u64.pow(4) + 1) / 2;
    assert_eq!(64 - (count - 1).leading_zeros(), 25);
    let m = MixedRadix::uniform(count, 32).unwrap();
    assert_eq!(m.bits(), 771);
    // E8 at Q = 38: 16 blocks; per block 16 · 51 = 816 bits, jointly 801.
    let e8 = E8Box::new(38).unwrap();
    assert_eq!(e8.index_bits(), 51);
    let joint = MixedRadix::uniform(u64::try_from(e8.size()).unwrap(), 16).unwrap();
    assert_eq!(joint.bits(), 801);
}
