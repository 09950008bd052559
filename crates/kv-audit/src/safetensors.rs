//! A small reader and writer of the safetensors format: an 8-byte little-endian header
//! length, a JSON header naming each tensor's dtype, shape and byte range, then the raw
//! little-endian bytes.
//!
//! Every structural problem (a short file, a header that is not JSON, a byte range that does
//! not match its dtype and shape) is an [`Error`] naming the file and the tensor; nothing
//! here panics on a malformed file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Largest header accepted, as in the reference implementation: a bound on what a corrupt
/// length field can make us allocate.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Element types of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dtype {
    /// Boolean, one byte.
    Bool,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// 8-bit float, 4 exponent bits.
    F8E4M3,
    /// 8-bit float, 5 exponent bits.
    F8E5M2,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// IEEE single precision.
    F32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
    /// IEEE double precision.
    F64,
}

impl Dtype {
    const ALL: [Dtype; 15] = [
        Self::Bool,
        Self::U8,
        Self::I8,
        Self::F8E4M3,
        Self::F8E5M2,
        Self::I16,
        Self::U16,
        Self::F16,
        Self::BF16,
        Self::I32,
        Self::U32,
        Self::F32,
        Self::I64,
        Self::U64,
        Self::F64,
    ];

    /// The name the header uses (`"F16"`, `"BF16"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::U8 => "U8",
            Self::I8 => "I8",
            Self::F8E4M3 => "F8_E4M3",
            Self::F8E5M2 => "F8_E5M2",
            Self::I16 => "I16",
            Self::U16 => "U16",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::I32 => "I32",
            Self::U32 => "U32",
            Self::F32 => "F32",
            Self::I64 => "I64",
            Self::U64 => "U64",
            Self::F64 => "F64",
        }
    }

    /// The dtype a header name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Bool | Self::U8 | Self::I8 | Self::F8E4M3 | Self::F8E5M2 => 1,
            Self::I16 | Self::U16 | Self::F16 | Self::BF16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::I64 | Self::U64 | Self::F64 => 8,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor's header entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Byte range within the data section (checked against the dtype, shape and file).
    pub range: std::ops::Range<usize>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A whole safetensors file held in memory.
#[derive(Clone, Debug)]
pub struct SafeTensors {
    path: PathBuf,
    metadata: BTreeMap<String, String>,
    tensors: Vec<TensorInfo>,
    /// The data section (everything after the header).
    data: Vec<u8>,
}

impl SafeTensors {
    /// Reads and checks a file.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read; the bad-data variants for a malformed file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            action: "cannot read",
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, bytes)
    }

    /// Checks the bytes of a file; `path` only names it in errors.
    ///
    /// # Errors
    /// The bad-data variants of [`Error`] for a malformed file.
    pub fn parse(path: impl AsRef<Path>, mut bytes: Vec<u8>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let available = bytes.len() as u64;
        let truncated = |needed: u64| Error::Truncated {
            path: path.clone(),
            needed,
            available,
        };
        let len_bytes: [u8; 8] = bytes
            .get(..8)
            .ok_or_else(|| truncated(8))?
            .try_into()
            .expect("8 bytes");
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_LEN || 8 + header_len > available {
            return Err(truncated(8u64.saturating_add(header_len)));
        }
        let header_end = 8 + header_len as usize;
        let header: Map<String, Value> =
            serde_json::from_slice(&bytes[8..header_end]).map_err(|source| Error::HeaderJson {
                path: path.clone(),
                source,
            })?;
        let data_len = bytes.len() - header_end;

        let bad = |tensor: &str, field| Error::BadTensorEntry {
            path: path.clone(),
            tensor: tensor.to_owned(),
            field,
        };
        let mut metadata = BTreeMap::new();
        let mut tensors = Vec::new();
        for (name, entry) in &header {
            if name == "__metadata__" {
                let map = entry.as_object().ok_or_else(|| bad(name, "__metadata__"))?;
                for (k, v) in map {
                    let v = v.as_str().ok_or_else(|| bad(name, "__metadata__"))?;
                    metadata.insert(k.clone(), v.to_owned());
                }
                continue;
            }
            let dtype = entry
                .get("dtype")
                .and_then(Value::as_str)
                .and_then(Dtype::from_name)
                .ok_or_else(|| bad(name, "dtype"))?;
            let shape = entry
                .get("shape")
                .and_then(Value::as_array)
                .and_then(|dims| {
                    dims.iter()
                        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                        .collect::<Option<Vec<usize>>>()
                })
                .ok_or_else(|| bad(name, "shape"))?;
            let offsets: Vec<u64> = entry
                .get("data_offsets")
                .and_then(Value::as_array)
                .and_then(|o| o.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
                .filter(|o| o.len() == 2)
                .ok_or_else(|| bad(name, "data_offsets"))?;
            let (start, end) = (offsets[0], offsets[1]);
            let expected = checked_bytes(&shape, dtype);
            let fits = start <= end && end <= data_len as u64;
            if !fits || expected != Some(end - start) {
                return Err(Error::TensorBounds {
                    path: path.clone(),
                    tensor: name.clone(),
                    start,
                    end,
                    data_len: data_len as u64,
                    expected: expected.unwrap_or(u64::MAX),
                });
            }
            tensors.push(TensorInfo {
                name: name.clone(),
                dtype,
                shape,
                range: start as usize..end as usize,
            });
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        bytes.drain(..header_end);
        Ok(Self {
            path,
            metadata,
            tensors,
            data: bytes,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `__metadata__` strings.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The tensors, sorted by name.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's raw little-endian bytes.
    pub fn bytes(&self, tensor: &TensorInfo) -> &[u8] {
        &self.data[tensor.range.clone()]
    }

    /// A floating-point tensor's values as f32 (exact for F16, BF16 and F32).
    ///
    /// # Errors
    /// [`Error::UnsupportedDtype`] for other dtypes.
    pub fn to_f32(&self, tensor: &TensorInfo) -> Result<Vec<f32>> {
        let b = self.bytes(tensor);
        Ok(match tensor.dtype {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::UnsupportedDtype {
                    tensor: tensor.name.clone(),
                    dtype: other.name().to_owned(),
                });
            }
        })
    }
}

/// Bytes a tensor of this shape and dtype occupies, or `None` on overflow.
fn checked_bytes(shape: &[usize], dtype: Dtype) -> Option<u64> {
    shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
}

/// A tensor to write: name, dtype, shape and its raw little-endian bytes.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// Its name.
    pub name: &'a str,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost first.
    pub shape: &'a [usize],
    /// The bytes (`product(shape) · dtype.size()` of them).
    pub data: &'a [u8],
}

/// Serialises tensors (laid out in the order given) and metadata into a safetensors file
/// image. The header is padded with spaces to a multiple of 8 bytes, as the reference writer
/// does, so the data section stays aligned.
///
/// # Panics
/// If a view's byte length does not match its dtype and shape (a programmer error).
pub fn serialize(metadata: &BTreeMap<String, String>, tensors: &[TensorView<'_>]) -> Vec<u8> {
    let mut header = Map::new();
    if !metadata.is_empty() {
        let meta = metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".to_owned(), Value::Object(meta));
    }
    let mut offset = 0usize;
    for t in tensors {
        assert_eq!(
            Some(t.data.len() as u64),
            checked_bytes(t.shape, t.dtype),
            "tensor {} has the wrong byte length for its shape",
            t.name
        );
        let end = offset + t.data.len();
        let entry = serde_json::json!({ "dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, end] });
        header.insert(t.name.to_owned(), entry);
        offset = end;
    }
    let mut text = serde_json::to_vec(&Value::Object(header))
        .expect("a JSON map of strings and numbers serialises");
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    for t in tensors {
        out.extend_from_slice(t.data);
    }
    out
}

/// [`serialize`] into a file.
///
/// # Errors
/// [`Error::Io`] if the file cannot be written.
pub fn write(
    path: impl AsRef<Path>,
    metadata: &BTreeMap<String, String>,
    tensors: &[TensorView<'_>],
) -> Result<()> {
    let path = path.as_ref();
    std::fs::write(path, serialize(metadata, tensors)).map_err(|source| Error::Io {
        action: "cannot write",
        path: path.to_owned(),
        source,
    })
}
