//! CPU instruction-set tiers and their run-time detection.
//!
//! Every tier computes bit-identical outputs (see the crate docs); they differ only in speed.
//! Detection uses `is_x86_feature_detected!`, which caches its answer, and is done once per
//! [`crate::Planner`] or plan construction, never in a transform call.

use core::fmt;

use crate::Error;

/// An implementation tier of the transform kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Tier {
    /// Portable scalar code: the reference that defines the output bits.
    Scalar,
    /// x86-64 with AVX2 (8 lanes of f32).
    Avx2,
    /// x86-64 with AVX-512F (16 lanes of f32); also requires AVX2, which every AVX-512 CPU has.
    Avx512,
}

impl Tier {
    /// Every tier, slowest first.
    pub const ALL: [Tier; 3] = [Tier::Scalar, Tier::Avx2, Tier::Avx512];

    /// The fastest tier the running CPU supports (the scalar tier off x86-64).
    pub fn detect() -> Tier {
        Tier::ALL
            .into_iter()
            .rev()
            .find(|t| t.is_available())
            .unwrap_or(Tier::Scalar)
    }

    /// Whether the running CPU supports this tier.
    pub fn is_available(self) -> bool {
        self.check().is_ok()
    }

    /// The tiers the running CPU supports, slowest first (always starts with `Scalar`).
    pub fn available() -> impl Iterator<Item = Tier> {
        Tier::ALL.into_iter().filter(|t| t.is_available())
    }

    /// A short lowercase name: `scalar`, `avx2`, `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Scalar => "scalar",
            Tier::Avx2 => "avx2",
            Tier::Avx512 => "avx512",
        }
    }

    /// `Ok(())` if the CPU supports this tier, else the first missing feature.
    pub(crate) fn check(self) -> Result<(), Error> {
        let missing = |feature| {
            Err(Error::TierUnavailable {
                tier: self,
                feature,
            })
        };
        match self {
            Tier::Scalar => Ok(()),
            Tier::Avx2 => {
                if has_avx2() {
                    Ok(())
                } else {
                    missing("avx2")
                }
            }
            Tier::Avx512 => {
                if !has_avx2() {
                    missing("avx2")
                } else if !has_avx512f() {
                    missing("avx512f")
                } else {
                    Ok(())
                }
            }
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

#[cfg(target_arch = "x86_64")]
fn has_avx512f() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512f() -> bool {
    false
}
