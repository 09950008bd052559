//! The crate's one error type.
//!
//! Leaf math follows the house rule: caller misuse that is a programming error (a batch whose
//! length is not a multiple of the plan length) panics and is documented under `# Panics`;
//! conditions a caller can meet with valid code (a length read from a file, a tier the CPU
//! lacks) are reported as [`Error`].

use crate::Tier;
use crate::length::MAX_LEN;

/// Everything that can go wrong when building a transform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The requested length is not one this crate implements.
    #[error(
        "unsupported transform length {len}; supported: 2^k for 1 <= 2^k <= {max_len}, \
         or 2^k*m with m in {{3, 5, 7}}, 4 <= 2^k and 2^k*m <= {max_len} \
         (for example 64, 80, 96, 112, 128, 160, 192, 256)"
    )]
    UnsupportedLength {
        /// The length that was asked for.
        len: usize,
        /// The largest supported length, [`MAX_LEN`].
        max_len: usize,
    },
    /// A SIMD tier was requested explicitly but the running CPU (or target) lacks it.
    #[error(
        "SIMD tier {tier} is not available on this CPU: it needs the `{feature}` target feature"
    )]
    TierUnavailable {
        /// The tier that was asked for.
        tier: Tier,
        /// The first missing target feature, as spelled by `is_x86_feature_detected!`.
        feature: &'static str,
    },
}

impl Error {
    /// Builds [`Error::UnsupportedLength`] for `len`.
    pub(crate) fn unsupported(len: usize) -> Self {
        Error::UnsupportedLength {
            len,
            max_len: MAX_LEN,
        }
    }
}
