//! `kvc slice`: a smaller safetensors file with the first tokens of every K/V tensor, which
//! is how the crate's committed sample is made (see `data/README.md`).

use std::path::Path;

use crate::error::{Error, Result};
use crate::safetensors::{self, SafeTensors, TensorView};

/// What [`slice_file`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceSummary {
    /// K/V tensors written.
    pub tensors: usize,
    /// Bytes of the file written.
    pub bytes: usize,
}

/// The bytes of a safetensors file holding, for every `k.*` and `v.*` tensor of `file`
/// (`[kv_heads, tokens, head_dim]`, any dtype), its first `tokens` tokens under the same
/// name and dtype. Other tensors are left out. The metadata is copied, with `n_tokens` (if
/// present) set to `tokens` and a `sliced` entry saying what was done.
///
/// # Errors
/// [`Error::BadShape`] for a K/V tensor that is not 3-D, [`Error::TooFewTokens`] if one is
/// shorter than `tokens`, [`Error::NoKvTensors`] if there is none.
pub fn slice_tokens(file: &SafeTensors, tokens: usize) -> Result<Vec<u8>> {
    let mut parts = Vec::new();
    let mut original_tokens = None;
    for t in file
        .tensors()
        .iter()
        .filter(|t| t.name.starts_with("k.") || t.name.starts_with("v."))
    {
        let &[heads, available, d] = t.shape.as_slice() else {
            return Err(Error::BadShape {
                tensor: t.name.clone(),
                shape: t.shape.clone(),
            });
        };
        if available < tokens {
            return Err(Error::TooFewTokens {
                tensor: t.name.clone(),
                requested: tokens,
                available,
            });
        }
        original_tokens.get_or_insert(available);
        let row = d * t.dtype.size();
        let src = file.bytes(t);
        let mut data = Vec::with_capacity(heads * tokens * row);
        for h in 0..heads {
            let start = h * available * row;
            data.extend_from_slice(&src[start..start + tokens * row]);
        }
        parts.push((t.name.as_str(), t.dtype, [heads, tokens, d], data));
    }
    let Some(original_tokens) = original_tokens else {
        return Err(Error::NoKvTensors {
            path: file.path().to_owned(),
        });
    };
    let mut metadata = file.metadata().clone();
    let source_name = file
        .path()
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    if let Some(n) = metadata.get_mut("n_tokens") {
        *n = tokens.to_string();
    }
    let sliced = format!("first {tokens} of {original_tokens} tokens of {source_name} (kvc slice)");
    metadata.insert("sliced".to_owned(), sliced);
    let views: Vec<TensorView<'_>> = parts
        .iter()
        .map(|(name, dtype, shape, data)| TensorView {
            name,
            dtype: *dtype,
            shape,
            data,
        })
        .collect();
    Ok(safetensors::serialize(&metadata, &views))
}

/// Reads `input`, keeps the first `tokens` tokens of every K/V tensor ([`slice_tokens`]) and
/// writes the result to `out`.
///
/// # Errors
/// As [`SafeTensors::read`] and [`slice_tokens`]; [`Error::Io`] if `out` cannot be written.
pub fn slice_file(
    input: impl AsRef<Path>,
    tokens: usize,
    out: impl AsRef<Path>,
) -> Result<SliceSummary> {
    let file = SafeTensors::read(input)?;
    let bytes = slice_tokens(&file, tokens)?;
    let out = out.as_ref();
    std::fs::write(out, &bytes).map_err(|source| Error::Io {
        action: "cannot write",
        path: out.to_owned(),
        source,
    })?;
    let tensors = file
        .tensors()
        .iter()
        .filter(|t| t.name.starts_with("k.") || t.name.starts_with("v."))
        .count();
    Ok(SliceSummary {
        tensors,
        bytes: bytes.len(),
    })
}
