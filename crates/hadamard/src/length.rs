//! Which transform lengths exist and how they factor.
//!
//! A supported length is `n = 2^k * m` with `m` in {1, 3, 5, 7}, `n <= MAX_LEN`, and
//! `2^k >= 4` whenever `m > 1` (so that every row of the Kronecker layout is at least one
//! radix-4 butterfly wide). This covers every power of two up to 4096 and the head
//! dimensions of common models that are not powers of two (80, 96, 112, 160, 192, 224,
//! 320, 384, 448, 640, 768, ...).

use core::ops::RangeBounds;

use crate::Error;

/// The largest supported length (inclusive), for powers of two and odd-factor lengths alike.
pub const MAX_LEN: usize = 4096;

/// The odd factors `m > 1` that a length may contain (at most once).
pub const ODD_FACTORS: [usize; 3] = [3, 5, 7];

/// The smallest power-of-two factor allowed next to an odd factor `m > 1`.
pub const MIN_POW2_WITH_ODD: usize = 4;

/// How a supported length splits into a power of two and an odd factor.
///
/// The transform views a vector of `len = pow2 * odd` values as `odd` rows of `pow2`
/// contiguous values (row `r` is `x[r * pow2 .. (r + 1) * pow2]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// The power-of-two factor `2^k` (the row length).
    pub pow2: usize,
    /// The odd factor `m`, one of 1, 3, 5, 7 (the number of rows).
    pub odd: usize,
}

impl Shape {
    /// Splits `len` into its power-of-two and odd factors.
    ///
    /// # Errors
    /// [`Error::UnsupportedLength`] when [`is_supported`]`(len)` is false.
    pub fn of(len: usize) -> Result<Shape, Error> {
        if len == 0 || len > MAX_LEN {
            return Err(Error::unsupported(len));
        }
        let pow2 = 1usize << len.trailing_zeros();
        let odd = len / pow2;
        let ok = odd == 1 || (ODD_FACTORS.contains(&odd) && pow2 >= MIN_POW2_WITH_ODD);
        if ok {
            Ok(Shape { pow2, odd })
        } else {
            Err(Error::unsupported(len))
        }
    }

    /// The transform length, `pow2 * odd`.
    pub fn len(self) -> usize {
        self.pow2 * self.odd
    }

    /// Always false: a supported length is at least 1. Present for API symmetry with `len`.
    pub fn is_empty(self) -> bool {
        false
    }
}

/// Whether [`crate::Fwht`] can be built for `len`.
///
/// ```
/// assert!(hadamard::is_supported(128));
/// assert!(hadamard::is_supported(96)); // 32 * 3
/// assert!(!hadamard::is_supported(100)); // 4 * 25
/// assert!(!hadamard::is_supported(6)); // 2 * 3: the power-of-two factor must be >= 4
/// ```
pub fn is_supported(len: usize) -> bool {
    Shape::of(len).is_ok()
}

/// The supported lengths inside `range`, in increasing order.
///
/// ```
/// let v: Vec<usize> = hadamard::supported_lengths(60..=100).collect();
/// assert_eq!(v, [64, 80, 96]);
/// ```
pub fn supported_lengths<R: RangeBounds<usize>>(range: R) -> impl Iterator<Item = usize> {
    (1..=MAX_LEN).filter(move |n| range.contains(n) && is_supported(*n))
}
