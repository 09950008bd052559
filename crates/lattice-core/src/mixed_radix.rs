//! Joint (mixed-radix) indexing: many block indices packed into one integer.
//!
//! A vector of `n` blocks whose codebooks have `M₀, M₁, …` points needs ⌈log2 ∏ Mᵢ⌉ bits
//! when its block indices are combined as one mixed-radix number, against Σ ⌈log2 Mᵢ⌉ when
//! each block is rounded up to whole bits: the published D4 format, for example, pays up to
//! one bit per block for that rounding. The integer is held as little-endian `u64` limbs.

use crate::error::Error;

/// A mixed-radix number system: digit `i` lies in `0..radices[i]`, and digit 0 is the least
/// significant, so the value is d₀ + r₀·(d₁ + r₁·(d₂ + …)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MixedRadix {
    radices: Vec<u64>,
    divisors: Vec<Divisor>,
    /// Runs of consecutive digits whose radices multiply to less than 2^64, each read from
    /// (and written to) the big number as one word: far fewer multi-limb divisions.
    groups: Vec<Group>,
    bits: u32,
}

/// Number of `u64` limbs that hold `bits` bits.
pub const fn limbs_for_bits(bits: u32) -> usize {
    bits.div_ceil(64) as usize
}

impl MixedRadix {
    /// A system with the given radices (each ≥ 1).
    ///
    /// # Errors
    /// [`Error::ParameterOutOfRange`] if a radix is 0.
    pub fn new(radices: &[u64]) -> Result<Self, Error> {
        if radices.contains(&0) {
            return Err(Error::ParameterOutOfRange {
                name: "radix",
                value: 0,
                min: 1,
                max: u64::MAX,
            });
        }
        // The largest value is ∏ rᵢ − 1; its bit length is the width of the joint index.
        let mut max = vec![1u64];
        for &r in radices {
            mul_add(&mut max, r, 0);
        }
        sub_one(&mut max);
        let bits = bit_length(&max);
        let mut groups: Vec<Group> = Vec::new();
        for (i, &r) in radices.iter().enumerate() {
            match groups
                .last_mut()
                .and_then(|g| Some((g.product.checked_mul(r)?, g)))
            {
                Some((product, g)) => {
                    g.product = product;
                    g.len += 1;
                }
                None => groups.push(Group {
                    start: i,
                    len: 1,
                    product: r,
                    divisor: Divisor::new(1),
                }),
            }
        }
        for g in &mut groups {
            g.divisor = Divisor::new(g.product);
        }
        Ok(Self {
            radices: radices.to_vec(),
            divisors: radices.iter().map(|&r| Divisor::new(r)).collect(),
            groups,
            bits,
        })
    }

    /// `count` digits of the same radix.
    ///
    /// # Errors
    /// As [`MixedRadix::new`].
    pub fn uniform(radix: u64, count: usize) -> Result<Self, Error> {
        Self::new(&vec![radix; count])
    }

    /// Width of the joint index in bits: ⌈log2 ∏ rᵢ⌉.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Number of `u64` limbs [`MixedRadix::encode`] writes and [`MixedRadix::decode`] reads.
    pub fn limbs(&self) -> usize {
        limbs_for_bits(self.bits)
    }

    /// The radices, least significant first.
    pub fn radices(&self) -> &[u64] {
        &self.radices
    }

    /// Combines `digits` into the joint index, written to `limbs` (little-endian).
    ///
    /// # Panics
    /// Panics if `digits.len()` differs from the number of radices, if a digit is not below
    /// its radix, or if `limbs.len()` differs from [`MixedRadix::limbs`].
    pub fn encode(&self, digits: &[u64], limbs: &mut [u64]) {
        assert_eq!(digits.len(), self.radices.len(), "one digit per radix");
        assert_eq!(limbs.len(), self.limbs(), "limb buffer length");
        limbs.fill(0);
        let mut used = 0;
        for g in self.groups.iter().rev() {
            let run = g.start..g.start + g.len;
            let word = digits[run.clone()]
                .iter()
                .zip(&self.radices[run])
                .rev()
                .fold(0u64, |word, (&d, &r)| {
                    assert!(d < r, "digit {d} is not below its radix {r}");
                    word * r + d
                });
            used = mul_add_prefix(limbs, used, g.product, word);
        }
    }

    /// Splits the joint index in `limbs` into `digits`, using `scratch` (same length as
    /// `limbs`) as working space.
    ///
    /// # Errors
    /// [`Error::JointIndexOutOfRange`] if the value is not below ∏ rᵢ (corrupt data).
    ///
    /// # Panics
    /// Panics if the buffer lengths differ from [`MixedRadix::limbs`] and the number of radices.
    pub fn decode(
        &self,
        limbs: &[u64],
        digits: &mut [u64],
        scratch: &mut [u64],
    ) -> Result<(), Error> {
        assert_eq!(digits.len(), self.radices.len(), "one digit per radix");
        assert_eq!(limbs.len(), self.limbs(), "limb buffer length");
        assert_eq!(scratch.len(), self.limbs(), "scratch length");
        scratch.copy_from_slice(limbs);
        let mut used = significant_limbs(scratch);
        for g in &self.groups {
            let mut word = div_rem_prefix(scratch, used, &g.divisor);
            used = significant_limbs(&scratch[..used]);
            let (last, split) = (g.start + g.len - 1, g.start..g.start + g.len - 1);
            for (d, divisor) in digits[split.clone()].iter_mut().zip(&self.divisors[split]) {
                let (quotient, remainder) = divisor.div_rem(word);
                *d = remainder;
                word = quotient;
            }
            // The word is below the group's product, so what is left is below the last radix.
            digits[last] = word;
        }
        // Whatever is left after dividing by every radix was ≥ ∏ rᵢ.
        if used == 0 {
            Ok(())
        } else {
            Err(Error::JointIndexOutOfRange { bits: self.bits })
        }
    }
}

/// `value = value · r + add` over a growable limb vector.
fn mul_add(value: &mut Vec<u64>, r: u64, add: u64) {
    let mut carry = u128::from(add);
    for limb in value.iter_mut() {
        let t = u128::from(*limb) * u128::from(r) + carry;
        *limb = t as u64;
        carry = t >> 64;
    }
    if carry != 0 {
        value.push(carry as u64);
    }
}

/// `value = value · r + add` where only `value[..used]` may be non-zero; returns the new
/// number of significant limbs.
///
/// # Panics
/// Panics if the result does not fit `value` (the caller sized it from the radices).
fn mul_add_prefix(value: &mut [u64], used: usize, r: u64, add: u64) -> usize {
    let mut carry = u128::from(add);
    for limb in &mut value[..used] {
        let t = u128::from(*limb) * u128::from(r) + carry;
        *limb = t as u64;
        carry = t >> 64;
    }
    if carry == 0 {
        used
    } else {
        value[used] = carry as u64;
        used + 1
    }
}

/// Divides `value[..used]` by `r` in place and returns the remainder.
/// A run of digits read as one word (see [`MixedRadix`]'s `groups`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Group {
    /// Index of the run's first digit.
    start: usize,
    /// Digits in the run.
    len: usize,
    /// The product of their radices (below 2^64).
    product: u64,
    /// `product` as a divisor.
    divisor: Divisor,
}

/// A radix with its precomputed reciprocal, so that dividing a limb costs two
/// multiplications instead of a 128-by-64-bit division (Möller & Granlund, "Improved
/// division by invariant integers", IEEE Trans. Computers 60(2), 2011, Algorithm 4).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Divisor {
    /// The radix shifted left until its top bit is set.
    normalized: u64,
    /// How far it was shifted.
    shift: u32,
    /// ⌊(2^128 − 1) / normalized⌋ − 2^64.
    reciprocal: u64,
}

impl Divisor {
    fn new(radix: u64) -> Self {
        let shift = radix.leading_zeros();
        let normalized = radix << shift;
        let reciprocal = (u128::MAX / u128::from(normalized) - (1u128 << 64)) as u64;
        Self {
            normalized,
            shift,
            reciprocal,
        }
    }

    /// Quotient and remainder of `value` by the radix.
    #[inline]
    fn div_rem(&self, value: u64) -> (u64, u64) {
        let s = self.shift;
        let hi = if s == 0 { 0 } else { value >> (64 - s) };
        let (q, r) = self.div_2by1(hi, value << s);
        (q, r >> s)
    }

    /// Quotient and remainder of the two-limb number (`hi`, `lo`) by the normalized radix,
    /// for `hi` below it.
    #[inline]
    fn div_2by1(&self, hi: u64, lo: u64) -> (u64, u64) {
        let d = self.normalized;
        let product = u128::from(self.reciprocal) * u128::from(hi);
        let sum = product.wrapping_add((u128::from(hi) << 64) | u128::from(lo));
        let mut q = ((sum >> 64) as u64).wrapping_add(1);
        let mut r = lo.wrapping_sub(q.wrapping_mul(d));
        if r > sum as u64 {
            q = q.wrapping_sub(1);
            r = r.wrapping_add(d);
        }
        if r >= d {
            q += 1;
            r -= d;
        }
        (q, r)
    }
}

/// Divides the `used` low limbs of `value` by the radix in place and returns the remainder.
/// The dividend is taken shifted left by the divisor's normalisation, which leaves the
/// quotient unchanged and scales the remainder, shifted back at the end.
fn div_rem_prefix(value: &mut [u64], used: usize, divisor: &Divisor) -> u64 {
    let s = divisor.shift;
    // The shifted bits of limb i, and the bits limb i − 1 carries into it.
    let shifted = |limb: u64| if s == 0 { 0 } else { limb >> (64 - s) };
    let mut rem = used.checked_sub(1).map_or(0, |top| shifted(value[top]));
    for i in (0..used).rev() {
        let below = if i == 0 { 0 } else { shifted(value[i - 1]) };
        let (q, r) = divisor.div_2by1(rem, (value[i] << s) | below);
        value[i] = q;
        rem = r;
    }
    rem >> s
}

fn significant_limbs(value: &[u64]) -> usize {
    value.iter().rposition(|&l| l != 0).map_or(0, |i| i + 1)
}

fn sub_one(value: &mut [u64]) {
    for limb in value.iter_mut() {
        let (v, borrow) = limb.overflowing_sub(1);
        *limb = v;
        if !borrow {
            return;
        }
    }
}

fn bit_length(value: &[u64]) -> u32 {
    match significant_limbs(value) {
        0 => 0,
        n => 64 * (n as u32 - 1) + (64 - value[n - 1].leading_zeros()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_the_ceiling_of_the_product_log() {
        assert_eq!(MixedRadix::new(&[]).unwrap().bits(), 0);
        assert_eq!(MixedRadix::new(&[1, 1]).unwrap().bits(), 0);
        assert_eq!(MixedRadix::new(&[2]).unwrap().bits(), 1);
        assert_eq!(MixedRadix::new(&[3]).unwrap().bits(), 2);
        assert_eq!(MixedRadix::new(&[4, 4]).unwrap().bits(), 4);
        assert_eq!(MixedRadix::new(&[5, 5, 5]).unwrap().bits(), 7); // 125 ≤ 128
        assert_eq!(MixedRadix::uniform(u64::MAX, 2).unwrap().bits(), 128);
        assert_eq!(MixedRadix::uniform(1 << 32, 3).unwrap().bits(), 96);
    }

    /// A xorshift64 generator: the tests' pseudo-random words.
    fn xorshift() -> impl FnMut() -> u64 {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// The reference: schoolbook long division of the little-endian limbs by `r` with u128,
    /// in place; returns the remainder.
    fn long_division(limbs: &mut [u64], r: u64) -> u64 {
        let mut rem = 0u128;
        for limb in limbs.iter_mut().rev() {
            let cur = (rem << 64) | u128::from(*limb);
            *limb = (cur / u128::from(r)) as u64;
            rem = cur % u128::from(r);
        }
        rem as u64
    }

    #[test]
    fn reciprocal_division_matches_u128_division() {
        let mut next = xorshift();
        let mut radices = vec![1, 2, 3, 7, 10, 255, 1 << 32, (1 << 63) + 1, u64::MAX];
        radices.extend((0..200).map(|i| next() >> (i % 64)).filter(|&r| r > 0));
        for r in radices {
            for _ in 0..50 {
                let limbs = [next(), next(), next() >> (next() % 64)];
                let mut value = limbs;
                let rem = div_rem_prefix(&mut value, 3, &Divisor::new(r));
                let mut expect = limbs;
                let want = long_division(&mut expect, r);
                assert_eq!((value, rem), (expect, want), "radix {r}, limbs {limbs:?}");
            }
        }
    }

    #[test]
    fn decode_matches_long_division_by_each_radix() {
        let mut next = xorshift();
        let special = [1, 2, 3, 7, 10, 255, 1 << 32, (1 << 63) + 1, u64::MAX];
        for case in 0..2000 {
            let count = 1 + (next() % 24) as usize;
            let radices: Vec<u64> = (0..count)
                .map(|_| match next() % 3 {
                    0 => special[(next() % special.len() as u64) as usize],
                    1 => 1 + next() % 300,
                    _ => (next() >> (next() % 64)).max(1),
                })
                .collect();
            let m = MixedRadix::new(&radices).unwrap();
            let mut limbs: Vec<u64> = (0..m.limbs()).map(|_| next()).collect();
            // Mostly indices within the width, so that many are in range.
            if case % 4 != 0
                && let Some(top) = limbs.last_mut()
                && !m.bits().is_multiple_of(64)
            {
                *top &= (1 << (m.bits() % 64)) - 1;
            }
            // Reference: long division by one radix after another.
            let mut value = limbs.clone();
            let want: Vec<u64> = radices
                .iter()
                .map(|&r| long_division(&mut value, r))
                .collect();
            let mut digits = vec![0; count];
            let mut scratch = vec![0; m.limbs()];
            let got = m.decode(&limbs, &mut digits, &mut scratch);
            if value.iter().all(|&l| l == 0) {
                assert_eq!(got, Ok(()), "radices {radices:?}, limbs {limbs:?}");
                assert_eq!(digits, want, "radices {radices:?}, limbs {limbs:?}");
            } else {
                assert!(got.is_err(), "radices {radices:?}, limbs {limbs:?}");
            }
        }
    }

    #[test]
    fn out_of_range_joint_index_is_an_error() {
        let m = MixedRadix::new(&[3, 5]).unwrap(); // 15 values in 4 bits
        let mut digits = [0; 2];
        let mut scratch = [0; 1];
        m.decode(&[14], &mut digits, &mut scratch).unwrap();
        assert_eq!(digits, [2, 4]);
        assert_eq!(
            m.decode(&[15], &mut digits, &mut scratch),
            Err(Error::JointIndexOutOfRange { bits: 4 })
        );
    }
}
