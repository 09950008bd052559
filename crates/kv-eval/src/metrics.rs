//! Next-token metrics, one definition each: log-softmax, negative log-likelihood,
//! KL(exact ‖ compressed), top-1 agreement, and their running sums over a continuation.
//! Everything is accumulated in f64.

/// `log softmax(logits)` in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    let lse = max + sum.ln();
    logits.iter().map(|&x| f64::from(x) - lse).collect()
}

/// `KL(p ‖ q) = Σ p·(log p − log q)` from log-probabilities (nats).
pub fn kl_divergence(log_p: &[f64], log_q: &[f64]) -> f64 {
    log_p
        .iter()
        .zip(log_q)
        .map(|(&lp, &lq)| {
            let p = lp.exp();
            // 0·log 0 = 0, and such terms must not turn a −inf difference into NaN.
            if p == 0.0 { 0.0 } else { p * (lp - lq) }
        })
        .sum()
}

/// Index of the largest value (the first one on ties).
pub fn argmax<T: PartialOrd>(x: &[T]) -> usize {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best
}

/// Mean negative log-likelihood (nats) of `targets[t]` under row `t` of `logits`
/// (`targets.len()` rows of `vocab` values).
pub fn mean_nll(logits: &[f32], vocab: usize, targets: &[u32]) -> f64 {
    let total: f64 = logits
        .chunks_exact(vocab)
        .zip(targets)
        .map(|(row, &t)| -log_softmax(row)[t as usize])
        .sum();
    total / targets.len().max(1) as f64
}

/// Running sums of one compressed row against the exact row over a continuation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tally {
    /// Σ −log q(target).
    pub nll: f64,
    /// Σ KL(p_exact ‖ q).
    pub kl: f64,
    /// Steps where the argmax agrees with the exact row's.
    pub agree: usize,
    /// Steps.
    pub steps: usize,
}

impl Tally {
    /// Adds one step: this row's log-probabilities and the exact row's, and the target.
    pub fn add(&mut self, log_q: &[f64], log_p: &[f64], target: u32) {
        self.nll -= log_q[target as usize];
        self.kl += kl_divergence(log_p, log_q);
        self.agree += usize::from(argmax(log_q) == argmax(log_p));
        self.steps += 1;
    }

    /// Adds another tally's sums.
    pub fn merge(&mut self, other: &Self) {
        self.nll += other.nll;
        self.kl += other.kl;
        self.agree += other.agree;
        self.steps += other.steps;
    }

    /// `exp(mean nll)`.
    pub fn ppl(&self) -> f64 {
        (self.nll / self.steps.max(1) as f64).exp()
    }

    /// Mean KL per step (nats).
    pub fn mean_kl(&self) -> f64 {
        self.kl / self.steps.max(1) as f64
    }

    /// Fraction of steps whose argmax agrees with the exact row's.
    pub fn top1(&self) -> f64 {
        self.agree as f64 / self.steps.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_normalises_and_is_shift_invariant() {
        let a = log_softmax(&[1.0, 2.0, 3.0]);
        let b = log_softmax(&[101.0, 102.0, 103.0]);
        let total: f64 = a.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-12);
        }
        assert!((a[2] - (-(1.0 + (-1f64).exp() + (-2f64).exp()).ln())).abs() < 1e-12);
    }

    #[test]
    fn kl_is_zero_on_equal_and_positive_otherwise() {
        let p = log_softmax(&[0.5, -1.0, 2.0]);
        let q = log_softmax(&[0.4, -1.0, 2.1]);
        assert_eq!(kl_divergence(&p, &p), 0.0);
        assert!(kl_divergence(&p, &q) > 0.0);
        // Hand-computed two-point case: p = (1/2, 1/2), q = (1/4, 3/4).
        let (p, q) = ([0.5f64.ln(); 2], [0.25f64.ln(), 0.75f64.ln()]);
        let want = 0.5 * (2.0f64).ln() + 0.5 * (0.5f64 / 0.75).ln();
        assert!((kl_divergence(&p, &q) - want).abs() < 1e-12);
    }

    #[test]
    fn tally_sums_steps() {
        let p = log_softmax(&[0.0, 1.0, 0.0]);
        let q = log_softmax(&[1.0, 0.0, 0.0]);
        let mut t = Tally::default();
        t.add(&p, &p, 1);
        t.add(&q, &p, 1);
        assert_eq!((t.steps, t.agree), (2, 1));
        assert!((t.ppl() - ((-p[1] - q[1]) / 2.0).exp()).abs() < 1e-12);
        assert!((t.mean_kl() - kl_divergence(&p, &q) / 2.0).abs() < 1e-12);
        assert_eq!(argmax(&[0.0, 3.0, 3.0]), 1);
        assert!((mean_nll(&[0.0, 0.0, 0.0, 0.0], 2, &[0, 1]) - 2f64.ln()).abs() < 1e-12);
    }
}
