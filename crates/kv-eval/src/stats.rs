//! Confidence intervals over passages: the mean with a Student-t 95% interval, the t
//! quantile computed here (regularised incomplete beta by Lentz's continued fraction,
//! inverted by bisection) rather than taken from a table.

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, nine coefficients; relative error < 1e-13).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the series in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Continued fraction of the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        for aa in [
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ] {
            d = 1.0 + aa * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + aa / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        // The last factor is 1 to working precision once converged.
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// The regularised incomplete beta function `I_x(a, b)`.
fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The continued fraction converges fast on the side of the mean.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// `P(T ≤ t)` for Student's t with `df` degrees of freedom.
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * inc_beta(df / 2.0, 0.5, df / (df + t * t));
    if t >= 0.0 { 1.0 - tail } else { tail }
}

/// The `p` quantile of Student's t with `df` degrees of freedom (`0 < p < 1`, `df > 0`).
///
/// # Panics
/// If `p` is not strictly between 0 and 1 or `df` is not positive.
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    assert!(p > 0.0 && p < 1.0 && df > 0.0, "p = {p}, df = {df}");
    if p < 0.5 {
        return -student_t_quantile(1.0 - p, df);
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while student_t_cdf(hi, df) < p {
        hi *= 2.0;
    }
    // Bisection to the last bit of the bracket.
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if student_t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// A sample's mean with its two-sided 95% Student-t confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeanCi {
    /// Sample size.
    pub n: usize,
    /// Sample mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1 denominator); `None` below two samples.
    pub std: Option<f64>,
    /// Half-width of the 95% interval, `t(0.975, n − 1) · std / √n`; `None` below two samples.
    pub ci95: Option<f64>,
}

impl MeanCi {
    /// Mean and interval of `xs`.
    pub fn of(xs: &[f64]) -> Self {
        let n = xs.len();
        let mean = if n == 0 {
            0.0
        } else {
            xs.iter().sum::<f64>() / n as f64
        };
        let (std, ci95) = if n >= 2 {
            let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
            let std = var.sqrt();
            let t = student_t_quantile(0.975, (n - 1) as f64);
            (Some(std), Some(t * std / (n as f64).sqrt()))
        } else {
            (None, None)
        };
        Self { n, mean, std, ci95 }
    }

    /// Whether the whole interval lies within `±bound` (a single sample never qualifies).
    pub fn within(&self, bound: f64) -> bool {
        self.ci95.is_some_and(|h| self.mean.abs() + h <= bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_the_tables() {
        // Two-sided 95% critical values.
        for (df, want) in [
            (1.0, 12.706_204_736),
            (2.0, 4.302_652_730),
            (4.0, 2.776_445_105),
            (9.0, 2.262_157_163),
            (30.0, 2.042_272_456),
            (1000.0, 1.962_339_081),
        ] {
            let got = student_t_quantile(0.975, df);
            assert!((got - want).abs() < 1e-6, "df {df}: {got} vs {want}");
        }
        assert!((student_t_quantile(0.025, 9.0) + 2.262_157_163).abs() < 1e-6);
        assert!((student_t_quantile(0.5, 3.0)).abs() < 1e-12);
        assert!((student_t_cdf(0.0, 5.0) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn mean_and_interval() {
        let m = MeanCi::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m.mean, 2.5);
        let std = (5.0f64 / 3.0).sqrt();
        assert!((m.std.unwrap() - std).abs() < 1e-12);
        assert!((m.ci95.unwrap() - 3.182_446_305 * std / 2.0).abs() < 1e-6);
        assert!(m.within(5.0) && !m.within(3.0));
        let one = MeanCi::of(&[0.1]);
        assert_eq!((one.std, one.ci95), (None, None));
        assert!(!one.within(1.0));
    }
}
