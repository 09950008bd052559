//! Per-token integer baselines: `int<b>` and `int<b>-g<n>` (b = 2…8).
//!
//! Symmetric absmax quantisation of each token's vector (or of each group of its values):
//! the plain per-token INT8/INT4 KV cache, with no rotation, which is how engines that
//! quantise per token do it. Engines differ in details this baseline leaves out (LMDeploy
//! and KIVI (Liu et al. 2024) add a zero point; KIVI also quantises K per channel and keeps
//! recent tokens in full precision). Without rotation the outlier channels of real K are
//! costly: on SmolLM2's K, per-token int4 loses about 5 dB to a rotated code, about one bit
//! per value. The rotated integer blocks are the llama.cpp baselines
//! ([`super::llama_cpp`]).
//!
//! For each group of `n` values (the whole vector by default), with `L = 2^(b−1) − 1`:
//! the scale `d = absmax / L` is rounded to f16 (the [`super::f16x`] format: IEEE f16,
//! with an escape that keeps huge inputs finite), and each value is
//! `q = clamp(round_ties_even(x / d), −L, L)` with the stored `d`. Decoding is `x̂ = q · d`.
//! The 2^b − 1 levels are symmetric around zero, so zero is exact and the level `−2^(b−1)`
//! is never used. A group whose scale is below f16's range (`absmax/L < 2^-25`) codes as
//! zeros, as an engine's f16 scale would.
//!
//! Layout per group: the scale (16 bits), then the `n` values as `b`-bit two's complement
//! (so `int8` values are plain `i8` bytes). Bits per vector: `(d/n) · 16 + b · d`.

use super::{absmax, check_grouped_head_dim, f16x, saturate};
use crate::bits::{BitReader, BitWriter};
use crate::codec::VectorCodec;
use crate::error::Error;
use crate::spec::CodecSpec;

/// Symmetric absmax integers per group (see the module docs).
#[derive(Clone, Debug)]
pub struct IntCodec {
    spec: CodecSpec,
    d: usize,
    bits: u32,
    group: usize,
}

impl IntCodec {
    /// The codec for `spec` (a [`CodecSpec::Int`]) at `head_dim`.
    ///
    /// # Panics
    /// If `spec` is not a [`CodecSpec::Int`].
    ///
    /// # Errors
    /// [`Error::UnsupportedHeadDim`] unless `head_dim` (≤ 4096) is a multiple of the group;
    /// parameter errors from the spec.
    pub fn new(spec: CodecSpec, head_dim: usize) -> Result<Self, Error> {
        let CodecSpec::Int { bits, group } = spec else {
            panic!("IntCodec::new needs an Int spec, got {spec}");
        };
        spec.validate()?;
        let group = check_grouped_head_dim(head_dim, group)?;
        Ok(Self {
            spec,
            d: head_dim,
            bits,
            group,
        })
    }

    /// The largest level, `L = 2^(b−1) − 1`.
    fn levels(&self) -> i32 {
        (1 << (self.bits - 1)) - 1
    }
}

impl VectorCodec for IntCodec {
    fn spec(&self) -> CodecSpec {
        self.spec
    }

    fn head_dim(&self) -> usize {
        self.d
    }

    fn bits_per_vector(&self) -> u32 {
        ((self.d / self.group) * 16) as u32 + self.bits * self.d as u32
    }

    fn scratch_len(&self) -> usize {
        0
    }

    fn encode_vector(&self, x: &[f32], out: &mut [u8], _scratch: &mut [f32]) {
        let l = self.levels();
        let mask = (1u64 << self.bits) - 1;
        let mut w = BitWriter::new(out);
        for g in x.chunks_exact(self.group) {
            let code = f16x::encode(absmax(g) / l as f32);
            w.write(u64::from(code), 16);
            let d = f16x::decode(code).expect("encode writes decodable codes");
            for &v in g {
                // A scale that rounded to zero (a group below f16's range) codes zeros, as
                // an engine's f16 scale would.
                let q = if d > 0.0 {
                    (v / d).round_ties_even().clamp(-l as f32, l as f32) as i32
                } else {
                    0
                };
                w.write(q as u64 & mask, self.bits);
            }
        }
    }

    fn decode_vector(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        _scratch: &mut [f32],
    ) -> Result<(), &'static str> {
        let shift = 64 - self.bits;
        let mut r = BitReader::new(bytes);
        for g in out.chunks_exact_mut(self.group) {
            let code = r.read(16).map_err(|_| "truncated")? as u16;
            let d = f16x::decode(code).ok_or("scale escape out of range")?;
            if d.is_sign_negative() {
                return Err("scale is negative");
            }
            // Every level first, then one check for the one never written.
            let mut lowest = false;
            r.read_fields(self.bits, g.len(), |k, raw| {
                // Sign-extend the b-bit two's complement value.
                let q = ((raw << shift) as i64) >> shift;
                lowest |= q == -(1 << (self.bits - 1));
                g[k] = saturate(q as f32 * d);
            })
            .map_err(|_| "truncated")?;
            if lowest {
                return Err("integer level −2^(b−1) is never written");
            }
        }
        Ok(())
    }
}
