//! The KV store the model runner writes K and V into and attends through: a small trait of
//! this crate, so that any cache can be measured end to end, with two implementations —
//! [`ExactStore`] (f32, the reference) and [`CompressedStore`] (every vector coded by a
//! kv-codec [`VectorCodec`] into real packed bytes, decoded again for attention).
//!
//! A store holds, per layer and KV head, the K and V vectors of every token so far in
//! order. The model appends a layer's new vectors and then asks the store to attend; the
//! default [`KvStore::attend`] reads every vector back ([`KvStore::read`]) and runs the
//! reference [`attention`]. A cache with attention over its compressed pages overrides
//! `attend` instead of materialising f32 vectors.
//!
//! # Plugging in kv-codec's paged cache
//! kv-codec's `KvCache` (paged, per-layer policies, attention on its pages) fits this trait
//! one-to-one with batch 1 and f32 input, because its layouts are this trait's with a
//! leading batch dimension (`[batch, kv_heads, n, head_dim]`): an adapter holding the cache
//! maps `append` to `KvCache::append(layer, Input::F32(k), Input::F32(v))`, `tokens` to
//! `len(layer)`, `read` to `gather(layer, Kv::K | Kv::V, 0..len, Output::F32(..))`,
//! `attend` to `KvCache::attend(layer, Input::F32(q), q_heads, Output::F32(out))` (the
//! queries and the result as `[q_heads, n, head_dim]` tensors), `truncate` to `crop`, and
//! `held_bytes` to `bytes_held`; [`rows_from`] then builds those adapters instead of
//! [`CompressedStore`]s, and every measurement runs through the paged cache unchanged.

use std::fmt;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use kv_codec::bits::BitReader;
use kv_codec::{CodecConfig, CodecSpec, Output, Par, VectorCodec, decode_batch};
use rayon::prelude::*;

use crate::attention::attention;
use crate::error::{Error, Result};

/// What a store holds: layers × KV heads × tokens of `head_dim` values, for K and for V.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoreShape {
    /// Transformer layers.
    pub layers: usize,
    /// KV heads per layer.
    pub kv_heads: usize,
    /// Values per vector.
    pub head_dim: usize,
}

impl StoreShape {
    /// Values of one token in one layer, for K or for V.
    pub fn token_len(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    fn check_layer(&self, layer: usize) -> Result<()> {
        if layer < self.layers {
            Ok(())
        } else {
            Err(Error::NoSuchLayer {
                layer,
                layers: self.layers,
            })
        }
    }

    /// The number of tokens in `len` values laid out `[kv_heads, tokens, head_dim]`.
    fn tokens_in(&self, len: usize, what: &'static str) -> Result<usize> {
        let per = self.token_len();
        if per == 0 || !len.is_multiple_of(per) {
            return Err(Error::LengthMismatch {
                what,
                expected: len.next_multiple_of(per.max(1)),
                actual: len,
            });
        }
        Ok(len / per)
    }
}

/// A KV cache as the model runner sees it.
///
/// Layouts are `[kv_heads, tokens, head_dim]`, K after the rotary embedding (what every
/// engine caches). Layers fill independently during a forward pass: layer 0 receives a
/// token's vectors before layer 1 does.
pub trait KvStore: fmt::Debug + Send + Sync {
    /// Layers, KV heads and head dimension.
    fn shape(&self) -> StoreShape;

    /// Tokens held in `layer` (0 for a layer that does not exist).
    fn tokens(&self, layer: usize) -> usize;

    /// Appends the K and V vectors of some new tokens to `layer`, each `[kv_heads, new
    /// tokens, head_dim]`.
    ///
    /// # Errors
    /// [`Error::NoSuchLayer`], [`Error::LengthMismatch`], and codec errors.
    fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) -> Result<()>;

    /// Every K and V vector of `layer` as attention sees it (decoded), each
    /// `[kv_heads, tokens, head_dim]`, into the cleared buffers.
    ///
    /// # Errors
    /// [`Error::NoSuchLayer`] and codec errors.
    fn read(&self, layer: usize, k: &mut Vec<f32>, v: &mut Vec<f32>) -> Result<()>;

    /// Attention of the queries `q` `[q_heads, n, head_dim]` of the last `n` tokens of
    /// `layer` (already appended) over everything the layer holds: `[q_heads, n, head_dim]`.
    ///
    /// # Errors
    /// As [`KvStore::read`] and [`attention`].
    fn attend(&self, layer: usize, q: &Tensor) -> Result<Tensor> {
        let s = self.shape();
        let (mut k, mut v) = (Vec::new(), Vec::new());
        self.read(layer, &mut k, &mut v)?;
        let t = self.tokens(layer);
        let dims = (s.kv_heads, t, s.head_dim);
        let k = Tensor::from_vec(k, dims, &Device::Cpu)?;
        let v = Tensor::from_vec(v, dims, &Device::Cpu)?;
        attention(q, &k, &v)
    }

    /// Keeps the first `tokens` tokens of every layer (a no-op for layers holding fewer).
    fn truncate(&mut self, tokens: usize);

    /// Bytes held for the vectors (payload only, not bookkeeping).
    fn held_bytes(&self) -> usize;
}

/// Copies every vector of `src` into `dst` (which then holds them as its own format does:
/// a compressed store encodes them). Used to give several stores the same prefix from one
/// exact prefill.
///
/// # Errors
/// Shape mismatches and the stores' own errors.
pub fn copy_into(src: &dyn KvStore, dst: &mut dyn KvStore) -> Result<()> {
    if src.shape() != dst.shape() {
        return Err(Error::LengthMismatch {
            what: "destination store layers × kv_heads × head_dim",
            expected: src.shape().layers * src.shape().token_len(),
            actual: dst.shape().layers * dst.shape().token_len(),
        });
    }
    let (mut k, mut v) = (Vec::new(), Vec::new());
    for layer in 0..src.shape().layers {
        src.read(layer, &mut k, &mut v)?;
        dst.append(layer, &k, &v)?;
    }
    Ok(())
}

/// One store per row of a batch: row 0 a copy of `exact`, then one [`CompressedStore`] per
/// plan holding `exact`'s vectors coded (built in parallel), with decoded caches when
/// `cache_decoded` is set (see [`CompressedStore::cache_decoded`]).
///
/// # Errors
/// Plan, codec and shape errors.
pub fn rows_from(
    exact: &ExactStore,
    plans: &[CachePlan],
    cache_decoded: bool,
) -> Result<Vec<Box<dyn KvStore>>> {
    let coded: Vec<CompressedStore> = plans
        .par_iter()
        .map(|plan| {
            let mut s = CompressedStore::new(exact.shape(), plan.clone())?;
            copy_into(exact, &mut s)?;
            if cache_decoded {
                s.cache_decoded()
            } else {
                Ok(s)
            }
        })
        .collect::<Result<_>>()?;
    let mut rows: Vec<Box<dyn KvStore>> = vec![Box::new(exact.clone())];
    rows.extend(coded.into_iter().map(|s| Box::new(s) as Box<dyn KvStore>));
    Ok(rows)
}

/// Appends `[kv_heads, n, d]` values head by head to per-head streams.
fn split_heads(shape: StoreShape, x: &[f32], n: usize, mut push: impl FnMut(usize, &[f32])) {
    let per_head = n * shape.head_dim;
    for (h, chunk) in x
        .chunks_exact(per_head.max(1))
        .enumerate()
        .take(shape.kv_heads)
    {
        push(h, chunk);
    }
}

/// The reference store: every vector as f32.
#[derive(Clone, Debug)]
pub struct ExactStore {
    shape: StoreShape,
    /// `[layer][head]` → K then V, `tokens × head_dim` each.
    k: Vec<Vec<Vec<f32>>>,
    v: Vec<Vec<Vec<f32>>>,
}

impl ExactStore {
    /// An empty store.
    pub fn new(shape: StoreShape) -> Self {
        let empty = vec![vec![Vec::new(); shape.kv_heads]; shape.layers];
        Self {
            shape,
            k: empty.clone(),
            v: empty,
        }
    }
}

impl KvStore for ExactStore {
    fn shape(&self) -> StoreShape {
        self.shape
    }

    fn tokens(&self, layer: usize) -> usize {
        self.k
            .get(layer)
            .and_then(|heads| heads.first())
            .map_or(0, |s| s.len() / self.shape.head_dim.max(1))
    }

    fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) -> Result<()> {
        self.shape.check_layer(layer)?;
        let n = self.shape.tokens_in(k.len(), "appended K")?;
        if v.len() != k.len() {
            return Err(Error::LengthMismatch {
                what: "appended V",
                expected: k.len(),
                actual: v.len(),
            });
        }
        split_heads(self.shape, k, n, |h, x| {
            self.k[layer][h].extend_from_slice(x)
        });
        split_heads(self.shape, v, n, |h, x| {
            self.v[layer][h].extend_from_slice(x)
        });
        Ok(())
    }

    fn read(&self, layer: usize, k: &mut Vec<f32>, v: &mut Vec<f32>) -> Result<()> {
        self.shape.check_layer(layer)?;
        k.clear();
        v.clear();
        for h in 0..self.shape.kv_heads {
            k.extend_from_slice(&self.k[layer][h]);
            v.extend_from_slice(&self.v[layer][h]);
        }
        Ok(())
    }

    fn truncate(&mut self, tokens: usize) {
        let keep = tokens * self.shape.head_dim;
        for s in self.k.iter_mut().chain(self.v.iter_mut()).flatten() {
            s.truncate(keep);
        }
    }

    fn held_bytes(&self) -> usize {
        self.k
            .iter()
            .chain(&self.v)
            .flatten()
            .map(|s| s.len() * 4)
            .sum()
    }
}

/// How one layer's K and V are held: a codec each, or `None` for uncompressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerPlan {
    /// The K codec.
    pub k: Option<CodecSpec>,
    /// The V codec.
    pub v: Option<CodecSpec>,
}

/// A codec choice per layer for K and for V.
///
/// Text form (what `kv-eval --codec` takes): comma-separated items, `SPEC` (K and V of
/// every layer), `k=SPEC`, `v=SPEC`, and `raw=L:L:…` (layers kept uncompressed), e.g.
/// `voronoi-e8-q16-s4`, `k=voronoi-e8-q23-s4,v=turboquant-b3` or
/// `voronoi-e8-q13-s2,raw=0:29`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachePlan {
    /// One entry per layer.
    pub layers: Vec<LayerPlan>,
}

impl CachePlan {
    /// The same codec for K and V of every layer.
    pub fn uniform(spec: CodecSpec, layers: usize) -> Self {
        Self {
            layers: vec![
                LayerPlan {
                    k: Some(spec),
                    v: Some(spec),
                };
                layers
            ],
        }
    }

    /// Parses the text form (see the type's documentation) for a model of `layers` layers.
    ///
    /// # Errors
    /// [`Error::InvalidCodecSpec`] for a spec kv-codec rejects; [`Error::InvalidValue`] for
    /// other malformed items or a layer out of range.
    pub fn parse(text: &str, layers: usize) -> Result<Self> {
        let bad = || Error::InvalidValue {
            option: "--codec",
            value: text.to_owned(),
            expected: "SPEC, k=SPEC, v=SPEC and raw=L:L:…, comma-separated",
        };
        let spec = |s: &str| {
            s.parse::<CodecSpec>()
                .map_err(|source| Error::InvalidCodecSpec {
                    value: s.to_owned(),
                    source,
                })
        };
        let (mut k, mut v, mut raw) = (None, None, Vec::new());
        for item in text.split(',').map(str::trim) {
            match item.split_once('=') {
                None if !item.is_empty() => {
                    let s = spec(item)?;
                    (k, v) = (Some(s), Some(s));
                }
                Some(("k", s)) => k = Some(spec(s)?),
                Some(("v", s)) => v = Some(spec(s)?),
                Some(("raw", list)) => {
                    for l in list.split(':') {
                        let l: usize = l.parse().map_err(|_| bad())?;
                        if l >= layers {
                            return Err(bad());
                        }
                        raw.push(l);
                    }
                }
                _ => return Err(bad()),
            }
        }
        let mut plan = Self {
            layers: vec![LayerPlan { k, v }; layers],
        };
        for l in raw {
            plan.layers[l] = LayerPlan { k: None, v: None };
        }
        Ok(plan)
    }

    /// The canonical text form: a single spec when every layer uses it for K and V.
    pub fn label(&self) -> String {
        let first = self
            .layers
            .first()
            .copied()
            .unwrap_or(LayerPlan { k: None, v: None });
        let compressed: Vec<&LayerPlan> = self
            .layers
            .iter()
            .filter(|l| l.k.is_some() || l.v.is_some())
            .collect();
        let reference = compressed.first().copied().copied().unwrap_or(first);
        let raw: Vec<String> = (0..self.layers.len())
            .filter(|&l| self.layers[l] == LayerPlan { k: None, v: None })
            .map(|l| l.to_string())
            .collect();
        let uniform = compressed.iter().all(|l| **l == reference);
        let mut items = Vec::new();
        if uniform {
            match (reference.k, reference.v) {
                (Some(k), Some(v)) if k == v => items.push(k.to_string()),
                (k, v) => {
                    items.extend(k.map(|k| format!("k={k}")));
                    items.extend(v.map(|v| format!("v={v}")));
                }
            }
            if !raw.is_empty() && !compressed.is_empty() {
                items.push(format!("raw={}", raw.join(":")));
            }
        } else {
            for (l, p) in self.layers.iter().enumerate() {
                let s = |c: Option<CodecSpec>| c.map_or("raw".to_owned(), |c| c.to_string());
                items.push(format!("L{l}:k={}/v={}", s(p.k), s(p.v)));
            }
        }
        if items.is_empty() {
            "exact".to_owned()
        } else {
            items.join(",")
        }
    }

    /// The single spec of a plan that uses one codec for K and V everywhere.
    pub fn uniform_spec(&self) -> Option<CodecSpec> {
        let first = self.layers.first()?;
        match (first.k, first.v) {
            (Some(k), Some(v)) if k == v && self.layers.iter().all(|l| l == first) => Some(k),
            _ => None,
        }
    }

    /// Mean stored bits per value over all K and V of a model with this plan, counting
    /// uncompressed layers at 16 bits (bf16, what an engine would hold them in).
    ///
    /// # Errors
    /// [`Error::Codec`] when a codec does not build at `head_dim`.
    pub fn bits_per_value(&self, head_dim: usize) -> Result<f64> {
        let mut total = 0.0;
        for l in &self.layers {
            for c in [l.k, l.v] {
                total += match c {
                    Some(spec) => build(spec, head_dim)?.bits_per_value(),
                    None => 16.0,
                };
            }
        }
        Ok(total / (2 * self.layers.len().max(1)) as f64)
    }
}

fn build(spec: CodecSpec, head_dim: usize) -> Result<Arc<dyn VectorCodec>> {
    CodecConfig::new(spec, head_dim)
        .build()
        .map(Arc::from)
        .map_err(|source| Error::Codec {
            spec: spec.to_string(),
            source,
        })
}

/// One head's vectors of K or of V in a [`CompressedStore`].
#[derive(Clone, Debug)]
enum Stream {
    /// Uncompressed f32, `tokens × head_dim`.
    Raw(Vec<f32>),
    /// Coded vectors.
    Packed(Packed),
}

/// Coded vectors of one head.
///
/// Vector `i` sits at bits `i·b .. (i+1)·b` of `bytes` (b = the codec's bits per vector),
/// least significant bit first: exactly the layout of kv-codec's batch encoder, so the whole
/// stream decodes with one [`decode_batch`] call. `bytes` is always `⌈vectors·b/8⌉` long
/// and the bits past the last vector are zero.
#[derive(Clone, Debug)]
struct Packed {
    codec: Arc<dyn VectorCodec>,
    bytes: Vec<u8>,
    vectors: usize,
    /// With [`CompressedStore::cache_decoded`]: each vector decoded once, from `bytes`, when
    /// it is stored. Decoding is a pure function of the bytes, so attention sees the same
    /// values as when it decodes the stream at every step; only the time differs.
    decoded: Option<Vec<f32>>,
}

impl Packed {
    fn error(&self, source: kv_codec::Error) -> Error {
        Error::Codec {
            spec: self.codec.spec().to_string(),
            source,
        }
    }

    /// Decodes vector `i` from the stream's own bytes onto the end of `out`.
    fn decode_one(
        &self,
        i: usize,
        d: usize,
        out: &mut Vec<f32>,
        scratch: &mut Scratch,
    ) -> Result<()> {
        let bits = self.codec.bits_per_vector() as usize;
        let at = i * bits;
        let mut r = BitReader::new(&self.bytes[at / 8..]);
        if !at.is_multiple_of(8) {
            r.read((at % 8) as u32).map_err(|e| self.error(e))?;
        }
        scratch.one.resize(self.codec.bytes_per_vector(), 0);
        r.read_bits_into(&mut scratch.one, bits)
            .map_err(|e| self.error(e))?;
        scratch.f.resize(self.codec.scratch_len(), 0.0);
        let start = out.len();
        out.resize(start + d, 0.0);
        self.codec
            .decode_vector(&scratch.one, &mut out[start..], &mut scratch.f)
            .map_err(|reason| self.error(kv_codec::Error::CorruptPayload { vector: i, reason }))
    }

    /// Decodes every vector into a fresh cache.
    fn fill_cache(&mut self, d: usize) -> Result<()> {
        let mut cache = vec![0.0; self.vectors * d];
        decode_batch(&*self.codec, &self.bytes, Output::F32(&mut cache), Par::Seq)
            .map_err(|e| self.error(e))?;
        self.decoded = Some(cache);
        Ok(())
    }
}

impl Stream {
    fn new(codec: Option<&Arc<dyn VectorCodec>>) -> Self {
        match codec {
            None => Self::Raw(Vec::new()),
            Some(c) => Self::Packed(Packed {
                codec: Arc::clone(c),
                bytes: Vec::new(),
                vectors: 0,
                decoded: None,
            }),
        }
    }

    fn vectors(&self, d: usize) -> usize {
        match self {
            Self::Raw(x) => x.len() / d.max(1),
            Self::Packed(p) => p.vectors,
        }
    }

    /// Appends vectors of `d` values.
    fn push(&mut self, x: &[f32], d: usize, scratch: &mut Scratch) -> Result<()> {
        let p = match self {
            Self::Raw(s) => {
                s.extend_from_slice(x);
                return Ok(());
            }
            Self::Packed(p) => p,
        };
        let bits = p.codec.bits_per_vector() as usize;
        for v in x.chunks_exact(d) {
            if !v.iter().all(|x| x.is_finite()) {
                return Err(p.error(kv_codec::Error::NonFinite { vector: p.vectors }));
            }
            scratch.one.resize(p.codec.bytes_per_vector(), 0);
            scratch.f.resize(p.codec.scratch_len(), 0.0);
            p.codec.encode_vector(v, &mut scratch.one, &mut scratch.f);
            append_bits(&mut p.bytes, p.vectors * bits, &scratch.one, bits);
            p.vectors += 1;
            if let Some(mut cache) = p.decoded.take() {
                let result = p.decode_one(p.vectors - 1, d, &mut cache, scratch);
                p.decoded = Some(cache);
                result?;
            }
        }
        Ok(())
    }

    /// Decodes (or copies) every vector onto the end of `out`.
    fn read_into(&self, out: &mut Vec<f32>, d: usize) -> Result<()> {
        match self {
            Self::Raw(s) => out.extend_from_slice(s),
            Self::Packed(Packed {
                decoded: Some(cache),
                ..
            }) => out.extend_from_slice(cache),
            Self::Packed(p) => {
                let start = out.len();
                out.resize(start + p.vectors * d, 0.0);
                decode_batch(
                    &*p.codec,
                    &p.bytes,
                    Output::F32(&mut out[start..]),
                    Par::Seq,
                )
                .map_err(|e| p.error(e))?;
            }
        }
        Ok(())
    }

    fn truncate(&mut self, tokens: usize, d: usize) {
        match self {
            Self::Raw(s) => s.truncate(tokens * d),
            Self::Packed(p) => {
                if tokens >= p.vectors {
                    return;
                }
                let bits = tokens * p.codec.bits_per_vector() as usize;
                p.bytes.truncate(bits.div_ceil(8));
                if let (Some(last), r @ 1..) = (p.bytes.last_mut(), bits % 8) {
                    *last &= (1u8 << r) - 1;
                }
                p.vectors = tokens;
                if let Some(cache) = &mut p.decoded {
                    cache.truncate(tokens * d);
                }
            }
        }
    }

    fn held_bytes(&self) -> usize {
        match self {
            Self::Raw(s) => s.len() * 4,
            Self::Packed(p) => p.bytes.len(),
        }
    }
}

/// ORs the first `bits` bits of `src` into `dst` starting at bit `at`, growing `dst` to
/// `⌈(at + bits)/8⌉` bytes. The bits of `dst` from `at` on must be zero (they are: streams
/// only grow, and truncation clears the tail).
fn append_bits(dst: &mut Vec<u8>, at: usize, src: &[u8], bits: usize) {
    let end = (at + bits).div_ceil(8);
    dst.resize(end, 0);
    let shift = at % 8;
    let base = at / 8;
    for (i, &byte) in src.iter().enumerate().take(bits.div_ceil(8)) {
        // Only the meaningful bits of the last source byte are copied.
        let valid = (bits - 8 * i).min(8);
        let byte = if valid == 8 {
            byte
        } else {
            byte & ((1u8 << valid) - 1)
        };
        dst[base + i] |= byte << shift;
        if shift != 0 && base + i + 1 < end {
            dst[base + i + 1] |= byte >> (8 - shift);
        }
    }
}

#[derive(Debug, Default)]
struct Scratch {
    one: Vec<u8>,
    f: Vec<f32>,
}

/// A store that codes every vector with the plan's codec for its layer and kind (K or V)
/// into packed bytes as it arrives, and decodes them for attention.
#[derive(Debug)]
pub struct CompressedStore {
    shape: StoreShape,
    plan: CachePlan,
    /// `[layer][head]` streams of K and of V.
    k: Vec<Vec<Stream>>,
    v: Vec<Vec<Stream>>,
}

impl CompressedStore {
    /// An empty store following `plan`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when the plan has the wrong number of layers;
    /// [`Error::Codec`] when a codec does not build at this head_dim.
    pub fn new(shape: StoreShape, plan: CachePlan) -> Result<Self> {
        if plan.layers.len() != shape.layers {
            return Err(Error::LengthMismatch {
                what: "cache plan layers",
                expected: shape.layers,
                actual: plan.layers.len(),
            });
        }
        let mut k = Vec::with_capacity(shape.layers);
        let mut v = Vec::with_capacity(shape.layers);
        for l in &plan.layers {
            let kc = l.k.map(|s| build(s, shape.head_dim)).transpose()?;
            let vc = l.v.map(|s| build(s, shape.head_dim)).transpose()?;
            k.push(vec![Stream::new(kc.as_ref()); shape.kv_heads]);
            v.push(vec![Stream::new(vc.as_ref()); shape.kv_heads]);
        }
        Ok(Self { shape, plan, k, v })
    }

    /// The plan this store follows.
    pub fn plan(&self) -> &CachePlan {
        &self.plan
    }

    /// Keeps a decoded copy of every coded vector beside its bytes, decoded once from the
    /// stored bytes (those held now, and each new one as it is stored), so that attention
    /// reads the copy instead of decoding the whole stream at every step. Attention sees
    /// bit-identical values either way; the copy costs f32 memory and saves time, which is
    /// what a quality evaluation wants. [`KvStore::held_bytes`] still counts the bytes only.
    ///
    /// # Errors
    /// Codec errors while decoding the vectors already held.
    pub fn cache_decoded(mut self) -> Result<Self> {
        let d = self.shape.head_dim;
        for s in self.k.iter_mut().chain(self.v.iter_mut()).flatten() {
            if let Stream::Packed(p) = s
                && p.decoded.is_none()
            {
                p.fill_cache(d)?;
            }
        }
        Ok(self)
    }
}

impl KvStore for CompressedStore {
    fn shape(&self) -> StoreShape {
        self.shape
    }

    fn tokens(&self, layer: usize) -> usize {
        self.k
            .get(layer)
            .and_then(|heads| heads.first())
            .map_or(0, |s| s.vectors(self.shape.head_dim))
    }

    fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) -> Result<()> {
        self.shape.check_layer(layer)?;
        let n = self.shape.tokens_in(k.len(), "appended K")?;
        if v.len() != k.len() {
            return Err(Error::LengthMismatch {
                what: "appended V",
                expected: k.len(),
                actual: v.len(),
            });
        }
        let d = self.shape.head_dim;
        let mut scratch = Scratch::default();
        let mut result = Ok(());
        for (streams, x) in [(&mut self.k[layer], k), (&mut self.v[layer], v)] {
            split_heads(self.shape, x, n, |h, chunk| {
                if result.is_ok() {
                    result = streams[h].push(chunk, d, &mut scratch);
                }
            });
        }
        result
    }

    fn read(&self, layer: usize, k: &mut Vec<f32>, v: &mut Vec<f32>) -> Result<()> {
        self.shape.check_layer(layer)?;
        k.clear();
        v.clear();
        let d = self.shape.head_dim;
        for h in 0..self.shape.kv_heads {
            self.k[layer][h].read_into(k, d)?;
            self.v[layer][h].read_into(v, d)?;
        }
        Ok(())
    }

    fn truncate(&mut self, tokens: usize) {
        let d = self.shape.head_dim;
        for s in self.k.iter_mut().chain(self.v.iter_mut()).flatten() {
            s.truncate(tokens, d);
        }
    }

    fn held_bytes(&self) -> usize {
        self.k
            .iter()
            .chain(&self.v)
            .flatten()
            .map(Stream::held_bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_codec::Input;

    const SHAPE: StoreShape = StoreShape {
        layers: 2,
        kv_heads: 3,
        head_dim: 64,
    };

    /// `[kv_heads, n, d]` values that differ per layer, head, token and channel.
    fn token_block(layer: usize, first: usize, n: usize) -> Vec<f32> {
        let mut x = Vec::new();
        for h in 0..SHAPE.kv_heads {
            for t in first..first + n {
                for c in 0..SHAPE.head_dim {
                    x.push(
                        ((layer * 1000 + h * 100 + t * 7 + c) as f32 * 0.37).sin()
                            * (1.0 + c as f32 / 16.0),
                    );
                }
            }
        }
        x
    }

    fn fill(store: &mut dyn KvStore, chunks: &[usize]) {
        fill_from(store, 0, chunks);
    }

    fn fill_from(store: &mut dyn KvStore, first: usize, chunks: &[usize]) {
        let mut at = first;
        for &n in chunks {
            for l in 0..SHAPE.layers {
                let k = token_block(l, at, n);
                let v: Vec<f32> = k.iter().map(|x| -x).collect();
                store.append(l, &k, &v).unwrap();
            }
            at += n;
        }
    }

    #[test]
    fn exact_store_returns_what_was_appended_whatever_the_chunking() {
        let mut a = ExactStore::new(SHAPE);
        let mut b = ExactStore::new(SHAPE);
        fill(&mut a, &[5]);
        fill(&mut b, &[1, 3, 1]);
        let (mut ka, mut va, mut kb, mut vb) = (vec![], vec![], vec![], vec![]);
        for l in 0..SHAPE.layers {
            a.read(l, &mut ka, &mut va).unwrap();
            b.read(l, &mut kb, &mut vb).unwrap();
            assert_eq!(ka, token_block(l, 0, 5));
            assert_eq!((&ka, &va), (&kb, &vb));
        }
        assert_eq!(a.tokens(1), 5);
        assert_eq!(a.held_bytes(), 2 * 2 * 3 * 5 * 64 * 4);
    }

    #[test]
    fn compressed_stream_is_the_batch_encoders_bytes() {
        // 190 bits per vector: not a whole number of bytes, so appends straddle bytes.
        let spec: CodecSpec = "voronoi-e8-q6-s3".parse().unwrap();
        let plan = CachePlan::uniform(spec, SHAPE.layers);
        let mut store = CompressedStore::new(SHAPE, plan).unwrap();
        fill(&mut store, &[1, 2, 4, 1]);
        let codec = CodecConfig::new(spec, 64).build().unwrap();
        assert_ne!(codec.bits_per_vector() % 8, 0);
        let all = token_block(1, 0, 8);
        // Head 2 of layer 1, K.
        let head2 = &all[2 * 8 * 64..3 * 8 * 64];
        let mut want = vec![0u8; codec.encoded_len(8)];
        codec.encode(Input::F32(head2), &mut want).unwrap();
        match &store.k[1][2] {
            Stream::Packed(p) => {
                assert_eq!(p.vectors, 8);
                assert_eq!(p.bytes, want);
            }
            Stream::Raw(_) => panic!("K of layer 1 should be packed"),
        }
        let mut decoded = vec![0f32; 8 * 64];
        codec.decode(&want, Output::F32(&mut decoded)).unwrap();
        let (mut k, mut v) = (vec![], vec![]);
        store.read(1, &mut k, &mut v).unwrap();
        assert_eq!(&k[2 * 8 * 64..3 * 8 * 64], &decoded[..]);
        assert_eq!(store.held_bytes(), 2 * 2 * 3 * codec.encoded_len(8));
    }

    #[test]
    fn truncation_then_append_gives_the_same_bytes() {
        let plan = CachePlan::parse("k=voronoi-e8-q6-s3,v=int4,raw=1", SHAPE.layers).unwrap();
        let mut a = CompressedStore::new(SHAPE, plan.clone()).unwrap();
        let mut b = CompressedStore::new(SHAPE, plan).unwrap();
        fill(&mut a, &[6]);
        fill(&mut b, &[3, 3]);
        b.truncate(5);
        assert_eq!(b.tokens(0), 5);
        a.truncate(5);
        // Append a sixth token that differs from the one dropped.
        for l in 0..SHAPE.layers {
            let k = token_block(l + 7, 9, 1);
            a.append(l, &k, &k).unwrap();
            b.append(l, &k, &k).unwrap();
        }
        let (mut ka, mut va, mut kb, mut vb) = (vec![], vec![], vec![], vec![]);
        for l in 0..SHAPE.layers {
            a.read(l, &mut ka, &mut va).unwrap();
            b.read(l, &mut kb, &mut vb).unwrap();
            assert_eq!((&ka, &va), (&kb, &vb));
        }
    }

    #[test]
    fn the_decoded_cache_holds_exactly_what_decoding_the_stream_gives() {
        let plan =
            CachePlan::parse("k=voronoi-e8-q9-s2,v=turboquant-b3,raw=0", SHAPE.layers).unwrap();
        let mut plain = CompressedStore::new(SHAPE, plan.clone()).unwrap();
        let mut cached = CompressedStore::new(SHAPE, plan.clone()).unwrap();
        fill(&mut plain, &[3, 1]);
        fill(&mut cached, &[3]);
        // Cache made after some appends (filled from the bytes), then more appends.
        let mut cached = cached.cache_decoded().unwrap();
        fill_from(&mut cached, 3, &[1]);
        let mut late = CompressedStore::new(SHAPE, plan)
            .unwrap()
            .cache_decoded()
            .unwrap();
        fill(&mut late, &[2, 2]);
        let read = |s: &CompressedStore, l| {
            let (mut k, mut v) = (vec![], vec![]);
            s.read(l, &mut k, &mut v).unwrap();
            (k, v)
        };
        for l in 0..SHAPE.layers {
            assert_eq!(read(&plain, l), read(&cached, l));
            assert_eq!(read(&plain, l), read(&late, l));
        }
        assert_eq!(plain.held_bytes(), cached.held_bytes());
        late.truncate(2);
        plain.truncate(2);
        assert_eq!(read(&plain, 1), read(&late, 1));
    }

    #[test]
    fn plans_parse_and_print() {
        let p = CachePlan::parse("voronoi-e8-q16-s4", 3).unwrap();
        assert_eq!(p.label(), "voronoi-e8-q16-s4");
        assert_eq!(p.uniform_spec(), Some("voronoi-e8-q16-s4".parse().unwrap()));
        let p = CachePlan::parse("k=int8,v=turboquant-b3,raw=0:2", 3).unwrap();
        assert_eq!(p.label(), "k=int8,v=turboquant-b3,raw=0:2");
        assert_eq!(p.layers[0], LayerPlan { k: None, v: None });
        assert_eq!(p.uniform_spec(), None);
        assert!(
            (CachePlan::parse("bf16", 2)
                .unwrap()
                .bits_per_value(64)
                .unwrap()
                - 16.0)
                .abs()
                < 1e-12
        );
        assert!(CachePlan::parse("raw=3", 3).is_err());
        assert!(matches!(
            CachePlan::parse("voronoi-x", 3),
            Err(Error::InvalidCodecSpec { .. })
        ));
        assert!(CachePlan::parse("q=int8", 3).is_err());
    }

    #[test]
    fn misuse_is_an_error() {
        let mut s = ExactStore::new(SHAPE);
        assert!(matches!(
            s.append(2, &[], &[]),
            Err(Error::NoSuchLayer { .. })
        ));
        assert!(matches!(
            s.append(0, &[0.0; 65], &[0.0; 65]),
            Err(Error::LengthMismatch { .. })
        ));
        let mut c = CompressedStore::new(SHAPE, CachePlan::uniform(CodecSpec::Bf16, 2)).unwrap();
        let bad = vec![f32::NAN; 3 * 64];
        assert!(matches!(c.append(0, &bad, &bad), Err(Error::Codec { .. })));
        assert!(CompressedStore::new(SHAPE, CachePlan::uniform(CodecSpec::Bf16, 3)).is_err());
    }
}
