//! The codec trait and the batch driver shared by every codec: input conversion, checks,
//! and rayon over vectors with per-thread scratch.

use core::fmt;

use hadamard::Fwht;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use crate::bits::{BitReader, BitWriter};
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

    /// Copies vector `i` (of `d` values) into `out` as f32.
    pub(crate) fn load(&self, i: usize, d: usize, out: &mut [f32]) {
        let r = i * d..(i + 1) * d;
        match self {
            Self::F32(v) => out.copy_from_slice(&v[r]),
            // half's slice conversions round exactly like the scalar ones, with SIMD where the
            // CPU has it.
            Self::F16(v) => v[r].convert_to_f32_slice(out),
            Self::Bf16(v) => v[r].convert_to_f32_slice(out),
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
            Self::F16(v) => v[r].convert_from_f32_slice(y),
            Self::Bf16(v) => v[r].convert_from_f32_slice(y),
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

/// Vectors handed to one rayon task: large enough to amortise the scratch allocation, and a
/// multiple of 8 so that every task's output starts on a byte boundary.
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
    let chunk_bytes = (CHUNK * bits / 8).max(1);
    let work = |(chunk, bytes): (usize, &mut [u8])| -> Result<(), Error> {
        let mut x = vec![0f32; d];
        let mut scratch = vec![0f32; codec.scratch_len()];
        let first = chunk * CHUNK;
        let vectors = first..n.min(first + CHUNK);
        let check = |i: usize, x: &[f32]| {
            if x.iter().all(|v| v.is_finite()) {
                Ok(())
            } else {
                Err(Error::NonFinite { vector: i })
            }
        };
        if bits.is_multiple_of(8) {
            // Whole bytes per vector: encode in place, no bit shifting.
            for (i, dst) in vectors.zip(bytes.chunks_exact_mut(bits / 8)) {
                input.load(i, d, &mut x);
                check(i, &x)?;
                codec.encode_vector(&x, dst, &mut scratch);
            }
        } else {
            let mut one = vec![0u8; codec.bytes_per_vector()];
            let mut w = BitWriter::new(bytes);
            for i in vectors {
                input.load(i, d, &mut x);
                check(i, &x)?;
                codec.encode_vector(&x, &mut one, &mut scratch);
                w.write_bits_of(&one, bits);
            }
        }
        Ok(())
    };
    let result: Vec<Result<(), Error>> = match par {
        Par::Seq => out.chunks_mut(chunk_bytes).enumerate().map(work).collect(),
        Par::Rayon => out
            .par_chunks_mut(chunk_bytes)
            .enumerate()
            .map(work)
            .collect(),
    };
    // Report the first failing vector whatever the thread schedule.
    result.into_iter().collect()
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
    let chunk_bytes = (CHUNK * bits / 8).max(1);
    let run =
        |chunk: usize, src: &[u8], store: &mut dyn FnMut(usize, &[f32])| -> Result<(), Error> {
            let mut y = vec![0f32; d];
            let mut scratch = vec![0f32; codec.scratch_len()];
            let first = chunk * CHUNK;
            let vectors = first..n.min(first + CHUNK);
            let mut decode_one = |i: usize, one: &[u8]| {
                codec
                    .decode_vector(one, &mut y, &mut scratch)
                    .map_err(|reason| Error::CorruptPayload { vector: i, reason })?;
                store(i - first, &y);
                Ok::<(), Error>(())
            };
            if bits.is_multiple_of(8) {
                // Whole bytes per vector: decode in place.
                for (i, one) in vectors.zip(src.chunks_exact(bits / 8)) {
                    decode_one(i, one)?;
                }
            } else {
                let mut one = vec![0u8; codec.bytes_per_vector()];
                let mut r = BitReader::new(src);
                for i in vectors {
                    r.read_bits_into(&mut one, bits)?;
                    decode_one(i, &one)?;
                }
            }
            Ok(())
        };
    macro_rules! drive {
        ($dst:expr, $conv:expr) => {{
            let body = |(chunk, (src, dst)): (usize, (&[u8], &mut [_]))| {
                run(chunk, src, &mut |j, y: &[f32]| {
                    $conv(&mut dst[j * d..(j + 1) * d], y)
                })
            };
            let result: Vec<Result<(), Error>> = match par {
                Par::Seq => bytes
                    .chunks(chunk_bytes)
                    .zip($dst.chunks_mut(CHUNK * d))
                    .enumerate()
                    .map(body)
                    .collect(),
                Par::Rayon => bytes
                    .par_chunks(chunk_bytes)
                    .zip($dst.par_chunks_mut(CHUNK * d))
                    .enumerate()
                    .map(body)
                    .collect(),
            };
            result.into_iter().collect()
        }};
    }
    match &mut out {
        Output::F32(dst) => drive!(dst, |o: &mut [f32], y: &[f32]| o.copy_from_slice(y)),
        Output::F16(dst) => drive!(dst, |o: &mut [f16], y| o.convert_from_f32_slice(y)),
        Output::Bf16(dst) => drive!(dst, |o: &mut [bf16], y| o.convert_from_f32_slice(y)),
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
