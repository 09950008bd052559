//! The codecs, and [`build`], which turns a [`CodecConfig`] into one of them.

pub mod baselines;
pub mod compat;
pub mod voronoi;

use crate::codec::VectorCodec;
use crate::config::CodecConfig;
use crate::error::Error;
use crate::spec::CodecSpec;

/// Builds the codec a configuration describes.
///
/// # Errors
/// Parameter and head_dim errors of the chosen codec.
pub fn build(config: &CodecConfig) -> Result<Box<dyn VectorCodec>, Error> {
    Ok(match config.spec {
        spec @ CodecSpec::Compat { .. } => {
            Box::new(compat::CompatCodec::new(spec, config.head_dim)?)
        }
        spec @ CodecSpec::Voronoi { .. } => Box::new(voronoi::VoronoiCodec::new(
            spec,
            config.head_dim,
            config.seed,
        )?),
        CodecSpec::Bf16 => Box::new(baselines::float::Bf16Codec::new(config.head_dim)?),
        spec @ CodecSpec::Fp8E4m3 { .. } => {
            Box::new(baselines::float::Fp8Codec::new(spec, config.head_dim)?)
        }
        spec @ CodecSpec::Int { .. } => {
            Box::new(baselines::int::IntCodec::new(spec, config.head_dim)?)
        }
        spec @ CodecSpec::LlamaCpp { .. } => Box::new(baselines::llama_cpp::LlamaCppCodec::new(
            spec,
            config.head_dim,
            config.seed,
        )?),
        spec @ CodecSpec::TurboQuant { .. } => Box::new(
            baselines::turboquant::TurboQuantCodec::new(spec, config.head_dim, config.seed)?,
        ),
        spec @ CodecSpec::Strawman { .. } => Box::new(baselines::strawman::StrawmanCodec::new(
            spec,
            config.head_dim,
        )?),
    })
}
