//! Closest-point decoders against a brute-force oracle on random and adversarial inputs.

use lattice_core::{D4, D8, Dn, E8, Lattice, Point, Zn};
use proptest::prelude::*;

/// Squared distance in f64, exact for the half-integer points and f32 inputs used here.
fn dist2<const N: usize>(x: &[f32; N], p: &[f32; N]) -> f64 {
    x.iter()
        .zip(p)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum()
}

/// Every candidate in the integer grid floor(x) − 1 ..= floor(x) + 2 per coordinate (and the
/// same grid shifted by ½ when `half` is set), filtered by `keep`: the nearest point of D_N or
/// E8 always lies in this neighbourhood, so the minimum over it is the true minimum.
fn oracle_min<const N: usize>(x: &[f32; N], keep: impl Fn(&[f32; N]) -> bool, half: bool) -> f64 {
    let mut best = f64::INFINITY;
    let shifts: &[f32] = if half { &[0.0, 0.5] } else { &[0.0] };
    for &shift in shifts {
        let base = x.map(|v| (v - shift).floor() - 1.0);
        let mut offs = [0u8; N];
        loop {
            let mut p = [0f32; N];
            for i in 0..N {
                p[i] = base[i] + f32::from(offs[i]) + shift;
            }
            if keep(&p) {
                best = best.min(dist2(x, &p));
            }
            let mut i = 0;
            while i < N && offs[i] == 3 {
                offs[i] = 0;
                i += 1;
            }
            if i == N {
                break;
            }
            offs[i] += 1;
        }
    }
    best
}

fn check<L: Lattice<N>, const N: usize>(x: &[f32; N], half: bool) {
    let p = L::closest_point(x);
    let point =
        Point::try_from_f32(&p).unwrap_or_else(|| panic!("{p:?} is not a half-integer point"));
    assert!(
        L::contains(&point),
        "{p:?} returned for {x:?} is not in {}",
        L::NAME
    );
    let best = oracle_min(x, |c| L::contains(&Point::from_f32(c)), half);
    assert_eq!(
        dist2(x, &p),
        best,
        "{} decoder is not nearest for {x:?}: got {p:?}",
        L::NAME
    );
}

fn coord() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -8.0f32..8.0,
        // Exact ties: integers and half-integers.
        2 => (-16i32..16).prop_map(|k| k as f32 * 0.5),
        // Quarter points, where E8's two cosets tie.
        1 => (-32i32..32).prop_map(|k| k as f32 * 0.25),
        // Large magnitudes inside the exact domain.
        1 => (-2_000_000i32..2_000_000).prop_map(|k| k as f32 + 0.37),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn d4_is_nearest(x in prop::array::uniform4(coord())) {
        check::<D4, 4>(&x, false);
    }

    #[test]
    fn d8_is_nearest(x in prop::array::uniform8(coord())) {
        check::<D8, 8>(&x, false);
    }

    #[test]
    fn e8_is_nearest(x in prop::array::uniform8(coord())) {
        check::<E8, 8>(&x, true);
    }

    #[test]
    fn z4_is_nearest(x in prop::array::uniform4(coord())) {
        check::<Zn<4>, 4>(&x, false);
    }

    #[test]
    fn d3_is_nearest(x in prop::array::uniform3(coord())) {
        check::<Dn<3>, 3>(&x, false);
    }

    #[test]
    fn lattice_points_are_fixed(k in prop::array::uniform8(-1000i32..1000), half in any::<bool>()) {
        // An E8 point: even-sum integers, or the same plus ½ with the sum kept even.
        let mut z = k;
        if z.iter().sum::<i32>() % 2 != 0 { z[0] += 1; }
        let p = z.map(|v| v as f32 + if half { 0.5 } else { 0.0 });
        prop_assert_eq!(E8::closest_point(&p), p);
    }
}

/// The packing radius is half the shortest non-zero vector (found by the oracle's walk
/// around the origin); the covering radius bounds every decoding distance and is attained
/// at a known deep hole.
fn check_radii<L: Lattice<N>, const N: usize>(deep_hole: [f32; N], half: bool) {
    let nonzero = |p: &[f32; N]| p.iter().any(|&v| v != 0.0) && L::contains(&Point::from_f32(p));
    let shortest = oracle_min(&[0.0; N], nonzero, half);
    assert_eq!(
        shortest,
        L::PACKING_RADIUS2_X4 as f64,
        "{} packing radius",
        L::NAME
    );
    let hole = dist2(&deep_hole, &L::closest_point(&deep_hole));
    assert_eq!(
        4.0 * hole,
        L::COVERING_RADIUS2_X4 as f64,
        "{} covering radius",
        L::NAME
    );
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..10_000 {
        let x: [f32; N] = std::array::from_fn(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 40) as f32 / (1u64 << 20) as f32 - 8.0
        });
        assert!(4.0 * dist2(&x, &L::closest_point(&x)) <= L::COVERING_RADIUS2_X4 as f64);
    }
}

#[test]
fn packing_and_covering_radii_are_right() {
    check_radii::<Zn<4>, 4>([0.5; 4], false);
    check_radii::<D4, 4>([1.0, 0.0, 0.0, 0.0], false);
    check_radii::<D8, 8>([0.5; 8], false);
    check_radii::<E8, 8>([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], true);
}

#[test]
fn tie_rules_are_the_documented_ones() {
    // Ties to even per coordinate.
    assert_eq!(
        Zn::<4>::closest_point(&[0.5, 1.5, -0.5, -2.5]),
        [0.0, 2.0, -0.0, -2.0]
    );
    // D4: odd sum; the largest rounding error (index 1, 0.4) is re-rounded the other way.
    assert_eq!(
        D4::closest_point(&[1.1, 0.4, 0.0, 0.0]),
        [1.0, 1.0, 0.0, 0.0]
    );
    // Equal errors: the lowest index moves.
    assert_eq!(
        D4::closest_point(&[0.3, 0.3, 0.7, 0.0]),
        [1.0, 0.0, 1.0, 0.0]
    );
    // An exact integer point with odd sum: the first coordinate moves up.
    assert_eq!(
        D4::closest_point(&[1.0, 0.0, 0.0, 0.0]),
        [2.0, 0.0, 0.0, 0.0]
    );
    // E8: x = ¼·1 is equidistant from 0 and ½·1; the integer coset wins.
    assert_eq!(E8::closest_point(&[0.25; 8]), [0.0; 8]);
}

#[test]
fn huge_inputs_do_not_panic() {
    for v in [f32::MAX, -f32::MAX, 1e30, f32::INFINITY, f32::NAN] {
        let _ = E8::closest_point(&[v; 8]);
        let _ = D4::closest_point(&[v, 0.0, 1.0, -v]);
    }
}

#[test]
fn fast_rounding_matches_round_ties_even_bit_for_bit() {
    let specials = [
        0.0f32,
        -0.0,
        0.5,
        -0.5,
        1.5,
        2.5,
        -2.5,
        8_388_607.5,
        8_388_608.0,
        4_194_303.5,
        1e-40,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    for x in specials {
        assert_eq!(
            lattice_core::round_ties_even(x).to_bits(),
            x.round_ties_even().to_bits(),
            "{x}"
        );
    }
    assert!(lattice_core::round_ties_even(f32::NAN).is_nan());
    // Every 9973rd bit pattern: dense enough to cover every exponent and fraction position.
    for bits in (0..u32::MAX).step_by(9973) {
        let x = f32::from_bits(bits);
        if !x.is_nan() {
            assert_eq!(
                lattice_core::round_ties_even(x).to_bits(),
                x.round_ties_even().to_bits(),
                "{x}"
            );
        }
    }
}
