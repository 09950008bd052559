//! The self-describing stream: a 64-byte versioned header followed by a batch's payload.
//!
//! ```text
//! offset size field
//!  0      4   magic "KVCB"
//!  4      2   format version (1)
//!  6      2   codec id            ┐ CodecSpec::wire
//!  8     16   codec params u32×4  ┘
//! 24      4   head_dim
//! 28      1   dtype of the source values (0 f32, 1 f16, 2 bf16)
//! 29      3   reserved, zero
//! 32      8   rotation seed
//! 40      8   number of vectors
//! 48      8   payload length in bytes (= ⌈vectors · bits_per_vector / 8⌉)
//! 56      4   CRC-32 (IEEE) of bytes 0..56 and of the payload
//! 60      4   reserved, zero
//! ```
//! All integers little-endian. See FORMAT.md for the payloads.

use serde::{Deserialize, Serialize};

use crate::codec::{Input, Output};
use crate::config::CodecConfig;
use crate::error::Error;
use crate::spec::CodecSpec;

/// The stream's magic bytes.
pub const MAGIC: [u8; 4] = *b"KVCB";
/// The format version this library writes (and the newest it reads).
pub const VERSION: u16 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 64;

/// The dtype the encoded values came in (decoders may return any dtype).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dtype {
    /// f32.
    F32,
    /// IEEE f16.
    F16,
    /// bfloat16.
    Bf16,
}

impl Dtype {
    /// The one-byte code of the stream and cache-file headers.
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Bf16 => 2,
        }
    }

    /// The dtype of a header code, if it names one.
    pub(crate) fn from_code(code: u8) -> Option<Self> {
        [Self::F32, Self::F16, Self::Bf16]
            .into_iter()
            .find(|d| d.code() == code)
    }
}

/// A parsed stream header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The codec configuration (spec, head_dim, seed).
    pub config: CodecConfig,
    /// The dtype of the source values.
    pub dtype: Dtype,
    /// Number of vectors in the payload.
    pub vectors: u64,
}

/// The byte table of CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320): entry `b` is
/// eight bitwise steps of the register `b`, computed at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut b = 0;
    while b < 256 {
        let mut crc = b as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[b] = crc;
        b += 1;
    }
    table
};

/// Feeds `bytes` into a CRC-32 (IEEE) register (start from `!0`, finish with `!`): the
/// checksum of the stream and cache-file headers and sections (FORMAT.md), public for tools
/// that write or repair those files. A byte at a time through a table: cache files hold
/// megabytes, where the bitwise form is slow.
pub fn crc32_update(crc: u32, bytes: &[u8]) -> u32 {
    bytes.iter().fold(crc, |crc, &b| {
        (crc >> 8) ^ CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize]
    })
}

fn crc32(header: &[u8], payload: &[u8]) -> u32 {
    !crc32_update(crc32_update(!0, header), payload)
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Encodes a batch into a stream: header and payload.
///
/// # Errors
/// As [`crate::VectorCodec::encode`], and codec construction errors.
pub fn encode_stream(config: &CodecConfig, input: Input<'_>) -> Result<Vec<u8>, Error> {
    let codec = config.build()?;
    let (len, dtype) = (input.len(), input.dtype());
    let vectors = len / config.head_dim;
    let mut out = vec![0u8; HEADER_LEN + codec.encoded_len(vectors)];
    codec.encode(input, &mut out[HEADER_LEN..])?;
    let (id, params) = config.spec.wire();
    let payload_len = (out.len() - HEADER_LEN) as u64;
    let h = &mut out[..HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[6..8].copy_from_slice(&id.to_le_bytes());
    for (i, p) in params.iter().enumerate() {
        h[8 + 4 * i..12 + 4 * i].copy_from_slice(&p.to_le_bytes());
    }
    h[24..28].copy_from_slice(&(config.head_dim as u32).to_le_bytes());
    h[28] = dtype.code();
    h[32..40].copy_from_slice(&config.seed.to_le_bytes());
    h[40..48].copy_from_slice(&(vectors as u64).to_le_bytes());
    h[48..56].copy_from_slice(&payload_len.to_le_bytes());
    let crc = crc32(&out[..56], &out[HEADER_LEN..]);
    out[56..60].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Parses and checks a stream's header (not its checksum, which needs the payload).
///
/// # Errors
/// [`Error::Truncated`], [`Error::BadMagic`], [`Error::UnsupportedVersion`],
/// [`Error::UnknownCodecId`], [`Error::CorruptHeader`].
pub fn read_header(bytes: &[u8]) -> Result<Header, Error> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::Truncated {
            needed: HEADER_LEN,
            available: bytes.len(),
        });
    }
    if bytes[0..4] != MAGIC {
        return Err(Error::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version == 0 || version > VERSION {
        return Err(Error::UnsupportedVersion {
            version,
            supported: VERSION,
        });
    }
    let id = u16::from_le_bytes([bytes[6], bytes[7]]);
    let params = std::array::from_fn(|i| read_u32(bytes, 8 + 4 * i));
    let spec = CodecSpec::from_wire(id, params)?;
    let head_dim = read_u32(bytes, 24) as usize;
    let dtype = Dtype::from_code(bytes[28]).ok_or(Error::CorruptHeader { field: "dtype" })?;
    if bytes[29..32] != [0; 3] || bytes[60..64] != [0; 4] {
        return Err(Error::CorruptHeader {
            field: "reserved bytes",
        });
    }
    let config = CodecConfig {
        spec,
        head_dim,
        seed: read_u64(bytes, 32),
    };
    Ok(Header {
        config,
        dtype,
        vectors: read_u64(bytes, 40),
    })
}

/// Decodes a whole stream to f32, checking its header, lengths and checksum first.
///
/// # Errors
/// The header errors of [`read_header`]; [`Error::UnsupportedHeadDim`] or parameter errors
/// if the header names a configuration no codec accepts; [`Error::Truncated`] or
/// [`Error::CorruptHeader`] for a payload of the wrong length or checksum;
/// [`Error::CorruptPayload`] for bytes no encoder writes.
pub fn decode_stream(bytes: &[u8]) -> Result<(Header, Vec<f32>), Error> {
    let header = read_header(bytes)?;
    let codec = header.config.build()?;
    let payload = &bytes[HEADER_LEN..];
    let declared = read_u64(bytes, 48);
    let vectors = usize::try_from(header.vectors).map_err(|_| Error::CorruptHeader {
        field: "vector count",
    })?;
    let expected = vectors
        .checked_mul(codec.bits_per_vector() as usize)
        .map(|bits| bits.div_ceil(8))
        .ok_or(Error::CorruptHeader {
            field: "vector count",
        })?;
    if declared != expected as u64 {
        return Err(Error::CorruptHeader {
            field: "payload length",
        });
    }
    if payload.len() != expected {
        return Err(Error::Truncated {
            needed: HEADER_LEN + expected,
            available: bytes.len(),
        });
    }
    if crc32(&bytes[..56], payload) != read_u32(bytes, 56) {
        return Err(Error::CorruptHeader { field: "checksum" });
    }
    let mut out = vec![0f32; vectors * header.config.head_dim];
    codec.decode(payload, Output::F32(&mut out))?;
    Ok((header, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_known_answer() {
        assert_eq!(crc32(b"123456789", b""), 0xCBF4_3926);
        assert_eq!(crc32(b"1234", b"56789"), 0xCBF4_3926);
    }
}
