//! `kv-codec`: compression of LLM key/value caches by lattice vector quantisation, into real
//! packed bytes.
//!
//! Every K or V vector (one head, one token) is coded on its own into a fixed number of
//! bytes, so the codec streams: a token at decode time gives the same bytes as the same
//! token inside a prefill batch.
//!
//! ```
//! use kv_codec::{CodecConfig, CodecSpec, Input, Output, VectorCodec};
//!
//! let config = CodecConfig::new("voronoi-e8-q16-s4".parse::<CodecSpec>()?, 128);
//! let codec = config.build()?;
//! let x: Vec<f32> = (0..4 * 128).map(|i| (i as f32 * 0.37).sin()).collect();
//!
//! let mut bytes = vec![0u8; codec.encoded_len(4)]; // 4 vectors, bit-packed
//! codec.encode(Input::F32(&x), &mut bytes)?;
//! let mut y = vec![0f32; x.len()];
//! codec.decode(&bytes, Output::F32(&mut y))?;
//!
//! let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
//! let energy: f32 = x.iter().map(|a| a * a).sum();
//! assert!(err / energy < 1e-2);
//! # Ok::<(), kv_codec::Error>(())
//! ```
//!
//! # The cache
//! [`cache::KvCache`] is the paged KV cache an inference engine plugs in: per layer a codec
//! (or an uncompressed dtype, or the KIVI baseline) for K and for V, pages that hold the
//! codec's packed bytes, appends per prefill chunk or token, crop, a sliding window,
//! gather to plain tensors, attention computed on the compressed pages, and a checksummed
//! file format.
//!
//! # Determinism
//! The bytes depend only on the input values and the [`CodecConfig`]: not on the batch
//! split, the thread count or the CPU's SIMD tier. Rounding is ties-to-even throughout,
//! no fused multiply-add feeds a quantisation decision, and sums run in one fixed order
//! ([`codec::sum_of_squares`]).
//!
//! The bytes do not depend on the [`Backend`] either: the CUDA kernels repeat the CPU's
//! operations in the CPU's order ([`CodecConfig::build_on`]).
//!
//! # Feature flags
//! * `cuda` (off by default): the GPU backend, [`Backend::Cuda`], and the `cuda` module
//!   (kernels compiled at run time by NVRTC through the `kv-cuda` crate; builds without a
//!   CUDA toolkit). Without it, [`Backend::Cuda`] exists and returns
//!   [`Error::BackendUnavailable`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backend;
pub mod bits;
pub mod cache;
pub mod codec;
pub mod codecs;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
mod error;
pub mod format;
pub mod scale;
pub mod spec;

pub use backend::Backend;
pub use cache::{
    CacheConfig, CachePlan, Kivi, Kv, KvCache, LayerPolicy, Protection, Storage, WindowFormat,
};
pub use codec::{Input, Output, Par, VectorCodec, decode_batch, encode_batch};
pub use config::{CodecConfig, DEFAULT_SEED};
pub use error::Error;
pub use spec::{CodecSpec, CompatLattice};
