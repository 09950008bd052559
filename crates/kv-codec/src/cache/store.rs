//! How K or V tokens lie in a page: one internal trait, [`PageFormat`], with two layouts.
//!
//! * [`Packed`]: every token is one vector of a fixed number of bits, back to back (token
//!   `i` of a page starts at bit `i · bits`), so a page holds exactly the bytes a codec batch
//!   of its tokens would ([`crate::VectorCodec::encode`]). The codecs, dense f32/f16/bf16
//!   values and KIVI's per-token values use it.
//! * KIVI's keys ([`super::kivi::KiviKeys`]), quantised per channel over groups of tokens,
//!   so a group is the smallest unit written or read.
//!
//! Reads can return the rotated domain (`R·x̂`, see [`crate::VectorCodec::decode_rotated`]),
//! which the attention kernel dots with a query rotated once.

use core::fmt;

use hadamard::Fwht;
use half::{bf16, f16};

use crate::bits::{extract_bits, or_bits};
use crate::codec::VectorCodec;
use crate::codecs::baselines::float::bf16_bits;
use crate::format::Dtype;

/// Scratch space of one reader or writer, sized by [`PageFormat::scratch`].
#[derive(Debug)]
pub(crate) struct Scratch {
    /// f32 working space.
    pub(crate) floats: Vec<f32>,
    /// One vector's bytes.
    pub(crate) bytes: Vec<u8>,
}

/// A corrupt token: its index within the read and what is wrong.
pub(crate) type ReadError = (usize, &'static str);

/// The layout of one of K or V of a layer, per stream (one batch row and KV head).
pub(crate) trait PageFormat: Send + Sync + fmt::Debug {
    /// Bytes of a page of `tokens` tokens (a multiple of [`PageFormat::unit`]).
    fn page_bytes(&self, tokens: usize) -> usize;

    /// Tokens written and read together: 1, or KIVI's key group.
    fn unit(&self) -> usize {
        1
    }

    /// First bit of token `slot` (a multiple of the unit) within a page.
    fn bit_of(&self, slot: usize) -> usize;

    /// Scratch for [`PageFormat::write`] and [`PageFormat::read`].
    fn scratch(&self) -> Scratch;

    /// The orthonormal rotation of the rotated domain (`None`: the identity).
    fn rotation(&self) -> Option<&Fwht>;

    /// Writes `x` (finite; whole units of tokens, `head_dim` values each) at token `slot`
    /// of `page`, whose bits from that token on are zero.
    fn write(&self, page: &mut [u8], slot: usize, x: &[f32], scratch: &mut Scratch);

    /// Reads the tokens from `slot` on into `out` (whole units of `head_dim` values),
    /// rotated when `rotated` is set.
    ///
    /// # Errors
    /// The first corrupt token, counted from `slot`.
    fn read(
        &self,
        page: &[u8],
        slot: usize,
        out: &mut [f32],
        rotated: bool,
        scratch: &mut Scratch,
    ) -> Result<(), ReadError>;
}

/// A coder of single vectors into a fixed number of bits: the part of
/// [`VectorCodec`] that [`Packed`] needs, also implemented by formats that are not codecs
/// (dense values, KIVI's values), which have no [`crate::CodecSpec`].
pub(crate) trait VectorCoder: Send + Sync + fmt::Debug {
    /// Values per vector.
    fn head_dim(&self) -> usize;
    /// Bits per vector.
    fn bits(&self) -> usize;
    /// f32 scratch of one call.
    fn scratch_len(&self) -> usize;
    /// The rotation, as [`VectorCodec::rotation`].
    fn rotation(&self) -> Option<&Fwht>;
    /// Encodes one finite vector into `⌈bits / 8⌉` bytes.
    fn encode(&self, x: &[f32], out: &mut [u8], scratch: &mut [f32]);
    /// Decodes one vector, into the rotated domain when `rotated` is set.
    ///
    /// # Errors
    /// What is wrong with the bytes.
    fn decode(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        rotated: bool,
        scratch: &mut [f32],
    ) -> Result<(), &'static str>;
}

impl VectorCoder for dyn VectorCodec {
    fn head_dim(&self) -> usize {
        VectorCodec::head_dim(self)
    }

    fn bits(&self) -> usize {
        self.bits_per_vector() as usize
    }

    fn scratch_len(&self) -> usize {
        VectorCodec::scratch_len(self)
    }

    fn rotation(&self) -> Option<&Fwht> {
        VectorCodec::rotation(self)
    }

    fn encode(&self, x: &[f32], out: &mut [u8], scratch: &mut [f32]) {
        self.encode_vector(x, out, scratch);
    }

    fn decode(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        rotated: bool,
        scratch: &mut [f32],
    ) -> Result<(), &'static str> {
        if rotated {
            self.decode_rotated(bytes, out, scratch)
        } else {
            self.decode_vector(bytes, out, scratch)
        }
    }
}

/// A boxed coder (a codec's `Box<dyn VectorCodec>`, a layer's window format) codes as
/// what it holds.
impl<C: VectorCoder + ?Sized> VectorCoder for Box<C> {
    fn head_dim(&self) -> usize {
        (**self).head_dim()
    }

    fn bits(&self) -> usize {
        (**self).bits()
    }

    fn scratch_len(&self) -> usize {
        (**self).scratch_len()
    }

    fn rotation(&self) -> Option<&Fwht> {
        (**self).rotation()
    }

    fn encode(&self, x: &[f32], out: &mut [u8], scratch: &mut [f32]) {
        (**self).encode(x, out, scratch);
    }

    fn decode(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        rotated: bool,
        scratch: &mut [f32],
    ) -> Result<(), &'static str> {
        (**self).decode(bytes, out, rotated, scratch)
    }
}

/// Tokens as vectors of a [`VectorCoder`], bit-packed back to back.
#[derive(Debug)]
pub(crate) struct Packed<C>(pub(crate) C);

impl<C: VectorCoder> PageFormat for Packed<C> {
    fn page_bytes(&self, tokens: usize) -> usize {
        (tokens * self.0.bits()).div_ceil(8)
    }

    fn bit_of(&self, slot: usize) -> usize {
        slot * self.0.bits()
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            floats: vec![0.0; self.0.scratch_len()],
            bytes: vec![0; self.0.bits().div_ceil(8)],
        }
    }

    fn rotation(&self) -> Option<&Fwht> {
        self.0.rotation()
    }

    fn write(&self, page: &mut [u8], slot: usize, x: &[f32], scratch: &mut Scratch) {
        let bits = self.0.bits();
        for (i, v) in x.chunks_exact(self.0.head_dim()).enumerate() {
            self.0.encode(v, &mut scratch.bytes, &mut scratch.floats);
            or_bits(page, (slot + i) * bits, &scratch.bytes, bits);
        }
    }

    fn read(
        &self,
        page: &[u8],
        slot: usize,
        out: &mut [f32],
        rotated: bool,
        scratch: &mut Scratch,
    ) -> Result<(), ReadError> {
        let bits = self.0.bits();
        let d = self.0.head_dim();
        if bits.is_multiple_of(8) {
            // Whole-byte vectors are decoded in place.
            for (i, o) in out.chunks_exact_mut(d).enumerate() {
                let at = (slot + i) * bits;
                self.0
                    .decode(
                        &page[at / 8..(at + bits) / 8],
                        o,
                        rotated,
                        &mut scratch.floats,
                    )
                    .map_err(|reason| (i, reason))?;
            }
            return Ok(());
        }
        // Others are shifted out to whole bytes first, all of them before the first decode:
        // a decoder's wide loads straddle the byte stores of the shift, which cannot forward
        // to them, and a load waits for such stores to reach the cache.
        let stride = bits.div_ceil(8);
        let n = out.len() / d;
        if scratch.bytes.len() < n * stride {
            scratch.bytes.resize(n * stride, 0);
        }
        for (i, bytes) in scratch.bytes.chunks_exact_mut(stride).take(n).enumerate() {
            extract_bits(page, (slot + i) * bits, bits, bytes);
        }
        for (i, (o, bytes)) in out
            .chunks_exact_mut(d)
            .zip(scratch.bytes.chunks_exact(stride))
            .enumerate()
        {
            self.0
                .decode(bytes, o, rotated, &mut scratch.floats)
                .map_err(|reason| (i, reason))?;
        }
        Ok(())
    }
}

/// Uncompressed values in one of the engines' dtypes, little-endian (f16 and bf16 round to
/// nearest even and saturate at their largest finite value instead of overflowing).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dense {
    pub(crate) dtype: Dtype,
    pub(crate) head_dim: usize,
}

impl Dense {
    fn width(&self) -> usize {
        match self.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }
}

/// f16 bits of a finite `v`, rounded to nearest even and saturated below infinity.
fn f16_bits(v: f32) -> u16 {
    let h = f16::from_f32(v);
    if h.is_infinite() {
        if v > 0.0 { f16::MAX } else { f16::MIN }.to_bits()
    } else {
        h.to_bits()
    }
}

impl VectorCoder for Dense {
    fn head_dim(&self) -> usize {
        self.head_dim
    }

    fn bits(&self) -> usize {
        8 * self.width() * self.head_dim
    }

    fn scratch_len(&self) -> usize {
        0
    }

    fn rotation(&self) -> Option<&Fwht> {
        None
    }

    fn encode(&self, x: &[f32], out: &mut [u8], _scratch: &mut [f32]) {
        match self.dtype {
            Dtype::F32 => {
                for (o, v) in out.chunks_exact_mut(4).zip(x) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            Dtype::F16 => {
                for (o, &v) in out.chunks_exact_mut(2).zip(x) {
                    o.copy_from_slice(&f16_bits(v).to_le_bytes());
                }
            }
            Dtype::Bf16 => {
                for (o, &v) in out.chunks_exact_mut(2).zip(x) {
                    o.copy_from_slice(&bf16_bits(v).to_le_bytes());
                }
            }
        }
    }

    fn decode(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        _rotated: bool,
        _scratch: &mut [f32],
    ) -> Result<(), &'static str> {
        match self.dtype {
            Dtype::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            Dtype::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                }
            }
            Dtype::Bf16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                }
            }
        }
        // Only a corrupt file holds non-finite values: every writer saturates.
        if out.iter().fold(true, |all, v| all & v.is_finite()) {
            Ok(())
        } else {
            Err("value is not finite")
        }
    }
}
