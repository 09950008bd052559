//! Frozen pseudo-random signs for the randomised transform `T·diag(s)`.
//!
//! The seed is stored in the codec's file format, so the map from seed to signs is part of
//! that format and must never change; [`random_signs`] specifies it.

/// The SplitMix64 generator (Steele, Lea and Flood, 2014), frozen as specified in
/// [`random_signs`].
///
/// ```
/// let mut g = hadamard::SplitMix64::new(0);
/// assert_eq!(g.next_u64(), 0xE220_A839_7B1D_CDAF);
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The additive constant (the golden ratio in 0.64 fixed point).
    pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    /// A generator whose state starts at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// Advances the state and returns the next 64-bit output.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(Self::GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Fills `out` with the frozen signs (`+1.0` or `-1.0`) of `seed`.
///
/// The seed is stored in the codec's file format, so this map is part of that format and
/// will never change. It is defined here by hand (no external RNG crate, whose output may
/// change between versions):
///
/// 1. The generator is SplitMix64 exactly as in its public reference code: the state starts
///    at `seed`; each step adds `0x9E37_79B9_7F4A_7C15` (wrapping) to the state and returns
///    the new state passed through the finaliser `z ^= z >> 30; z *= 0xBF58_476D_1CE4_E5B9;
///    z ^= z >> 27; z *= 0x94D0_49BB_1331_11EB; z ^= z >> 31` (wrapping multiplications).
/// 2. Sign `i` (0-based) comes from output word `i / 64` (the first output is word 0) and
///    bit `i % 64` of it, counting from the least significant bit. Bit 1 means `-1.0`,
///    bit 0 means `+1.0`.
///
/// So sign `i` depends only on `seed` and `i`: the signs for length `n` are the first `n`
/// of one infinite stream per seed, and a longer vector extends, never reshuffles, a
/// shorter one.
///
/// ```
/// let mut s = [0.0f32; 4];
/// hadamard::random_signs(0, &mut s);
/// // The first output of SplitMix64(0) is 0xE220A8397B1DCDAF, whose low bits are 1111.
/// assert_eq!(s, [-1.0, -1.0, -1.0, -1.0]);
/// ```
pub fn random_signs(seed: u64, out: &mut [f32]) {
    let mut g = SplitMix64::new(seed);
    for chunk in out.chunks_mut(64) {
        let word = g.next_u64();
        for (i, s) in chunk.iter_mut().enumerate() {
            *s = if (word >> i) & 1 == 1 { -1.0 } else { 1.0 };
        }
    }
}

/// The sign masks of `seed` for `n` elements: `0x8000_0000` where [`random_signs`] gives
/// `-1.0`, `0` where it gives `+1.0`. Applying sign `i` to `x` is `x.to_bits() ^ mask[i]`.
pub fn sign_masks(seed: u64, n: usize) -> Vec<u32> {
    let mut g = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let word = g.next_u64();
        let take = (n - out.len()).min(64);
        out.extend((0..take).map(|i| (((word >> i) & 1) as u32) << 31));
    }
    out
}
