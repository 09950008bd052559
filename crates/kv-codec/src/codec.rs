//! The codec trait and the batch driver shared by every codec: input conversion, checks,
//! and rayon over vectors with per-thread scratch.

use core::fmt;

use hadamard::Fwht;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use crate::bits::{BitWriter, extract_bits};
use crate::codecs::baselines::float::round_to_bf16;
use crate::error::Error;
use crate::format::Dtype;
use crate::spec::CodecSpec;

/// A batch of vectors, back to back, in one of the dtypes engines hold K/V in.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// IEEE half precision.
    F16(&'a [f16]),
    /// bfloat16.
    Bf16(&'a [bf16]),
}

impl Input<'_> {
    /// The dtype of the values.
    pub fn dtype(&self) -> Dtype {
        match self {
            Self::F32(_) => Dtype::F32,
            Self::F16(_) => Dtype::F16,
            Self::Bf16(_) => Dtype::Bf16,
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F16(v) => v.len(),
            Self::Bf16(v) => v.len(),
        }
    }

    /// Copies the vectors of `d` values from vector `i` on, as many as fill `out`, into
    /// `out` as f32.
    pub(crate) fn load(&self, i: usize, d: usize, out: &mut [f32]) {
        let r = i * d..i * d + out.len();
        match self {
            Self::F32(v) => out.copy_from_slice(&v[r]),
            Self::F16(v) => HalfSlice::to_f32(&v[r], out),
            Self::Bf16(v) => HalfSlice::to_f32(&v[r], out),
        }
    }
}

/// Where decoded vectors go, in the dtype the engine wants.
#[derive(Debug)]
pub enum Output<'a> {
    /// 32-bit floats.
    F32(&'a mut [f32]),
    /// IEEE half precision (rounded to nearest even).
    F16(&'a mut [f16]),
    /// bfloat16 (rounded to nearest even).
    Bf16(&'a mut [bf16]),
}

impl Output<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F16(v) => v.len(),
            Self::Bf16(v) => v.len(),
        }
    }

    /// Writes `y` at value offset `at`, rounding to the output's dtype.
    pub(crate) fn store(&mut self, at: usize, y: &[f32]) {
        let r = at..at + y.len();
        match self {
            Self::F32(v) => v[r].copy_from_slice(y),
            Self::F16(v) => HalfSlice::from_f32(y, &mut v[r]),
            Self::Bf16(v) => HalfSlice::from_f32(y, &mut v[r]),
        }
    }
}

/// Slice conversions between f32 and a 16-bit dtype, bit for bit those of `half`'s scalar
/// conversions (rounding to nearest even; NaNs stay NaN with the quiet bit set).
trait HalfSlice: Sized {
    fn to_f32(src: &[Self], dst: &mut [f32]);
    fn from_f32(src: &[f32], dst: &mut [Self]);
}

/// half's slice conversions, with F16C where the CPU has it.
impl HalfSlice for f16 {
    fn to_f32(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }

    fn from_f32(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
}

/// half converts bf16 one value at a time with a branch for NaN (it has no bf16 SIMD path);
/// the same operations written as selects vectorise, several times faster.
impl HalfSlice for bf16 {
    fn to_f32(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            let b = u32::from(s.to_bits());
            let quiet = if b & 0x7fff > 0x7f80 { 0x40 } else { 0 };
            *d = f32::from_bits((b | quiet) << 16);
        }
    }

    fn from_f32(src: &[f32], dst: &mut [Self]) {
        for (d, s) in dst.iter_mut().zip(src) {
            let b = s.to_bits();
            let bits = if b & 0x7fff_ffff > 0x7f80_0000 {
                (b >> 16) | 0x40
            } else {
                round_to_bf16(b)
            };
            *d = bf16::from_bits(bits as u16);
        }
    }
}

/// How a batch is spread over threads. The bytes are the same either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Par {
    /// The calling thread only.
    Seq,
    /// Rayon's global pool.
    #[default]
    Rayon,
}

/// Vectors handed to one rayon task, and to one [`VectorCodec::encode_vectors`] or
/// [`VectorCodec::decode_vectors`] call: large enough to amortise the working buffers and to
/// let codecs share work between vectors, and a multiple of 8 so that every chunk's bytes
/// start on a byte boundary.
const CHUNK: usize = 256;

/// A codec of fixed-size vectors into a fixed number of bits each.
///
/// Every vector is coded on its own into exactly [`VectorCodec::bits_per_vector`] bits. A
/// batch of `n` vectors is those bit strings back to back (vector `i` starts at bit
/// `i · bits_per_vector`), padded with zero bits to [`VectorCodec::encoded_len`] bytes, so
/// the bytes held are the advertised bits up to one byte per batch, a batch can be split at
/// any multiple of 8 vectors, and vectors can be read at random.
pub trait VectorCodec: Send + Sync + fmt::Debug {
    /// The codec and its parameters.
    fn spec(&self) -> CodecSpec;

    /// Values per vector.
    fn head_dim(&self) -> usize;

    /// Meaningful bits per vector: indices, scales, norms and flags, all of them.
    fn bits_per_vector(&self) -> u32;

    /// Bytes one vector occupies on its own ([`VectorCodec::encode_vector`]'s output).
    fn bytes_per_vector(&self) -> usize {
        (self.bits_per_vector() as usize).div_ceil(8)
    }

    /// Bytes a batch of `vectors` vectors occupies: ⌈vectors · bits_per_vector / 8⌉.
    fn encoded_len(&self, vectors: usize) -> usize {
        (vectors * self.bits_per_vector() as usize).div_ceil(8)
    }

    /// Bits per value: `bits_per_vector / head_dim`, everything stored included.
    fn bits_per_value(&self) -> f64 {
        f64::from(self.bits_per_vector()) / self.head_dim() as f64
    }

    /// f32 scratch a single-vector call needs.
    fn scratch_len(&self) -> usize;

    /// Encodes one finite vector of `head_dim` values into `out` (`bytes_per_vector` bytes).
    ///
    /// # Panics
    /// May panic if the lengths are wrong or `x` is not finite; the batch entry points check
    /// both and return errors instead.
    fn encode_vector(&self, x: &[f32], out: &mut [u8], scratch: &mut [f32]);

    /// Decodes one vector. On corrupt bytes it returns the reason, never panics.
    ///
    /// # Errors
    /// A short static description of what is wrong with the bytes.
    fn decode_vector(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), &'static str>;

    /// The orthonormal rotation `R` the codec applies before quantising, or `None` when it
    /// quantises the values as given (the identity).
    ///
    /// Attention on compressed vectors uses it: `q·x̂ = (R·q)·(R·x̂)`, so a query rotated
    /// once can be dotted with [`VectorCodec::decode_rotated`] outputs, and a weighted sum
    /// of those is rotated back once with `R`'s inverse (`Fwht::inverse`).
    fn rotation(&self) -> Option<&Fwht> {
        None
    }

    /// Decodes one vector into the rotated domain: `R·x̂`, where `x̂` is what
    /// [`VectorCodec::decode_vector`] returns and `R` is [`VectorCodec::rotation`] (the
    /// identity when `None`), equal up to f32 rounding and saturated at ±`f32::MAX`.
    ///
    /// The default decodes and rotates forward again; codecs that rotate override it to
    /// skip both transforms.
    ///
    /// # Errors
    /// As [`VectorCodec::decode_vector`].
    fn decode_rotated(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), &'static str> {
        self.decode_vector(bytes, out, scratch)?;
        if let Some(rotation) = self.rotation() {
            rotation.forward_inplace(out);
        }
        Ok(())
    }

    /// Encodes finite vectors (`x.len()` a multiple of `head_dim`) back to back into `out`
    /// ([`VectorCodec::encoded_len`] bytes): the bytes [`encode_batch`] writes for them.
    ///
    /// The batch drivers pass a chunk of vectors per call, so that a codec can share work
    /// between the vectors of a chunk. The default encodes one vector at a time with
    /// [`VectorCodec::encode_vector`]; an override must write the same bytes.
    ///
    /// # Panics
    /// May panic if the lengths are wrong or a value is not finite; the batch entry points
    /// check both and return errors instead.
    fn encode_vectors(&self, x: &[f32], out: &mut [u8]) {
        let d = self.head_dim();
        let bits = self.bits_per_vector() as usize;
        let mut scratch = vec![0f32; self.scratch_len()];
        if bits.is_multiple_of(8) {
            // Whole bytes per vector: encode in place, no bit shifting.
            for (x, dst) in x.chunks_exact(d).zip(out.chunks_exact_mut(bits / 8)) {
                self.encode_vector(x, dst, &mut scratch);
            }
        } else {
            let mut one = vec![0u8; self.bytes_per_vector()];
            let mut w = BitWriter::new(out);
            for x in x.chunks_exact(d) {
                self.encode_vector(x, &mut one, &mut scratch);
                w.write_bits_of(&one, bits);
            }
        }
    }

    /// Decodes vectors written by [`VectorCodec::encode_vectors`] into `out` (a multiple of
    /// `head_dim` values; `bytes` is their [`VectorCodec::encoded_len`] bytes). On corrupt
    /// bytes it returns the reason, never panics.
    ///
    /// The default decodes one vector at a time with [`VectorCodec::decode_vector`]; an
    /// override must give the same values and the same errors.
    ///
    /// # Errors
    /// The position (in `out`) of the first vector whose bytes no encoder writes, and the
    /// reason [`VectorCodec::decode_vector`] gives for it.
    fn decode_vectors(&self, bytes: &[u8], out: &mut [f32]) -> Result<(), (usize, &'static str)> {
        let d = self.head_dim();
        let bits = self.bits_per_vector() as usize;
        let mut scratch = vec![0f32; self.scratch_len()];
        if bits.is_multiple_of(8) {
            // Whole bytes per vector: decode in place.
            for (i, (one, y)) in bytes
                .chunks_exact(bits / 8)
                .zip(out.chunks_exact_mut(d))
                .enumerate()
            {
                self.decode_vector(one, y, &mut scratch)
                    .map_err(|reason| (i, reason))?;
            }
        } else {
            let mut one = vec![0u8; self.bytes_per_vector()];
            for (i, y) in out.chunks_exact_mut(d).enumerate() {
                extract_bits(bytes, i * bits, bits, &mut one);
                self.decode_vector(&one, y, &mut scratch)
                    .map_err(|reason| (i, reason))?;
            }
        }
        Ok(())
    }

    /// Encodes a batch (`input.len()` a multiple of `head_dim`) into `out`
    /// ([`VectorCodec::encoded_len`] bytes), in parallel.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for wrong lengths; [`Error::NonFinite`] naming the first
    /// vector with a NaN or infinity, in which case `out` is left unspecified.
    fn encode(&self, input: Input<'_>, out: &mut [u8]) -> Result<(), Error> {
        encode_batch(self, input, out, Par::Rayon)
    }

    /// Decodes a batch written by [`VectorCodec::encode`], in parallel.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for wrong lengths; [`Error::CorruptPayload`] naming the
    /// first vector whose bytes no encoder writes.
    fn decode(&self, bytes: &[u8], out: Output<'_>) -> Result<(), Error> {
        decode_batch(self, bytes, out, Par::Rayon)
    }
}

/// Number of vectors in a buffer of `len` values, or a length error.
fn vector_count(len: usize, d: usize, what: &'static str) -> Result<usize, Error> {
    if !len.is_multiple_of(d) {
        return Err(Error::LengthMismatch {
            what,
            expected: len.next_multiple_of(d),
            actual: len,
        });
    }
    Ok(len / d)
}

/// Index of the first of the `d`-value vectors of `x` that holds a NaN or an infinity.
///
/// The all-finite case, the common one, costs one branch-free pass that the compiler
/// vectorises; only a batch that fails is searched vector by vector.
fn first_non_finite(x: &[f32], d: usize) -> Option<usize> {
    const EXPONENT: u32 = 0x7f80_0000;
    let non_finite = x.iter().fold(0u32, |count, v| {
        count + u32::from(v.to_bits() & EXPONENT == EXPONENT)
    });
    if non_finite == 0 {
        return None;
    }
    x.chunks_exact(d)
        .position(|v| !v.iter().all(|v| v.is_finite()))
}

/// [`VectorCodec::encode`] with an explicit [`Par`].
///
/// # Errors
/// As [`VectorCodec::encode`].
pub fn encode_batch<C: VectorCodec + ?Sized>(
    codec: &C,
    input: Input<'_>,
    out: &mut [u8],
    par: Par,
) -> Result<(), Error> {
    let d = codec.head_dim();
    let bits = codec.bits_per_vector() as usize;
    let n = vector_count(input.len(), d, "input")?;
    let expected = codec.encoded_len(n);
    if out.len() != expected {
        return Err(Error::LengthMismatch {
            what: "encoded output",
            expected,
            actual: out.len(),
        });
    }
    // Every codec writes at least one bit per vector, so chunks are never empty.
    let chunk_bytes = CHUNK * bits / 8;
    // `buffer` holds a chunk converted to f32 (f32 input is coded where it lies).
    let work = |buffer: &mut Vec<f32>, (chunk, bytes): (usize, &mut [u8])| {
        let first = chunk * CHUNK;
        let values = first * d..n.min(first + CHUNK) * d;
        let x = match input {
            Input::F32(v) => &v[values],
            _ => {
                buffer.resize(values.len(), 0.0);
                input.load(first, d, buffer);
                &buffer[..]
            }
        };
        if let Some(i) = first_non_finite(x, d) {
            return Err(Error::NonFinite { vector: first + i });
        }
        codec.encode_vectors(x, bytes);
        Ok(())
    };
    match par {
        Par::Seq => {
            let mut buffer = Vec::new();
            out.chunks_mut(chunk_bytes)
                .enumerate()
                .try_for_each(|item| work(&mut buffer, item))
        }
        Par::Rayon => {
            let result: Vec<Result<(), Error>> = out
                .par_chunks_mut(chunk_bytes)
                .enumerate()
                .map_init(Vec::new, work)
                .collect();
            // Report the first failing vector whatever the thread schedule.
            result.into_iter().collect()
        }
    }
}

/// [`VectorCodec::decode`] with an explicit [`Par`].
///
/// # Errors
/// As [`VectorCodec::decode`].
pub fn decode_batch<C: VectorCodec + ?Sized>(
    codec: &C,
    bytes: &[u8],
    mut out: Output<'_>,
    par: Par,
) -> Result<(), Error> {
    let d = codec.head_dim();
    let bits = codec.bits_per_vector() as usize;
    let n = vector_count(out.len(), d, "decoded output")?;
    let expected = codec.encoded_len(n);
    if bytes.len() != expected {
        return Err(Error::LengthMismatch {
            what: "encoded input",
            expected,
            actual: bytes.len(),
        });
    }
    // Every codec writes at least one bit per vector, so chunks are never empty.
    let chunk_bytes = CHUNK * bits / 8;
    let decode = |chunk: usize, src: &[u8], y: &mut [f32]| {
        codec
            .decode_vectors(src, y)
            .map_err(|(i, reason)| Error::CorruptPayload {
                vector: chunk * CHUNK + i,
                reason,
            })
    };
    // Each chunk is decoded as f32 into `buffer` and converted in one slice conversion
    // (f32 output is decoded where it goes).
    macro_rules! drive {
        ($dst:expr, $body:expr) => {{
            let body = $body;
            match par {
                Par::Seq => {
                    let mut buffer = Vec::new();
                    bytes
                        .chunks(chunk_bytes)
                        .zip($dst.chunks_mut(CHUNK * d))
                        .enumerate()
                        .try_for_each(|item| body(&mut buffer, item))
                }
                Par::Rayon => {
                    let result: Vec<Result<(), Error>> = bytes
                        .par_chunks(chunk_bytes)
                        .zip($dst.par_chunks_mut(CHUNK * d))
                        .enumerate()
                        .map_init(Vec::new, body)
                        .collect();
                    // Report the first corrupt vector whatever the thread schedule.
                    result.into_iter().collect()
                }
            }
        }};
    }
    macro_rules! converting {
        ($dst:expr) => {
            drive!(
                $dst,
                |buffer: &mut Vec<f32>, (chunk, (src, dst)): (usize, (&[u8], &mut [_]))| {
                    buffer.resize(dst.len(), 0.0);
                    decode(chunk, src, buffer)?;
                    HalfSlice::from_f32(buffer, dst);
                    Ok(())
                }
            )
        };
    }
    match &mut out {
        Output::F32(dst) => drive!(
            dst,
            |_: &mut Vec<f32>, (chunk, (src, dst)): (usize, (&[u8], &mut [f32]))| {
                decode(chunk, src, dst)
            }
        ),
        Output::F16(dst) => converting!(dst),
        Output::Bf16(dst) => converting!(dst),
    }
}

/// Sum of squares in the fixed order every backend uses: eight interleaved partial sums
/// (lane `j` adds the values at `i ≡ j mod 8` in increasing `i`), then
/// `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`. Lengths need not be multiples of 8.
pub fn sum_of_squares(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    for (i, &v) in x.iter().enumerate() {
        lanes[i % 8] += v * v;
    }
    ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
        + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
}

/// A power of two that brings `max |x|` into [2^-60, 2^60] (1 if it already is, or if `x` is
/// zero). Multiplying by it is exact, so codecs apply it before sums of squares and the
/// unnormalised Hadamard butterflies, which would overflow for values near `f32::MAX`.
pub fn safe_prescale(x: &[f32]) -> f32 {
    let m = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if m > 2f32.powi(60) {
        2f32.powi(-70)
    } else if m > 0.0 && m < 2f32.powi(-60) {
        2f32.powi(70)
    } else {
        1.0
    }
}

/// The Euclidean norm, in the fixed order of [`sum_of_squares`], without overflow or
/// underflow for any finite input; saturates at `f32::MAX` (a norm above it has no f32).
pub fn norm(x: &[f32]) -> f32 {
    let k = safe_prescale(x);
    if k == 1.0 {
        return sum_of_squares(x).sqrt();
    }
    let mut sum = [0f32; 8];
    for (i, &v) in x.iter().enumerate() {
        let w = v * k;
        sum[i % 8] += w * w;
    }
    let s = ((sum[0] + sum[4]) + (sum[2] + sum[6])) + ((sum[1] + sum[5]) + (sum[3] + sum[7]));
    (s.sqrt() / k).min(f32::MAX)
}

#[cfg(test)]
mod tests {
    use half::bf16;

    use super::HalfSlice;

    #[test]
    fn bf16_slice_conversions_match_half_bit_for_bit() {
        let all: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
        let mut wide = vec![0f32; all.len()];
        HalfSlice::to_f32(&all, &mut wide);
        for (h, w) in all.iter().zip(&wide) {
            assert_eq!(w.to_bits(), h.to_f32().to_bits(), "{:#06x}", h.to_bits());
        }
        // Every upper half with the low halves that decide rounding: zero, the smallest,
        // just below, at and just above one half, the largest.
        let values: Vec<f32> = (0..=u32::from(u16::MAX))
            .flat_map(|hi| {
                [0, 1, 0x7fff, 0x8000, 0x8001, 0xffff].map(|lo| f32::from_bits(hi << 16 | lo))
            })
            .collect();
        let mut narrow = vec![bf16::ZERO; values.len()];
        HalfSlice::from_f32(&values, &mut narrow);
        for (v, n) in values.iter().zip(&narrow) {
            assert_eq!(
                n.to_bits(),
                bf16::from_f32(*v).to_bits(),
                "{:#010x}",
                v.to_bits()
            );
        }
    }
}
