//! Codebooks: exact sizes, index ↔ point bijections over whole codebooks, membership, and
//! the box encoders against exhaustive search.
#![allow(
    clippy::manual_div_ceil,
    reason = "the closed forms ((2Q+1)^n + 1)/2 are written as in the literature"
)]

use std::collections::HashSet;

use lattice_core::lattice::to_lanes;
use lattice_core::{
    Codebook, D4, D4Box, D8Box, DBox, E8, E8Box, Error, Lattice, MAX_BOX_Q, Point, VoronoiCodebook,
    ZBox,
};
use proptest::prelude::*;

fn dist2<const N: usize>(x: &[f32; N], p: &[f32; N]) -> f64 {
    x.iter()
        .zip(p)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum()
}

/// Walks every index of `book`, checking index → point → index, membership via `member`, and
/// that all points are distinct. Returns all the points.
fn walk<const N: usize>(
    book: &impl Codebook<N>,
    member: impl Fn(&[f32; N]) -> bool,
) -> Vec<[f32; N]> {
    let len = book.size();
    let mut seen = HashSet::new();
    let mut points = Vec::with_capacity(len as usize);
    for index in 0..len {
        let p = book.point_at(index).unwrap();
        assert!(
            member(&p),
            "point {p:?} at index {index} is not a lattice point"
        );
        assert_eq!(book.index_of(&p), Some(index), "index of {p:?}");
        assert!(seen.insert(p.map(f32::to_bits)), "{p:?} appears twice");
        points.push(p);
    }
    assert_eq!(
        book.point_at(len),
        Err(Error::IndexOutOfRange {
            index: len,
            count: len
        })
    );
    points
}

fn in_box<const N: usize>(p: &[f32; N], q: u32) -> bool {
    p.iter().all(|v| v.abs() <= q as f32)
}

#[test]
fn box_counts_match_the_closed_forms() {
    for q in [1u32, 2, 4, 10, 38, 152, MAX_BOX_Q] {
        let w = 2 * u128::from(q) + 1;
        assert_eq!(D4Box::new(q).unwrap().size(), (w.pow(4) + 1) / 2);
        assert_eq!(
            E8Box::new(q).unwrap().size(),
            (w.pow(8) + 1) / 2 + (2 * u128::from(q)).pow(8) / 2
        );
        assert_eq!(ZBox::<4>::new(q).unwrap().size(), w.pow(4));
    }
    assert!(matches!(
        D4Box::new(0),
        Err(Error::ParameterOutOfRange {
            name: "q_range",
            ..
        })
    ));
    assert!(E8Box::new(MAX_BOX_Q + 1).is_err());
}

#[test]
fn d4_box_is_a_bijection() {
    for q in 1..=4 {
        let book = D4Box::new(q).unwrap();
        let points = walk(&book, |p| D4::contains(&Point::from_f32(p)) && in_box(p, q));
        // Every D4 point of the box is present: count them by brute force.
        let qi = q as i32;
        let brute = (-qi..=qi)
            .flat_map(|a| {
                (-qi..=qi).flat_map(move |b| {
                    (-qi..=qi).flat_map(move |c| (-qi..=qi).map(move |d| a + b + c + d))
                })
            })
            .filter(|s| s % 2 == 0)
            .count();
        assert_eq!(points.len(), brute);
    }
}

#[test]
fn d3_and_d8_boxes_are_bijections() {
    walk(&DBox::<3>::new(2).unwrap(), |p| {
        lattice_core::Dn::<3>::contains(&Point::from_f32(p))
    });
    walk(&D8Box::new(1).unwrap(), |p| {
        lattice_core::D8::contains(&Point::from_f32(p))
    });
}

#[test]
fn e8_box_is_a_bijection() {
    for q in 1..=2 {
        let book = E8Box::new(q).unwrap();
        let points = walk(&book, |p| E8::contains(&Point::from_f32(p)) && in_box(p, q));
        let halves = points.iter().filter(|p| p[0].fract() != 0.0).count() as u128;
        assert_eq!(halves, (2 * u128::from(q)).pow(8) / 2);
    }
}

#[test]
fn z_box_is_a_bijection() {
    walk(&ZBox::<4>::new(2).unwrap(), |p| {
        p.iter().all(|v| v.fract() == 0.0)
    });
}

#[test]
fn non_members_have_no_index() {
    let d4 = D4Box::new(3).unwrap();
    assert_eq!(d4.index_of(&[1.0, 0.0, 0.0, 0.0]), None); // odd sum
    assert_eq!(d4.index_of(&[4.0, 0.0, 0.0, 0.0]), None); // outside the box
    assert_eq!(d4.index_of(&[0.5, 0.5, 0.0, 0.0]), None); // not integer
    assert_eq!(d4.index_of(&[f32::NAN, 0.0, 0.0, 0.0]), None);
    let e8 = E8Box::new(2).unwrap();
    assert_eq!(e8.index_of(&[2.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]), None); // outside
    assert_eq!(
        e8.index_of(&[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, -0.5]),
        None
    ); // odd sum
    assert_eq!(e8.index_of(&[0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5]), None); // mixed cosets
}

#[test]
fn published_clamp_leaves_e8_but_the_box_encoder_does_not() {
    // Nearest E8 point (half coset) then clamped to [−1, 1]: (1.5 → 1) mixes integer and
    // half-integer coordinates, which is no point of E8.
    let x = [1.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1.4];
    let unclamped = E8::closest_point(&x);
    assert_eq!(unclamped, [1.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1.5]);
    let clamped = unclamped.map(|v| v.clamp(-1.0, 1.0));
    assert!(!E8::contains(&Point::from_f32(&clamped)));

    let book = E8Box::new(1).unwrap();
    let p = book.quantize(&x);
    assert!(E8::contains(&Point::from_f32(&p)) && in_box(&p, 1));
    let best = walk(&book, |_| true)
        .iter()
        .map(|c| dist2(&x, c))
        .fold(f64::INFINITY, f64::min);
    assert_eq!(dist2(&x, &p), best);
}

#[test]
fn voronoi_codebooks_are_bijections_onto_coset_representatives() {
    for q in 2..=6 {
        let book = VoronoiCodebook::<D4, 4>::new(q).unwrap();
        let points = walk(&book, |p| D4::contains(&Point::from_f32(p)));
        assert_eq!(points.len() as u128, u128::from(q).pow(4));
        // Representatives lie in the Voronoi cell of qD4: no nearer point of qD4 than 0
        // (distances compared unscaled, where they are exact).
        for p in &points {
            let c = D4::closest_point(&p.map(|v| v / q as f32)).map(|v| v * q as f32);
            assert!(
                dist2(p, &[0.0; 4]) <= dist2(p, &c),
                "{p:?} lies outside the cell"
            );
        }
    }
    for q in [2, 3, 4] {
        let book = VoronoiCodebook::<E8, 8>::new(q).unwrap();
        let points = walk(&book, |p| E8::contains(&Point::from_f32(p)));
        // Representatives lie in the Voronoi cell of qE8: no nearer point of qE8 than 0.
        for p in &points {
            let c = E8::closest_point(&p.map(|v| v / q as f32)).map(|v| v * q as f32);
            assert!(
                dist2(p, &[0.0; 8]) <= dist2(p, &c),
                "{p:?} lies outside the cell"
            );
        }
    }
}

#[test]
fn voronoi_index_of_a_power_of_two_is_raw_bits() {
    // q = 2^b: basis coordinate i occupies bits i·b .. (i+1)·b of the index.
    let book = VoronoiCodebook::<E8, 8>::new(16).unwrap();
    assert_eq!(book.index_bits(), 32);
    let x = [3.2, -1.1, 0.4, 2.6, -2.2, 0.9, 1.4, -0.6];
    let index = book.encode(&x);
    let p = book.point_at(index).unwrap();
    assert_eq!(
        p,
        E8::closest_point(&x),
        "an input well inside the cell is not overloaded"
    );
    let coords = lattice_core::lattice::basis_coordinates::<E8, 8>(&Point::from_f32(&p));
    let digits = book.coset_coordinates(&p);
    for (i, c) in coords.iter().enumerate() {
        assert_eq!(((index >> (4 * i)) & 15) as i32, c.rem_euclid(16));
        assert_eq!(digits[i] as i32, c.rem_euclid(16));
    }
    assert_eq!(book.point_of_coordinates(&digits), p);
}

#[test]
fn voronoi_parameters_are_checked() {
    assert!(VoronoiCodebook::<E8, 8>::new(1).is_err());
    assert!(VoronoiCodebook::<E8, 8>::new(1 << 15).is_ok());
    assert!(VoronoiCodebook::<E8, 8>::new((1 << 15) + 1).is_err());
    assert!(VoronoiCodebook::<D4, 4>::new(1 << 16).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn d4_box_encoder_is_nearest_in_box(x in prop::array::uniform4(-6.0f32..6.0), q in 1u32..4) {
        let book = D4Box::new(q).unwrap();
        let p = book.quantize(&x);
        let best = (0..book.size()).map(|i| dist2(&x, &book.point_at(i).unwrap())).fold(f64::INFINITY, f64::min);
        prop_assert_eq!(dist2(&x, &p), best);
    }

    #[test]
    fn e8_box_encoder_is_nearest_in_box(x in prop::array::uniform8(-2.5f32..2.5)) {
        let book = E8Box::new(1).unwrap();
        let p = book.quantize(&x);
        prop_assert!(E8::contains(&Point::from_f32(&p)) && in_box(&p, 1));
        let best = (0..book.size()).map(|i| dist2(&x, &book.point_at(i).unwrap())).fold(f64::INFINITY, f64::min);
        prop_assert_eq!(dist2(&x, &p), best);
    }

    #[test]
    fn large_box_round_trips(x in prop::array::uniform8(-200.0f32..200.0), q in 1u32..=MAX_BOX_Q) {
        let book = E8Box::new(q).unwrap();
        let p = book.quantize(&x);
        prop_assert!(E8::contains(&Point::from_f32(&p)) && in_box(&p, q));
        let index = book.encode(&x);
        prop_assert!(index < book.size());
        prop_assert_eq!(book.point_at(index).unwrap(), p);
        // Inside the box (with margin) the box encoder is the unconstrained decoder.
        if x.iter().all(|v| v.abs() < q as f32 - 1.0) {
            prop_assert_eq!(p, E8::closest_point(&x));
        }
    }

    #[test]
    fn voronoi_round_trips(x in prop::array::uniform8(-40.0f32..40.0), q in 2u32..64) {
        let book = VoronoiCodebook::<E8, 8>::new(q).unwrap();
        let p = book.quantize(&x);
        let index = book.encode(&x);
        prop_assert!(index < book.size());
        prop_assert_eq!(book.point_at(index).unwrap(), p);
        // The representative differs from the nearest lattice point by a point of qE8.
        let lambda = E8::closest_point(&x);
        let mut delta = [0f32; 8];
        for i in 0..8 {
            delta[i] = (lambda[i] - p[i]) / q as f32;
        }
        let delta = Point::try_from_f32(&delta);
        prop_assert!(delta.is_some_and(|d| E8::contains(&d)), "λ − p is not in qE8");
    }

    #[test]
    fn codeword_test_agrees_with_the_definition(x in prop::array::uniform8(-0.5f32..0.5), q in 2u32..300) {
        // Inputs of norm around q·0.8 straddle the shell between the packing and covering
        // balls of qE8, where the shortcuts do not apply.
        let book = VoronoiCodebook::<E8, 8>::new(q).unwrap();
        let lambda = E8::closest_point(&x.map(|v| v * q as f32));
        let full = book.point_of_coordinates(&book.coset_coordinates(&lambda)) == lambda;
        prop_assert_eq!(book.is_codeword(&lambda), full);
        let d4 = VoronoiCodebook::<D4, 4>::new(q).unwrap();
        let mu = D4::closest_point(&[x[0], x[1], x[2], x[3]].map(|v| v * 2.0 * q as f32));
        let full = d4.point_of_coordinates(&d4.coset_coordinates(&mu)) == mu;
        prop_assert_eq!(d4.is_codeword(&mu), full);
    }

    #[test]
    fn random_indices_decode_or_error(index in any::<u128>(), q in 1u32..50) {
        let book = E8Box::new(q).unwrap();
        match book.point_at(index) {
            Ok(p) => prop_assert_eq!(book.index_of(&p), Some(index)),
            Err(e) => prop_assert_eq!(e, Error::IndexOutOfRange { index, count: book.size() }),
        }
    }
}

#[test]
fn codeword_test_agrees_with_the_definition_on_the_cell_boundary() {
    // Small q puts many lattice points exactly on the boundary of the cell of qE8 (gauge
    // equal to q), where only the full reduction can tell.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut boundary = 0;
    for q in [2u32, 3, 4, 5, 8] {
        let book = VoronoiCodebook::<E8, 8>::new(q).unwrap();
        for _ in 0..20_000 {
            let x: [f32; 8] = std::array::from_fn(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                ((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1.2 * q as f32
            });
            let lambda = E8::closest_point(&x);
            let full = book.point_of_coordinates(&book.coset_coordinates(&lambda)) == lambda;
            assert_eq!(book.is_codeword(&lambda), full, "q = {q}, λ = {lambda:?}");
            boundary += usize::from(E8::cell_gauge(&lambda) == q as f32);
        }
    }
    assert!(
        boundary > 1000,
        "only {boundary} boundary points were tried"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn eight_cosets_at_once_are_the_same_points(
        seeds in prop::array::uniform8(any::<u64>()),
        q in 2u32..300,
    ) {
        let book = VoronoiCodebook::<E8, 8>::new(q).unwrap();
        let coords = seeds.map(|mut s| {
            std::array::from_fn(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((s >> 33) % u64::from(q)) as u32
            })
        });
        let together = book.points_of_coordinates(&coords);
        for (c, p) in coords.iter().zip(&together) {
            prop_assert_eq!(p.map(f32::to_bits), book.point_of_coordinates(c).map(f32::to_bits));
        }
    }

    #[test]
    fn eight_coset_coordinates_at_once_are_one_at_a_time(
        x in prop::array::uniform8(prop::array::uniform8(-600f32..600.0)),
        q in 2u32..300,
    ) {
        let book = VoronoiCodebook::<E8, 8>::new(q).unwrap();
        let points = x.map(|block| E8::closest_point(&block));
        let lanes = book.coset_coordinates_in_lanes(&to_lanes(&points));
        for (b, point) in points.iter().enumerate() {
            let one = book.coset_coordinates(point);
            let together: [u32; 8] = std::array::from_fn(|i| lanes[i].to_array()[b] as u32);
            prop_assert_eq!(together, one);
        }
    }
}

#[test]
fn eight_codeword_tests_at_once_agree_with_one_at_a_time() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for q in [2u32, 3, 4, 8, 13, 16] {
        let book = VoronoiCodebook::<E8, 8>::new(q).unwrap();
        for _ in 0..2_000 {
            let lambdas: [[f32; 8]; 8] = std::array::from_fn(|_| {
                E8::closest_point(&std::array::from_fn(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    ((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1.2 * q as f32
                }))
            });
            let together = book.are_codewords(&lambdas);
            for (lambda, answer) in lambdas.iter().zip(together) {
                assert_eq!(answer, book.is_codeword(lambda), "q = {q}, λ = {lambda:?}");
            }
        }
    }
}
