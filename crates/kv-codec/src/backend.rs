//! Where a codec runs: [`Backend`], a run-time value, and [`CodecConfig::build_on`].
//!
//! The bytes do not depend on the backend: every backend reproduces the CPU codec's
//! arithmetic exactly (see the crate's determinism note). The CUDA backend is compiled in by
//! the `cuda` feature; without it, `Backend::Cuda` still exists and building on it returns
//! [`Error::BackendUnavailable`], so that callers need no `cfg` of their own.

use serde::{Deserialize, Serialize};

use crate::codec::VectorCodec;
use crate::config::CodecConfig;
use crate::error::Error;

/// The hardware a codec runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Backend {
    /// The CPU (rayon over vectors, SIMD transforms).
    #[default]
    Cpu,
    /// An NVIDIA GPU, by CUDA device ordinal (needs the `cuda` feature, a driver and NVRTC).
    Cuda {
        /// The device's ordinal, as `nvidia-smi` lists it.
        ordinal: usize,
    },
}

impl CodecConfig {
    /// Builds the codec to run on `backend`. The codec's batch calls
    /// ([`VectorCodec::encode`], [`VectorCodec::decode`]) then run there and give the same
    /// bytes and values as [`CodecConfig::build`]'s.
    ///
    /// # Errors
    /// The codec's parameter errors; for [`Backend::Cuda`], [`Error::BackendUnavailable`]
    /// without the `cuda` feature or without a usable GPU, and `Error::Cuda` (with the
    /// feature) for device failures or shapes the kernels do not implement.
    pub fn build_on(&self, backend: Backend) -> Result<Box<dyn VectorCodec>, Error> {
        match backend {
            Backend::Cpu => self.build(),
            Backend::Cuda { ordinal } => cuda_codec(self, ordinal),
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_codec(config: &CodecConfig, ordinal: usize) -> Result<Box<dyn VectorCodec>, Error> {
    if !crate::cuda::is_available() {
        return Err(Error::BackendUnavailable {
            backend: "cuda",
            reason: "no CUDA driver, NVRTC or GPU on this machine",
        });
    }
    Ok(Box::new(crate::cuda::CudaCodec::new(config, ordinal)?))
}

#[cfg(not(feature = "cuda"))]
fn cuda_codec(_config: &CodecConfig, _ordinal: usize) -> Result<Box<dyn VectorCodec>, Error> {
    Err(Error::BackendUnavailable {
        backend: "cuda",
        reason: "kv-codec was built without its `cuda` feature",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_the_default_and_builds() {
        assert_eq!(Backend::default(), Backend::Cpu);
        let codec = CodecConfig::default().build_on(Backend::Cpu).unwrap();
        assert_eq!(codec.head_dim(), 128);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_typed_error() {
        let err = CodecConfig::default()
            .build_on(Backend::Cuda { ordinal: 0 })
            .unwrap_err();
        assert!(matches!(
            err,
            Error::BackendUnavailable {
                backend: "cuda",
                ..
            }
        ));
    }
}
