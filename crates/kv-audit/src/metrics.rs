//! The distortion metrics of the project, with one definition each (algorithm brief §4):
//! rel-MSE = Σ‖x − x̂‖² / Σ‖x‖² (uncentred, accumulated in f64), SNR = −10·log10(rel-MSE) dB,
//! Shannon gap = 20·log10(2)·R − SNR dB, the distance to the rate–distortion bound of an iid
//! Gaussian source at R bits per value.

/// Decibels of SNR one bit per value buys at the Gaussian rate–distortion bound:
/// 20·log10(2) ≈ 6.0206.
pub fn db_per_bit() -> f64 {
    20.0 * 2f64.log10()
}

/// Squared error and energy summed in f64, to be combined over vectors, heads and layers
/// before dividing (a ratio of sums, not a mean of ratios).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorEnergy {
    /// Σ‖x − x̂‖².
    pub error: f64,
    /// Σ‖x‖².
    pub energy: f64,
}

impl ErrorEnergy {
    /// The sums over one buffer `x` and its reconstruction `y`.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn of(x: &[f32], y: &[f32]) -> Self {
        assert_eq!(
            x.len(),
            y.len(),
            "original and reconstruction differ in length"
        );
        let mut s = Self::default();
        for (&a, &b) in x.iter().zip(y) {
            let (a, b) = (f64::from(a), f64::from(b));
            s.error += (a - b) * (a - b);
            s.energy += a * a;
        }
        s
    }

    /// Adds another part's sums.
    pub fn merge(&mut self, other: Self) {
        self.error += other.error;
        self.energy += other.energy;
    }

    /// Σ‖x − x̂‖² / Σ‖x‖² (NaN when the energy is zero).
    pub fn rel_mse(&self) -> f64 {
        self.error / self.energy
    }
}

/// rel-MSE of one buffer and its reconstruction.
///
/// # Panics
/// If the lengths differ.
pub fn rel_mse(x: &[f32], y: &[f32]) -> f64 {
    ErrorEnergy::of(x, y).rel_mse()
}

/// −10·log10(rel-MSE) dB (infinite for an exact reconstruction).
pub fn snr_db(rel_mse: f64) -> f64 {
    -10.0 * rel_mse.log10()
}

/// 20·log10(2)·R − SNR dB: how far a codec at `bits_per_value` and `snr_db` stays from the
/// iid-Gaussian rate–distortion bound.
pub fn shannon_gap_db(bits_per_value: f64, snr_db: f64) -> f64 {
    db_per_bit() * bits_per_value - snr_db
}
