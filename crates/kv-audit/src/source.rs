//! Sources of K/V vectors for a sweep: the `k.*` / `v.*` tensors of a safetensors file, or
//! seeded iid Gaussian vectors. Either way the vectors sit back to back in one f32 buffer, so
//! a codec encodes them all in one call (its bytes do not depend on the batching), and
//! named segments of that buffer say which vectors are which tensor.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gaussian::gaussian_vectors;
use crate::safetensors::{Dtype, SafeTensors};

/// The compact real sample committed with the crate: the first 128 tokens of every layer's
/// K and V from `smollm2-pp512` (see `data/README.md`).
pub fn default_sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("smollm2-pp512-t128.safetensors")
}

/// The most values a Gaussian source may hold (4 GiB of f32, before the reconstruction).
pub const MAX_GAUSSIAN_VALUES: usize = 1 << 30;

/// Seed of the Gaussian source when `--seed` is not given.
pub const DEFAULT_GAUSSIAN_SEED: u64 = 0;

/// One named tensor's vectors within [`KvSource::values`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The tensor's name (`k.07`), or `gaussian`.
    pub name: String,
    /// Its vectors, as indices into the buffer (vector `i` is `values[i·d..(i+1)·d]`).
    pub vectors: Range<usize>,
    /// KV heads in the tensor; its vectors are head after head, each `tokens()` long.
    pub heads: usize,
}

impl Segment {
    /// Tokens per head.
    pub fn tokens(&self) -> usize {
        self.vectors.len() / self.heads
    }

    /// The layer key shared by a layer's K and V tensors: the name after `k.` or `v.`
    /// (`07` for `k.07`), or the whole name when it has neither prefix.
    pub fn layer_key(&self) -> &str {
        self.name
            .strip_prefix("k.")
            .or_else(|| self.name.strip_prefix("v."))
            .unwrap_or(&self.name)
    }
}

/// What the vectors are, for the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `"safetensors"` or `"gaussian"`.
    pub kind: String,
    /// The file read, for a safetensors source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Number of Gaussian vectors asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gaussian_vectors: Option<usize>,
    /// Seed of the Gaussian source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Values per vector.
    pub head_dim: usize,
    /// Distinct vectors encoded (K and V together; a Gaussian source's vectors count once).
    pub vectors: usize,
    /// Names of the tensors counted as K, in the order of the per-layer arrays.
    pub k_tensors: Vec<String>,
    /// Names of the tensors counted as V, in the order of the per-layer arrays.
    pub v_tensors: Vec<String>,
}

/// Vectors to sweep over, with the segments that are K and those that are V.
#[derive(Clone, Debug)]
pub struct KvSource {
    /// Description for the report.
    pub info: SourceInfo,
    /// Values per vector.
    pub head_dim: usize,
    /// All vectors, back to back.
    pub values: Vec<f32>,
    /// Segments counted as K (one per layer for a model's cache).
    pub k: Vec<Segment>,
    /// Segments counted as V.
    pub v: Vec<Segment>,
}

impl KvSource {
    /// Number of vectors in [`KvSource::values`].
    pub fn vectors(&self) -> usize {
        self.values.len() / self.head_dim
    }

    /// The values of a segment.
    pub fn segment_values(&self, segment: &Segment) -> &[f32] {
        &self.values[segment.vectors.start * self.head_dim..segment.vectors.end * self.head_dim]
    }

    /// Every `k.*` and `v.*` tensor of a safetensors file, each `[kv_heads, tokens,
    /// head_dim]` of F16, BF16 or F32, flattened to vectors of head_dim. Other tensors are
    /// ignored.
    ///
    /// # Errors
    /// I/O and bad-data errors of the file; [`Error::NoKvTensors`], [`Error::BadShape`],
    /// [`Error::HeadDimMismatch`], [`Error::UnsupportedDtype`], [`Error::NonFinite`].
    pub fn from_safetensors(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = SafeTensors::read(path)?;
        let mut values = Vec::new();
        let (mut k, mut v) = (Vec::new(), Vec::new());
        let mut head_dim = None;
        for t in file.tensors() {
            let list = if t.name.starts_with("k.") {
                &mut k
            } else if t.name.starts_with("v.") {
                &mut v
            } else {
                continue;
            };
            if !matches!(t.dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32) {
                return Err(Error::UnsupportedDtype {
                    tensor: t.name.clone(),
                    dtype: t.dtype.name().to_owned(),
                });
            }
            let &[heads, _, d] = t.shape.as_slice() else {
                return Err(Error::BadShape {
                    tensor: t.name.clone(),
                    shape: t.shape.clone(),
                });
            };
            if d == 0 || heads == 0 {
                return Err(Error::BadShape {
                    tensor: t.name.clone(),
                    shape: t.shape.clone(),
                });
            }
            let expected = *head_dim.get_or_insert(d);
            if d != expected {
                return Err(Error::HeadDimMismatch {
                    tensor: t.name.clone(),
                    expected,
                    actual: d,
                });
            }
            let x = file.to_f32(t)?;
            if !x.iter().all(|a| a.is_finite()) {
                return Err(Error::NonFinite {
                    tensor: t.name.clone(),
                });
            }
            let start = values.len() / d;
            values.extend_from_slice(&x);
            list.push(Segment {
                name: t.name.clone(),
                vectors: start..values.len() / d,
                heads,
            });
        }
        let head_dim = head_dim.ok_or_else(|| Error::NoKvTensors {
            path: path.to_owned(),
        })?;
        let info = SourceInfo {
            kind: "safetensors".to_owned(),
            path: Some(path.display().to_string()),
            gaussian_vectors: None,
            seed: None,
            head_dim,
            vectors: values.len() / head_dim,
            k_tensors: k.iter().map(|s: &Segment| s.name.clone()).collect(),
            v_tensors: v.iter().map(|s: &Segment| s.name.clone()).collect(),
        };
        Ok(Self {
            info,
            head_dim,
            values,
            k,
            v,
        })
    }

    /// `vectors` iid N(0, 1) vectors of `head_dim` values from `seed`, counted both as K and
    /// as V (encoded once; the K and V metrics are then equal).
    ///
    /// # Errors
    /// [`Error::SourceTooLarge`] beyond [`MAX_GAUSSIAN_VALUES`] values.
    ///
    /// # Panics
    /// If `vectors` or `head_dim` is zero (the command line rejects both).
    pub fn gaussian(vectors: usize, head_dim: usize, seed: u64) -> Result<Self> {
        assert!(
            vectors > 0 && head_dim > 0,
            "a Gaussian source needs vectors and values"
        );
        if vectors
            .checked_mul(head_dim)
            .is_none_or(|n| n > MAX_GAUSSIAN_VALUES)
        {
            return Err(Error::SourceTooLarge {
                vectors,
                head_dim,
                max: MAX_GAUSSIAN_VALUES,
            });
        }
        let segment = Segment {
            name: "gaussian".to_owned(),
            vectors: 0..vectors,
            heads: 1,
        };
        let info = SourceInfo {
            kind: "gaussian".to_owned(),
            path: None,
            gaussian_vectors: Some(vectors),
            seed: Some(seed),
            head_dim,
            vectors,
            k_tensors: vec![segment.name.clone()],
            v_tensors: vec![segment.name.clone()],
        };
        let values = gaussian_vectors(vectors, head_dim, seed);
        Ok(Self {
            info,
            head_dim,
            values,
            k: vec![segment.clone()],
            v: vec![segment],
        })
    }
}
