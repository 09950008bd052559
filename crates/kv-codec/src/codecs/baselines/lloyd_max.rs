//! Lloyd–Max scalar quantisers of the standard Gaussian, computed rather than typed in.
//!
//! The `b`-bit Lloyd–Max quantiser (Lloyd 1957, published 1982; Max 1960) of a density is
//! the set of `N = 2^b` levels `c₁ < … < c_N` and thresholds `tₖ = (cₖ + cₖ₊₁)/2` that
//! satisfy the two optimality conditions of least mean squared error: every threshold is
//! the midpoint of its neighbouring levels, and every level is the centroid (conditional
//! mean) of its cell. For N(0, 1) the centroid of `[a, b]` has the closed form
//! `(φ(a) − φ(b)) / (Φ(b) − Φ(a))`, with φ the density and Φ the distribution function,
//! which is written here through `erfc` for accuracy in the tails.
//!
//! The levels are found by Lloyd's fixed-point conditions `cₖ = centroid(tₖ₋₁, tₖ)`, solved
//! by Newton's method on exactly those equations: each equation involves only a level and its
//! two neighbours, so the Jacobian is tridiagonal and a step costs `O(N)`. Plain Lloyd
//! iteration would also converge, but its contraction factor approaches 1 as `N` grows (tens
//! of thousands of iterations at 8 bits); Newton, started from the Panter–Dite companding
//! levels (quantiles of N(0, 3), the high-rate optimum), converges in about five steps.
//! By symmetry only the `N/2` positive levels are unknowns (the middle threshold is 0).
//!
//! `erf`/`erfc` are computed in f64 from two classical expansions (Abramowitz & Stegun
//! 7.1.6 and 7.1.14): for `x < 2.5` the everywhere-positive series
//! `erf x = (2/√π) e^(−x²) Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1))`, which has no cancellation; beyond,
//! the continued fraction `erfc x = e^(−x²)/√π · 1/(x + ½/(x + 1/(x + (3/2)/(x + …))))`,
//! evaluated backwards over 60 terms. Both are accurate to a few ulps (relative) where they
//! are used.
//!
//! The designs are computed once per bit count and cached ([`gaussian`]).

use std::f64::consts::{PI, SQRT_2};
use std::sync::OnceLock;

/// The error function.
pub fn erf(x: f64) -> f64 {
    if x < 0.0 {
        -erf(-x)
    } else if x < 2.5 {
        erf_series(x)
    } else {
        1.0 - erfc_continued_fraction(x)
    }
}

/// The complementary error function `1 − erf(x)`, accurate relative to its value in the
/// upper tail.
pub fn erfc(x: f64) -> f64 {
    if x < 0.0 {
        2.0 - erfc(-x)
    } else if x < 2.5 {
        1.0 - erf_series(x)
    } else {
        erfc_continued_fraction(x)
    }
}

/// `erf x` for `0 ≤ x < 2.5` by the positive series (A&S 7.1.6).
fn erf_series(x: f64) -> f64 {
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    while term > 1e-17 * sum {
        n += 1.0;
        term *= 2.0 * x * x / (2.0 * n + 1.0);
        sum += term;
    }
    2.0 / PI.sqrt() * (-x * x).exp() * sum
}

/// `erfc x` for `x ≥ 2.5` by the continued fraction (A&S 7.1.14), evaluated backwards.
fn erfc_continued_fraction(x: f64) -> f64 {
    let mut f = x;
    for k in (1..=60).rev() {
        f = x + f64::from(k) / 2.0 / f;
    }
    (-x * x).exp() / (PI.sqrt() * f)
}

/// The standard normal density φ(t) (0 at ±∞).
pub fn normal_pdf(t: f64) -> f64 {
    if t.is_infinite() {
        0.0
    } else {
        (-t * t / 2.0).exp() / (2.0 * PI).sqrt()
    }
}

/// The standard normal upper tail `Q(t) = 1 − Φ(t)` (0 at +∞).
pub fn normal_tail(t: f64) -> f64 {
    if t == f64::INFINITY {
        0.0
    } else {
        0.5 * erfc(t / SQRT_2)
    }
}

/// The `t` with `Q(t) = p`, for `0 < p ≤ ½`, by bisection.
fn inverse_tail(p: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if normal_tail(mid) > p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// A Lloyd–Max quantiser of N(0, 1).
#[derive(Clone, Debug)]
pub struct LloydMax {
    /// The `2^bits` levels, ascending, symmetric about 0.
    pub levels: Vec<f64>,
    /// The `2^bits − 1` thresholds, ascending: value `v` belongs to level `k` when
    /// `thresholds[k − 1] < v ≤ thresholds[k]`.
    pub thresholds: Vec<f64>,
    /// Its mean squared error on N(0, 1), `1 − Σ P(cell) · level²` (the centroid condition
    /// makes the error orthogonal to the levels).
    pub mse: f64,
}

/// The `bits`-bit Lloyd–Max quantiser of N(0, 1), computed on first use and cached.
///
/// # Panics
/// If `bits` is not in `1..=8`.
pub fn gaussian(bits: u32) -> &'static LloydMax {
    static CACHE: [OnceLock<LloydMax>; 8] = [const { OnceLock::new() }; 8];
    assert!(
        (1..=8).contains(&bits),
        "Lloyd–Max designs exist for 1..=8 bits, not {bits}"
    );
    CACHE[bits as usize - 1].get_or_init(|| design(bits))
}

/// Thresholds of the positive half: `[0, (c₀+c₁)/2, …, ∞]` for positive levels `c`.
fn positive_cells(c: &[f64]) -> Vec<f64> {
    let mut t = Vec::with_capacity(c.len() + 1);
    t.push(0.0);
    t.extend(c.windows(2).map(|w| 0.5 * (w[0] + w[1])));
    t.push(f64::INFINITY);
    t
}

fn design(bits: u32) -> LloydMax {
    let n = 1usize << bits;
    let h = n / 2;
    // Panter–Dite start: the positive half of the N-quantiles of N(0, 3).
    let mut c: Vec<f64> = (0..h)
        .map(|k| 3f64.sqrt() * inverse_tail(0.5 - (k as f64 + 0.5) / n as f64))
        .collect();
    for _ in 0..100 {
        let t = positive_cells(&c);
        // F_k = c_k − m(t_k, t_{k+1}); its Jacobian is tridiagonal (sub, diag, sup).
        let mut f = vec![0.0; h];
        let mut sub = vec![0.0; h];
        let mut diag = vec![0.0; h];
        let mut sup = vec![0.0; h];
        for k in 0..h {
            let (a, b) = (t[k], t[k + 1]);
            let p = normal_tail(a) - normal_tail(b);
            let m = (normal_pdf(a) - normal_pdf(b)) / p;
            // ∂m/∂a and ∂m/∂b; the cell edge at 0 is fixed by symmetry, the one at ∞ too.
            let dm_da = if k == 0 {
                0.0
            } else {
                normal_pdf(a) * (m - a) / p
            };
            let dm_db = if k + 1 == h {
                0.0
            } else {
                normal_pdf(b) * (b - m) / p
            };
            f[k] = c[k] - m;
            sub[k] = -dm_da / 2.0;
            diag[k] = 1.0 - (dm_da + dm_db) / 2.0;
            sup[k] = -dm_db / 2.0;
        }
        // Thomas algorithm for the Newton step.
        for k in 1..h {
            let r = sub[k] / diag[k - 1];
            diag[k] -= r * sup[k - 1];
            f[k] -= r * f[k - 1];
        }
        let mut step = vec![0.0; h];
        for k in (0..h).rev() {
            let next = if k + 1 < h { sup[k] * step[k + 1] } else { 0.0 };
            step[k] = (f[k] - next) / diag[k];
        }
        // Damp the step if it would break the ordering (never needed from this start).
        let mut damping = 1.0;
        let next = loop {
            let next: Vec<f64> = c
                .iter()
                .zip(&step)
                .map(|(ck, s)| ck - damping * s)
                .collect();
            if next[0] > 0.0 && next.windows(2).all(|w| w[0] < w[1]) {
                break next;
            }
            damping /= 2.0;
        };
        let change = step.iter().fold(0f64, |m, s| m.max(s.abs())) * damping;
        c = next;
        if change < 1e-13 {
            break;
        }
    }
    let t = positive_cells(&c);
    let mse = 1.0
        - 2.0
            * (0..h)
                .map(|k| (normal_tail(t[k]) - normal_tail(t[k + 1])) * c[k] * c[k])
                .sum::<f64>();
    let levels: Vec<f64> = c
        .iter()
        .rev()
        .map(|v| -v)
        .chain(c.iter().copied())
        .collect();
    let thresholds = levels.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
    LloydMax {
        levels,
        thresholds,
        mse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_and_erfc_match_known_values() {
        let cases = [
            (0.1, 0.1124629160182849, 0.8875370839817152),
            (0.5, 0.5204998778130465, 0.4795001221869535),
            (1.0, 0.8427007929497149, 0.15729920705028513),
            (2.0, 0.9953222650189527, 0.004677734981047265),
            (2.5, 0.999593047982555, 0.0004069520174449589),
            (3.0, 0.9999779095030014, 2.2090496998585438e-05),
            (5.0, 0.9999999999984626, 1.5374597944280351e-12),
            (10.0, 1.0, 2.088487583762545e-45),
        ];
        for (x, e, c) in cases {
            assert!((erf(x) - e).abs() <= 4e-16, "erf({x}) = {}", erf(x));
            assert!(
                (erfc(x) / c - 1.0).abs() <= 1e-13,
                "erfc({x}) = {}",
                erfc(x)
            );
            assert!((erf(-x) + e).abs() <= 4e-16);
            assert!((erfc(-x) - (2.0 - c)).abs() <= 1e-15);
        }
    }

    #[test]
    fn one_bit_is_the_half_normal_mean() {
        let q = gaussian(1);
        let c = (2.0 / PI).sqrt();
        assert!((q.levels[1] - c).abs() < 1e-14 && (q.levels[0] + c).abs() < 1e-14);
        assert!((q.mse - (1.0 - 2.0 / PI)).abs() < 1e-14);
    }

    /// Max (1960), Table I: mean squared errors of the 2-, 4-, 8-, 16- and 32-level
    /// quantisers, as printed (four significant digits; the last two of Max's values are
    /// slightly off, so the tolerance is 0.3%).
    #[test]
    fn errors_match_max_1960() {
        for (bits, mse) in [
            (1, 0.3634),
            (2, 0.1175),
            (3, 0.03454),
            (4, 0.009497),
            (5, 0.002499),
        ] {
            let got = gaussian(bits).mse;
            assert!((got / mse - 1.0).abs() < 3e-3, "{bits} bits: {got}");
        }
        // And the two-bit levels and threshold as printed by Max: ±0.4528, ±1.510; ±0.9816.
        let q = gaussian(2);
        assert!((q.levels[2] - 0.4528).abs() < 1e-4 && (q.levels[3] - 1.510).abs() < 1e-3);
        assert!((q.thresholds[2] - 0.9816).abs() < 1e-4 && q.thresholds[1] == 0.0);
    }

    /// The optimality conditions themselves, with the centroids checked by plain numerical
    /// integration (Simpson's rule on the density), independently of the closed form.
    #[test]
    fn levels_are_centroids_of_their_cells() {
        let simpson = |f: &dyn Fn(f64) -> f64, a: f64, b: f64| {
            let n = 2000;
            let h = (b - a) / n as f64;
            let mut s = f(a) + f(b);
            for i in 1..n {
                s += f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
            }
            s * h / 3.0
        };
        for bits in 1..=8 {
            let q = gaussian(bits);
            let n = q.levels.len();
            assert_eq!(q.thresholds.len(), n - 1);
            for k in 0..n {
                // Cells are cut at ±12, where the mass left out is below 1e-32.
                let a = if k == 0 { -12.0 } else { q.thresholds[k - 1] };
                let b = if k + 1 == n { 12.0 } else { q.thresholds[k] };
                let mass = simpson(&normal_pdf, a, b);
                let first = simpson(&|x| x * normal_pdf(x), a, b);
                let centroid = first / mass;
                assert!(
                    (centroid - q.levels[k]).abs() < 1e-9,
                    "{bits} bits, level {k}: {} vs centroid {centroid}",
                    q.levels[k]
                );
            }
            for (k, t) in q.thresholds.iter().enumerate() {
                assert_eq!(*t, 0.5 * (q.levels[k] + q.levels[k + 1]));
            }
            // Each extra bit divides the error by nearly 4 (high-rate theory: 6.02 dB/bit).
            if bits > 1 {
                let ratio = gaussian(bits - 1).mse / q.mse;
                assert!((3.0..4.1).contains(&ratio), "{bits} bits: ratio {ratio}");
            }
        }
    }
}
