//! [`CodecConfig`]: everything that decides the bytes, with a builder and serde support.

use serde::{Deserialize, Serialize};

use crate::codec::VectorCodec;
use crate::error::Error;
use crate::spec::CodecSpec;

/// Seed of the rotation's random signs when none is given ("KVCODEC" in ASCII).
pub const DEFAULT_SEED: u64 = 0x004B_5643_4F44_4543;

/// A complete codec configuration. Every field is written into the stream header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodecConfig {
    /// The codec and its parameters.
    pub spec: CodecSpec,
    /// Values per vector.
    pub head_dim: usize,
    /// Seed of the rotation's random signs (ignored by codecs without random signs).
    pub seed: u64,
}

impl Default for CodecConfig {
    /// The default codec family at head_dim 128 and 4.34 bits per value (q = 16, four scale
    /// choices per block).
    fn default() -> Self {
        Self {
            spec: CodecSpec::Voronoi { q: 16, scales: 4 },
            head_dim: 128,
            seed: DEFAULT_SEED,
        }
    }
}

impl CodecConfig {
    /// A configuration with the default seed.
    pub fn new(spec: CodecSpec, head_dim: usize) -> Self {
        Self {
            spec,
            head_dim,
            seed: DEFAULT_SEED,
        }
    }

    /// The default codec at the most bits per value not above `bits_per_value`, with the
    /// default seed ([`crate::codecs::voronoi::default_for_rate`] picks it).
    ///
    /// # Errors
    /// [`Error::RateUnreachable`] below the smallest code, [`Error::UnsupportedHeadDim`].
    pub fn for_rate(bits_per_value: f64, head_dim: usize) -> Result<Self, Error> {
        crate::codecs::voronoi::default_for_rate(bits_per_value, head_dim)
            .map(|spec| Self::new(spec, head_dim))
    }

    /// Sets the codec.
    pub fn with_spec(mut self, spec: CodecSpec) -> Self {
        self.spec = spec;
        self
    }

    /// Sets the head dimension.
    pub fn with_head_dim(mut self, head_dim: usize) -> Self {
        self.head_dim = head_dim;
        self
    }

    /// Sets the rotation seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Builds the codec.
    ///
    /// # Errors
    /// Parameter and head_dim errors of the chosen codec.
    pub fn build(&self) -> Result<Box<dyn VectorCodec>, Error> {
        crate::codecs::build(self)
    }
}
