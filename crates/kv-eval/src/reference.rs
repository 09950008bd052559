//! Verification of the runner against the shared reference data: the token ids of the
//! first 512 tokens of Pride and Prejudice, their perplexity (16.14 with the exact cache),
//! and the K and V every layer produces (`shared/data/smollm2-pp512/kv.safetensors`, f16,
//! Hugging Face channel order — the order this runner caches K in, see [`crate::model`]).

use std::path::{Path, PathBuf};

use kv_audit::safetensors::{Dtype, SafeTensors};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::metrics::mean_nll;
use crate::model::{Llama, Logits, WeightMode};
use crate::progress::Progress;
use crate::store::{ExactStore, KvStore};

/// Perplexity of the first 512 tokens with the exact cache, from the data README (numpy and
/// transformers agree to 1e-5).
pub const REFERENCE_PPL_512: f64 = 16.14;

/// `shared/data/smollm2-pp512/kv.safetensors` beside the workspace.
pub fn default_reference_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/smollm2-pp512/kv.safetensors")
}

/// The reference file.
#[derive(Debug)]
pub struct Reference {
    file: SafeTensors,
    /// Its `tokens` tensor.
    pub tokens: Vec<u32>,
}

impl Reference {
    /// Reads the file and its `tokens` tensor (int64).
    ///
    /// # Errors
    /// Read and format errors; [`Error::BadReference`] when `tokens` is missing or not a
    /// vector of non-negative int64.
    pub fn load(path: &Path) -> Result<Self> {
        let file = SafeTensors::read(path)?;
        let bad = |problem| Error::BadReference {
            path: path.to_owned(),
            tensor: "tokens".to_owned(),
            problem,
        };
        let info = file.get("tokens").ok_or_else(|| bad("missing"))?;
        if info.dtype != Dtype::I64 || info.shape.len() != 1 {
            return Err(bad("not a vector of int64"));
        }
        let tokens = file
            .bytes(info)
            .chunks_exact(8)
            .map(|b| {
                let id = i64::from_le_bytes(b.try_into().expect("8 bytes"));
                u32::try_from(id).map_err(|_| bad("holds an id outside 0..2^32"))
            })
            .collect::<Result<Vec<u32>>>()?;
        Ok(Self { file, tokens })
    }

    /// Tensor `name` (`k.LL` / `v.LL`) as f32 with its shape `[kv_heads, tokens, head_dim]`.
    ///
    /// # Errors
    /// [`Error::BadReference`] when it is missing or not three-dimensional.
    pub fn tensor(&self, name: &str) -> Result<(Vec<f32>, [usize; 3])> {
        let bad = |problem| Error::BadReference {
            path: self.file.path().to_owned(),
            tensor: name.to_owned(),
            problem,
        };
        let info = self.file.get(name).ok_or_else(|| bad("missing"))?;
        let shape: [usize; 3] = info
            .shape
            .as_slice()
            .try_into()
            .map_err(|_| bad("not [kv_heads, tokens, head_dim]"))?;
        Ok((self.file.to_f32(info)?, shape))
    }
}

/// max |a − b| / max |b| and Σ(a − b)² / Σ b² of `a` against the reference `b`.
fn errors(a: &[f32], b: &[f32]) -> (f64, f64) {
    let (mut max_err, mut max_ref, mut err2, mut ref2) = (0f64, 0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        max_err = max_err.max((x - y).abs());
        max_ref = max_ref.max(y.abs());
        err2 += (x - y) * (x - y);
        ref2 += y * y;
    }
    (
        max_err / max_ref.max(f64::MIN_POSITIVE),
        err2 / ref2.max(f64::MIN_POSITIVE),
    )
}

/// What `kv-eval verify` measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Weight arithmetic.
    pub weights: WeightMode,
    /// Tokens checked and scored.
    pub tokens: usize,
    /// Positions where this tokenizer's ids differ from the reference `tokens`.
    pub token_mismatches: usize,
    /// Perplexity of the tokens through the prefill path (exact cache).
    pub ppl_prefill: f64,
    /// Perplexity through the token-by-token path (exact cache), if run.
    pub ppl_decode: Option<f64>,
    /// The data README's value for 512 tokens.
    pub ppl_reference_512: f64,
    /// Worst layer's max |K − K_ref| / max |K_ref|.
    pub k_max_rel_err: f64,
    /// Worst layer's max |V − V_ref| / max |V_ref|.
    pub v_max_rel_err: f64,
    /// Per layer: max relative error of K.
    pub k_max_rel_err_layers: Vec<f64>,
    /// Per layer: max relative error of V.
    pub v_max_rel_err_layers: Vec<f64>,
    /// Worst layer's Σ(K − K_ref)² / ΣK_ref².
    pub k_rel_mse: f64,
    /// Worst layer's Σ(V − V_ref)² / ΣV_ref².
    pub v_rel_mse: f64,
    /// Wall-clock seconds of the prefill (and of the decode path when run).
    pub prefill_s: f64,
    /// Seconds of the token-by-token path.
    pub decode_s: Option<f64>,
}

/// Scores the first `n` tokens of `tokens` (the text's ids) and compares tokens and K/V with
/// the reference; with `decode`, also scores them token by token.
///
/// # Errors
/// Model, store and reference errors.
pub fn verify(
    model: &Llama,
    tokens: &[u32],
    reference: &Reference,
    n: usize,
    decode: bool,
    quiet: bool,
) -> Result<VerifyReport> {
    let n = n.min(tokens.len());
    if n < 2 {
        return Err(Error::LengthMismatch {
            what: "tokens to score",
            expected: 2,
            actual: n,
        });
    }
    let ids = &tokens[..n];
    let token_mismatches = ids
        .iter()
        .zip(&reference.tokens)
        .filter(|(a, b)| a != b)
        .count()
        + n.saturating_sub(reference.tokens.len());
    let vocab = model.config().vocab;
    let shape = model.config().store_shape();
    let started = std::time::Instant::now();
    let mut store = ExactStore::new(shape);
    let logits = model.prefill(ids, &mut store, n, Logits::All)?;
    let logits = logits.flatten_all()?.to_vec1::<f32>()?;
    let ppl_prefill = mean_nll(&logits[..(n - 1) * vocab], vocab, &ids[1..]).exp();
    let prefill_s = started.elapsed().as_secs_f64();

    let (mut k_err, mut v_err, mut k_mse, mut v_mse) = (vec![], vec![], 0f64, 0f64);
    let (mut k, mut v) = (Vec::new(), Vec::new());
    for layer in 0..shape.layers {
        store.read(layer, &mut k, &mut v)?;
        for (mine, kind) in [(&k, "k"), (&v, "v")] {
            let name = format!("{kind}.{layer:02}");
            let (want, [heads, t, d]) = reference.tensor(&name)?;
            if heads != shape.kv_heads || d != shape.head_dim || t < n {
                return Err(Error::BadReference {
                    path: reference.file.path().to_owned(),
                    tensor: name,
                    problem: "has a shape that does not fit the model and token count",
                });
            }
            let want: Vec<f32> = (0..heads)
                .flat_map(|h| want[h * t * d..(h * t + n) * d].iter().copied())
                .collect();
            let (max_rel, mse) = errors(mine, &want);
            if kind == "k" {
                k_err.push(max_rel);
                k_mse = k_mse.max(mse);
            } else {
                v_err.push(max_rel);
                v_mse = v_mse.max(mse);
            }
        }
    }

    let (ppl_decode, decode_s) = if decode {
        let started = std::time::Instant::now();
        let mut store = ExactStore::new(shape);
        let mut progress = Progress::new("decode", n - 1, quiet);
        let mut nll = 0.0;
        for i in 0..n - 1 {
            let l = model.forward(&[&ids[i..=i]], &mut [&mut store], Logits::Last)?;
            nll += mean_nll(
                &l.flatten_all()?.to_vec1::<f32>()?,
                vocab,
                &ids[i + 1..=i + 1],
            );
            progress.advance(1, "token by token");
        }
        (
            Some((nll / (n - 1) as f64).exp()),
            Some(started.elapsed().as_secs_f64()),
        )
    } else {
        (None, None)
    };
    let worst = |x: &[f64]| x.iter().copied().fold(0f64, f64::max);
    Ok(VerifyReport {
        weights: model.weight_mode(),
        tokens: n,
        token_mismatches,
        ppl_prefill,
        ppl_decode,
        ppl_reference_512: REFERENCE_PPL_512,
        k_max_rel_err: worst(&k_err),
        v_max_rel_err: worst(&v_err),
        k_max_rel_err_layers: k_err,
        v_max_rel_err_layers: v_err,
        k_rel_mse: k_mse,
        v_rel_mse: v_mse,
        prefill_s,
        decode_s,
    })
}
