//! The statistics against published values (normal and Student t tables) and against slow,
//! obvious oracles (numerical integration for the Wasserstein distance).

use kv_audit::stats::{
    MeanCi, Moments, NormalGrid, normal_cdf, normal_quantile, student_t_quantile,
    student_t_two_sided_cdf, wasserstein1_normal,
};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1e-300)
}

#[test]
fn normal_cdf_matches_tables_in_the_body_and_both_tails() {
    for (x, p) in [
        (0.0, 0.5),
        (1.0, 0.841_344_746_068_542_9),
        (1.959_963_984_540_054, 0.975),
        (-3.0, 0.001_349_898_031_630_094_6),
        (-5.0, 2.866_515_718_791_939e-7),
        (-8.0, 6.220_960_574_271_784e-16),
        (2.9, 0.998_134_186_699_616),
        (3.1, 0.999_032_396_786_781_7),
    ] {
        assert!(
            close(normal_cdf(x), p, 1e-12),
            "Φ({x}) = {} ≠ {p}",
            normal_cdf(x)
        );
    }
}

#[test]
fn normal_quantile_inverts_the_cdf() {
    assert_eq!(normal_quantile(0.5), 0.0);
    assert!(close(normal_quantile(0.975), 1.959_963_984_540_054, 1e-13));
    assert!(close(normal_quantile(1e-10), -6.361_340_902_404_056, 1e-12));
    assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
    assert_eq!(normal_quantile(1.0), f64::INFINITY);
    for i in 1..100 {
        let p = f64::from(i) / 100.0;
        assert!(
            close(normal_cdf(normal_quantile(p * 1e-4)), p * 1e-4, 1e-11),
            "{p}e-4"
        );
        assert!(close(normal_cdf(normal_quantile(p)), p, 1e-13), "{p}");
    }
}

#[test]
fn student_t_quantiles_match_the_table() {
    // Two-sided 95% critical values t(0.975, df).
    for (df, t) in [
        (1, 12.706_204_736_174_698),
        (2, 4.302_652_729_749_464),
        (3, 3.182_446_305_284_263),
        (5, 2.570_581_835_636_314),
        (10, 2.228_138_851_986_274),
        (29, 2.045_229_642_132_703),
        (30, 2.042_272_456_301_238),
        (100, 1.983_971_518_523_552),
    ] {
        let got = student_t_quantile(0.95, df);
        assert!(close(got, t, 1e-10), "df {df}: {got} ≠ {t}");
    }
    // 99%, and the normal limit.
    assert!(close(
        student_t_quantile(0.99, 4),
        4.604_094_871_415_897,
        1e-10
    ));
    // Large df: z + (z³ + z)/(4·df) to first order, z = 1.959964.
    let z = 1.959_963_984_540_054;
    let large = z + (z * z * z + z) / (4.0 * 100_000.0);
    assert!(close(student_t_quantile(0.95, 100_000), large, 1e-8));
    // The CDF at t = 1 with one degree of freedom (Cauchy): P(|T| ≤ 1) = 1/2.
    assert!(close(student_t_two_sided_cdf(1.0, 1), 0.5, 1e-15));
    assert_eq!(student_t_two_sided_cdf(f64::INFINITY, 3), 1.0);
}

#[test]
fn mean_ci_of_a_small_sample() {
    // Mean 6, sample sd 1 (values 5, 6, 7): half-width t(0.975, 2) / √3 ≈ 2.48.
    let ci = MeanCi::of(&[5.0, 6.0, 7.0]);
    assert!(close(ci.mean, 6.0, 1e-15));
    assert!(close(
        ci.half_width,
        4.302_652_729_749_464 / 3f64.sqrt(),
        1e-10
    ));
    assert!(ci.significant());
    assert!(!MeanCi::of(&[1.0, 2.0, 3.0]).significant());
    assert!(MeanCi::of(&[4.0]).half_width.is_nan());
}

#[test]
fn moments_of_hand_made_values() {
    let mut m = Moments::default();
    for x in [1.0, 2.0, 3.0, 4.0] {
        m.push(x + 1e6);
    }
    // Deviations ±1.5, ±0.5: m2 = 1.25, m4 = 2.5625, excess kurtosis 2.5625/1.5625 − 3.
    assert!(close(m.mean(), 2.5 + 1e6, 1e-15));
    assert!(close(m.variance(), 1.25, 1e-9));
    assert!(close(m.excess_kurtosis(), 2.5625 / 1.5625 - 3.0, 1e-9));
    assert_eq!(m.count(), 4.0);
}

/// ∫₀¹ |F⁻¹(u) − Φ⁻¹(u)| du by the midpoint rule on a fine grid.
fn w1_by_quadrature(sorted: &[f64]) -> f64 {
    let steps = 400_000;
    let m = sorted.len();
    (0..steps)
        .map(|s| {
            let u = (s as f64 + 0.5) / steps as f64;
            let i = ((u * m as f64) as usize).min(m - 1);
            (sorted[i] - normal_quantile(u)).abs()
        })
        .sum::<f64>()
        / steps as f64
}

#[test]
fn wasserstein_distance_matches_quadrature_and_known_shifts() {
    let sample = [-1.7, -0.2, 0.05, 0.4, 2.5];
    let exact = wasserstein1_normal(&sample, &NormalGrid::new(5));
    let slow = w1_by_quadrature(&sample);
    assert!((exact - slow).abs() < 2e-5, "{exact} vs {slow}");

    // The quantiles of N(0.5, 1): W₁ to N(0, 1) is the shift, up to the discretisation.
    let m = 4000;
    let grid = NormalGrid::new(m);
    assert_eq!(grid.len(), m);
    let mid: Vec<f64> = (0..m)
        .map(|i| normal_quantile((i as f64 + 0.5) / m as f64))
        .collect();
    let shifted: Vec<f64> = mid.iter().map(|z| z + 0.5).collect();
    assert!((wasserstein1_normal(&shifted, &grid) - 0.5).abs() < 2e-3);
    // The quantiles themselves are as close to N(0, 1) as m points can be.
    assert!(wasserstein1_normal(&mid, &grid) < 1e-3);
}
