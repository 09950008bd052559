//! The statistics behind the audit and the reports, written out so that every number can be
//! traced to a formula: the standard normal distribution (CDF, density, quantile), the
//! 1-D Wasserstein-1 distance of a sample to N(0, 1), excess kurtosis, and Student's t
//! distribution (CDF and quantile) for 95% confidence intervals.
//!
//! Everything is in f64. Accuracy is far beyond what the audit needs (the normal CDF to about
//! 1e-14, the t quantile to 1e-12), so that no reported digit is an artefact of an
//! approximation.

use std::f64::consts::{PI, SQRT_2};

/// 1/√(2π).
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// The standard normal density φ(x).
pub fn normal_pdf(x: f64) -> f64 {
    INV_SQRT_2PI * (-0.5 * x * x).exp()
}

/// erfc(x) for x ≥ 0: a positive-term series below 3 (no cancellation), the Laplace
/// continued fraction (evaluated by the modified Lentz method) above.
fn erfc_nonneg(x: f64) -> f64 {
    debug_assert!(x >= 0.0);
    if x < 3.0 {
        // erf(x) = 2/√π · e^{−x²} · Σ_n 2^n x^{2n+1} / (1·3·…·(2n+1)).
        let mut term = x;
        let mut sum = x;
        let mut n = 0.0;
        while term > 1e-17 * sum {
            n += 1.0;
            term *= 2.0 * x * x / (2.0 * n + 1.0);
            sum += term;
        }
        1.0 - 2.0 / PI.sqrt() * (-x * x).exp() * sum
    } else {
        // erfc(x) = e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))).
        let tiny = 1e-300;
        let mut f = x;
        let mut c = x;
        let mut d = 0.0;
        for k in 1..200 {
            let a = f64::from(k) / 2.0;
            d = x + a * d;
            d = if d.abs() < tiny { 1.0 / tiny } else { 1.0 / d };
            c = x + a / c;
            if c.abs() < tiny {
                c = tiny;
            }
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (-x * x).exp() / PI.sqrt() / f
    }
}

/// The standard normal CDF Φ(x), accurate in both tails.
pub fn normal_cdf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let tail = 0.5 * erfc_nonneg(x.abs() / SQRT_2);
    if x < 0.0 { tail } else { 1.0 - tail }
}

/// The standard normal quantile Φ⁻¹(p): Newton steps on [`normal_cdf`], kept inside a
/// shrinking bracket so that they cannot diverge. `p` = 0 and 1 give ∓∞.
///
/// # Panics
/// If `p` is outside [0, 1].
pub fn normal_quantile(p: f64) -> f64 {
    assert!((0.0..=1.0).contains(&p), "probability {p} outside [0, 1]");
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    // Φ(±40) is 0 or 1 in f64 beyond the smallest normal p, so the root lies inside.
    let (mut lo, mut hi) = (-40.0f64, 40.0f64);
    let mut x = 0.0;
    for _ in 0..200 {
        let f = normal_cdf(x) - p;
        if f == 0.0 {
            return x;
        }
        if f < 0.0 {
            lo = x;
        } else {
            hi = x;
        }
        let step = f / normal_pdf(x);
        let newton = x - step;
        // Converged: the step no longer moves x (checked before the bracket test, which a
        // step below one ulp would fail and send x back to the bracket's midpoint).
        if step.abs() <= 1e-15 * x.abs().max(1.0) {
            return newton;
        }
        x = if newton.is_finite() && newton > lo && newton < hi {
            newton
        } else {
            0.5 * (lo + hi)
        };
        if hi - lo <= 1e-15 * x.abs().max(1.0) {
            break;
        }
    }
    x
}

/// The grid of standard normal quantiles `Φ⁻¹(i/m)`, i = 1..m−1, and the density at each, for
/// exact Wasserstein distances of samples of size `m` (see [`wasserstein1_normal`]). Build it
/// once per sample size: it costs `m` quantile evaluations.
#[derive(Clone, Debug, PartialEq)]
pub struct NormalGrid {
    /// Φ⁻¹(i/m) for i = 0..=m (−∞ and +∞ at the ends).
    quantiles: Vec<f64>,
    /// φ at each quantile (0 at the ends).
    densities: Vec<f64>,
}

impl NormalGrid {
    /// The grid for samples of `m` values.
    ///
    /// # Panics
    /// If `m` is zero.
    pub fn new(m: usize) -> Self {
        assert!(m > 0, "a sample needs at least one value");
        let quantiles: Vec<f64> = (0..=m)
            .map(|i| normal_quantile(i as f64 / m as f64))
            .collect();
        let densities = quantiles
            .iter()
            .map(|&x| if x.is_finite() { normal_pdf(x) } else { 0.0 })
            .collect();
        Self {
            quantiles,
            densities,
        }
    }

    /// The sample size the grid serves.
    pub fn len(&self) -> usize {
        self.quantiles.len() - 1
    }

    /// Always false: a grid serves at least one value.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The Wasserstein-1 distance between the empirical distribution of `sorted` (ascending, of
/// the size `grid` was built for) and N(0, 1), computed exactly:
/// W₁ = ∫₀¹ |F⁻¹(u) − Φ⁻¹(u)| du = Σᵢ ∫ over [(i−1)/m, i/m] of |z₍ᵢ₎ − Φ⁻¹(u)| du, where each
/// piece has a closed form through G(x) = c·Φ(x) + φ(x), the antiderivative of (c − x)·φ(x).
///
/// # Panics
/// If the lengths differ.
pub fn wasserstein1_normal(sorted: &[f64], grid: &NormalGrid) -> f64 {
    let m = grid.len();
    assert_eq!(
        sorted.len(),
        m,
        "the grid was built for another sample size"
    );
    let mut total = 0.0;
    for (i, &c) in sorted.iter().enumerate() {
        let (xa, xb) = (grid.quantiles[i], grid.quantiles[i + 1]);
        // Φ at the grid points is exactly i/m, so G there needs no CDF evaluation.
        let g_a = c * i as f64 / m as f64 + grid.densities[i];
        let g_b = c * (i + 1) as f64 / m as f64 + grid.densities[i + 1];
        total += if c >= xb {
            g_b - g_a
        } else if c <= xa {
            g_a - g_b
        } else {
            let g_c = c * normal_cdf(c) + normal_pdf(c);
            2.0 * g_c - g_a - g_b
        };
    }
    total
}

/// Mean, variance (divided by n) and excess kurtosis of one variable, accumulated from
/// power sums in f64 about a shift (the first value) so that a large mean costs no precision.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    n: f64,
    shift: f64,
    s1: f64,
    s2: f64,
    s3: f64,
    s4: f64,
}

impl Moments {
    /// Adds one value.
    pub fn push(&mut self, x: f64) {
        if self.n == 0.0 {
            self.shift = x;
        }
        let d = x - self.shift;
        let d2 = d * d;
        self.n += 1.0;
        self.s1 += d;
        self.s2 += d2;
        self.s3 += d2 * d;
        self.s4 += d2 * d2;
    }

    /// Values added.
    pub fn count(&self) -> f64 {
        self.n
    }

    /// The mean (NaN when empty).
    pub fn mean(&self) -> f64 {
        self.shift + self.s1 / self.n
    }

    /// The central second moment (divided by n).
    pub fn variance(&self) -> f64 {
        let m = self.s1 / self.n;
        (self.s2 / self.n - m * m).max(0.0)
    }

    /// Excess kurtosis m₄/m₂² − 3 of the central moments (0 for a Gaussian; NaN for a
    /// constant).
    pub fn excess_kurtosis(&self) -> f64 {
        let m = self.s1 / self.n;
        let (e2, e3, e4) = (self.s2 / self.n, self.s3 / self.n, self.s4 / self.n);
        let m2 = e2 - m * m;
        let m4 = e4 - 4.0 * m * e3 + 6.0 * m * m * e2 - 3.0 * m.powi(4);
        m4 / (m2 * m2) - 3.0
    }
}

/// P(|T| ≤ t) for Student's t with `df` degrees of freedom, by the finite series of
/// Abramowitz & Stegun 26.7.3–4 in θ = atan(t/√df) (exact for integer df).
///
/// # Panics
/// If `df` is zero.
pub fn student_t_two_sided_cdf(t: f64, df: u32) -> f64 {
    assert!(df > 0, "Student's t needs at least one degree of freedom");
    let t = t.abs();
    if t.is_infinite() {
        return 1.0;
    }
    let theta = (t / f64::from(df).sqrt()).atan();
    let (s, c) = theta.sin_cos();
    let c2 = c * c;
    if df % 2 == 1 {
        // (2/π)·(θ + sinθ·cosθ·(1 + (2/3)cos²θ + (2·4)/(3·5)cos⁴θ + … up to cos^(df−3))).
        let mut term = 1.0;
        let mut sum = if df > 1 { 1.0 } else { 0.0 };
        let mut k = 2;
        while k + 1 < df {
            term *= f64::from(k) / f64::from(k + 1) * c2;
            sum += term;
            k += 2;
        }
        2.0 / PI * (theta + s * c * sum)
    } else {
        // sinθ·(1 + (1/2)cos²θ + (1·3)/(2·4)cos⁴θ + … up to cos^(df−2)).
        let mut term = 1.0;
        let mut sum = 1.0;
        let mut k = 1;
        while k + 1 < df {
            term *= f64::from(k) / f64::from(k + 1) * c2;
            sum += term;
            k += 2;
        }
        s * sum
    }
}

/// The two-sided critical value t with P(|T| ≤ t) = `confidence` for Student's t with `df`
/// degrees of freedom (for example 12.706 at df = 1 and 1.960 as df → ∞, for 95%), by
/// bisection on [`student_t_two_sided_cdf`].
///
/// # Panics
/// If `df` is zero or `confidence` is not inside (0, 1).
pub fn student_t_quantile(confidence: f64, df: u32) -> f64 {
    assert!(
        confidence > 0.0 && confidence < 1.0,
        "confidence {confidence} outside (0, 1)"
    );
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while student_t_two_sided_cdf(hi, df) < confidence {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if student_t_two_sided_cdf(mid, df) < confidence {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-13 * hi {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// A mean with its two-sided 95% confidence interval from Student's t.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct MeanCi {
    /// The sample mean.
    pub mean: f64,
    /// Half-width of the 95% interval: t₀.₉₇₅,ₙ₋₁ · s / √n (NaN for fewer than two values).
    pub half_width: f64,
    /// Number of values.
    pub n: usize,
}

impl MeanCi {
    /// The mean and 95% interval of `values` (t over n − 1 degrees of freedom).
    ///
    /// # Panics
    /// If `values` is empty.
    pub fn of(values: &[f64]) -> Self {
        assert!(!values.is_empty(), "a mean needs values");
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let half_width = if n < 2 {
            f64::NAN
        } else {
            let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
            // n − 1 ≥ 1 and fits u32 for any sample held in memory.
            let df = u32::try_from(n - 1).unwrap_or(u32::MAX);
            student_t_quantile(0.95, df) * (var / n as f64).sqrt()
        };
        Self {
            mean,
            half_width,
            n,
        }
    }

    /// Whether the interval excludes zero.
    pub fn significant(&self) -> bool {
        self.mean.abs() > self.half_width
    }
}
