//! A seeded source of iid standard normal values, written out here (SplitMix64 and the
//! Box–Muller transform) so that a seed names the same numbers on every machine and with
//! every version of every dependency.

/// The SplitMix64 generator (Steele, Lea and Flood 2014): a 64-bit counter passed through a
/// fixed mixing function. Small, fast and good enough to feed a Gaussian transform.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Standard normal values by the Box–Muller transform, two per pair of uniforms.
#[derive(Clone, Debug)]
pub struct Gaussian {
    rng: SplitMix64,
    spare: Option<f64>,
}

impl Gaussian {
    /// A source starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            spare: None,
        }
    }

    /// The next N(0, 1) value.
    pub fn next_f64(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // 1 − u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.rng.next_f64();
        let u2 = self.rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }
}

/// `vectors · head_dim` iid N(0, 1) values (as f32), vector after vector, from `seed`.
pub fn gaussian_vectors(vectors: usize, head_dim: usize, seed: u64) -> Vec<f32> {
    let mut g = Gaussian::new(seed);
    (0..vectors * head_dim)
        .map(|_| g.next_f64() as f32)
        .collect()
}
