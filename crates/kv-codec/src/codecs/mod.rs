//! The codecs, and [`build`], which turns a [`CodecConfig`] into one of them.

pub mod baselines;
pub mod compat;
pub mod voronoi;

use hadamard::Fwht;

use crate::codec::VectorCodec;
use crate::codecs::baselines::scale_saturating;
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

/// [`VectorCodec::decode_vector`] of a codec that quantises `R·x / n` (R = `fwht`, n a
/// per-vector multiplier): `decode_unrotated` writes the rotated reconstruction of the
/// vector's bytes into scratch and returns n; the inverse rotation runs before the
/// multiplication, so a huge n cannot overflow the butterflies, and the product saturates at
/// ±`f32::MAX`.
pub(crate) fn decode_unrotating(
    fwht: &Fwht,
    out: &mut [f32],
    scratch: &mut [f32],
    decode_unrotated: impl FnOnce(&mut [f32]) -> Result<f32, &'static str>,
) -> Result<(), &'static str> {
    let y = &mut scratch[..out.len()];
    let n = decode_unrotated(y)?;
    fwht.inverse(y, out);
    scale_saturating(out, n);
    Ok(())
}

/// [`VectorCodec::decode_rotated`] of such a codec: the rotated reconstruction times n.
pub(crate) fn decode_in_rotation(
    bytes: &[u8],
    out: &mut [f32],
    decode_unrotated: impl FnOnce(&[u8], &mut [f32]) -> Result<f32, &'static str>,
) -> Result<(), &'static str> {
    let n = decode_unrotated(bytes, out)?;
    scale_saturating(out, n);
    Ok(())
}
