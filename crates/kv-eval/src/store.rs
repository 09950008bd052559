//! The KV store the model runner writes K and V into and attends through: a small trait of
//! this crate, so that any cache can be measured end to end, with two implementations —
//! [`ExactStore`] (f32, the reference) and [`CacheStore`] (kv-codec's paged [`KvCache`],
//! any codec or KIVI per layer as a [`CachePlan`] says, holding real packed bytes).
//!
//! A store holds, per layer and KV head, the K and V vectors of every token so far in
//! order. The model appends a layer's new vectors and then asks the store to attend; the
//! default [`KvStore::attend`] reads every vector back ([`KvStore::read`]) and runs the
//! reference [`attention`].
//!
//! # The paged cache as a store
//! [`CacheStore`] wraps a `KvCache` of batch 1 and f32 input, whose layouts are this trait's
//! with a leading batch dimension (`[1, kv_heads, n, head_dim]`): `append` is
//! [`KvCache::append`], `tokens` is `len`, `read` is [`KvCache::gather`] of every position,
//! `truncate` is [`KvCache::crop`] and `held_bytes` is [`KvCache::bytes_held`]. How it
//! attends is an [`AttentionPath`]:
//!
//! * [`AttentionPath::Pages`] (the default): [`KvCache::attend`], attention computed on the
//!   compressed pages, every page decoded (in the codec's rotated domain) at every step, as
//!   an engine running on the cache would;
//! * [`AttentionPath::DecodedCopy`]: the store also keeps an f32 copy of what the cache's
//!   bytes decode to, gathered from the cache once per appended token (and again, for
//!   the tokens of an f16 window, until they are coded), and attends over the copy with
//!   the reference [`attention`]. Faster when many plans run side by side (the pages
//!   path decodes every page of every layer at every step: at a 512-token prefix on 2
//!   cores, a decode step of the 25-plan sweep took 0.49 s on the pages, 0.22 s over
//!   copies); the values are the cache's own, so the next-token distributions equal the
//!   pages path's up to f32 rounding (the pages path sums in the rotated domain and in
//!   another order): from the same cache the two give log-probabilities within a few
//!   1e-5 (the smoke test measures it on the model and bounds it at 5e-4).
//!
//! Over a decoded continuation the two paths are not the same experiment token for token:
//! their attention outputs differ in the last bits, so do the next token's K and V, and a
//! quantiser can put such a vector on the other side of a decision boundary (a different
//! lattice point or scale choice); from then on the two caches hold different, equally
//! likely quantisation noise. Means over passages agree within their intervals, single
//! tokens need not.

use std::fmt;

use candle_core::{Device, Tensor};
use kv_codec::cache::{CacheConfig, Kv, KvCache};
use kv_codec::{Input, Output};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::attention::attention;
use crate::error::{Error, Result};
use crate::plan::{CachePlan, LayerChoice, unsettled_tail};

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
    /// The default reads the layer and runs the reference [`attention`].
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
    ///
    /// # Errors
    /// The store's own (kv-codec's cache refuses to crop tokens it no longer holds).
    fn truncate(&mut self, tokens: usize) -> Result<()>;

    /// Bytes held for the vectors (payload only, not bookkeeping).
    fn held_bytes(&self) -> usize;
}

/// Copies every vector of `src` into `dst` (which then holds them as its own format does:
/// a [`CacheStore`] codes them). Used to give several stores the same prefix from one
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

/// How a [`CacheStore`] attends (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionPath {
    /// kv-codec's attention on the compressed pages.
    #[default]
    Pages,
    /// The reference attention over a decoded f32 copy gathered from the cache.
    DecodedCopy,
}

/// One store per row of a batch: row 0 a copy of `exact`, then one [`CacheStore`] per plan
/// holding `exact`'s vectors coded (built in parallel), attending by `path`.
///
/// # Errors
/// Plan, codec and shape errors.
pub fn rows_from(
    exact: &ExactStore,
    plans: &[CachePlan],
    path: AttentionPath,
) -> Result<Vec<Box<dyn KvStore>>> {
    let coded: Vec<CacheStore> = plans
        .par_iter()
        .map(|plan| {
            let mut s = CacheStore::new(exact.shape(), plan.clone(), path)?;
            copy_into(exact, &mut s)?;
            Ok(s)
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

impl ExactStore {
    /// Keeps the first `tokens` tokens of one layer.
    fn truncate_layer(&mut self, layer: usize, tokens: usize) {
        let keep = tokens * self.shape.head_dim;
        for s in self.k[layer].iter_mut().chain(self.v[layer].iter_mut()) {
            s.truncate(keep);
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

    fn truncate(&mut self, tokens: usize) -> Result<()> {
        for layer in 0..self.shape.layers {
            self.truncate_layer(layer, tokens);
        }
        Ok(())
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

/// A store on kv-codec's paged [`KvCache`] (batch 1, f32 input, the default seed, pages of
/// [`page_tokens`] tokens), following a [`CachePlan`]; see the module documentation for
/// how it maps onto the cache and how it attends.
#[derive(Debug)]
pub struct CacheStore {
    shape: StoreShape,
    plan: CachePlan,
    cache: KvCache,
    /// With [`AttentionPath::DecodedCopy`]: what the cache's bytes decode to.
    decoded: Option<DecodedCopy>,
}

/// The decoded copy of a [`CacheStore`].
#[derive(Debug)]
struct DecodedCopy {
    values: ExactStore,
    /// Per layer, the most recent tokens gathered again after each append
    /// ([`unsettled_tail`]).
    unsettled: Vec<usize>,
}

/// Tokens per page of a plan's cache: 16 (vLLM's default block, so that page rounding adds
/// little to [`KvStore::held_bytes`]), or the least common multiple of 16 and the groups of
/// the plan's KIVI layers (a KIVI key group must not straddle pages).
pub fn page_tokens(plan: &CachePlan) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    plan.layers.iter().fold(16, |p, l| match l {
        LayerChoice::Kivi(k) if k.group > 0 => {
            let g = k.group as usize;
            // Saturating: an absurd group gives an absurd page size, which the cache
            // then refuses with an error.
            (p / gcd(p, g)).saturating_mul(g)
        }
        _ => p,
    })
}

fn cache_error(source: kv_codec::Error) -> Error {
    Error::Cache { source }
}

impl CacheStore {
    /// An empty store following `plan`, attending by `path`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when the plan has the wrong number of layers;
    /// [`Error::Cache`] when the cache rejects a layer's policy at this shape.
    pub fn new(shape: StoreShape, plan: CachePlan, path: AttentionPath) -> Result<Self> {
        if plan.layers.len() != shape.layers {
            return Err(Error::LengthMismatch {
                what: "cache plan layers",
                expected: shape.layers,
                actual: plan.layers.len(),
            });
        }
        let config = CacheConfig::new(1, shape.kv_heads, shape.head_dim, plan.policies())
            .with_page_tokens(page_tokens(&plan));
        let cache = KvCache::new(config).map_err(cache_error)?;
        let decoded = (path == AttentionPath::DecodedCopy).then(|| DecodedCopy {
            values: ExactStore::new(shape),
            unsettled: plan.layers.iter().map(unsettled_tail).collect(),
        });
        Ok(Self {
            shape,
            plan,
            cache,
            decoded,
        })
    }

    /// The plan this store follows.
    pub fn plan(&self) -> &CachePlan {
        &self.plan
    }

    /// The cache itself.
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// How this store attends.
    pub fn path(&self) -> AttentionPath {
        if self.decoded.is_some() {
            AttentionPath::DecodedCopy
        } else {
            AttentionPath::Pages
        }
    }

    /// Positions `from..to` of a layer's K and V, decoded from the cache, each
    /// `[kv_heads, to − from, head_dim]`, into the cleared buffers.
    fn gather(
        &self,
        layer: usize,
        from: usize,
        to: usize,
        k: &mut Vec<f32>,
        v: &mut Vec<f32>,
    ) -> Result<()> {
        let len = (to - from) * self.shape.token_len();
        for (kind, out) in [(Kv::K, k), (Kv::V, v)] {
            out.clear();
            out.resize(len, 0.0);
            self.cache
                .gather(layer, kind, from..to, Output::F32(out))
                .map_err(cache_error)?;
        }
        Ok(())
    }
}

impl KvStore for CacheStore {
    fn shape(&self) -> StoreShape {
        self.shape
    }

    fn tokens(&self, layer: usize) -> usize {
        self.cache.len(layer).unwrap_or(0)
    }

    fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) -> Result<()> {
        self.shape.check_layer(layer)?;
        self.shape.tokens_in(k.len(), "appended K")?;
        let before = self.tokens(layer);
        self.cache
            .append(layer, Input::F32(k), Input::F32(v))
            .map_err(cache_error)?;
        let Some(copy) = &self.decoded else {
            return Ok(());
        };
        // The new tokens, and those of an f16 window that may have been coded by this
        // append, as the cache now decodes them.
        let from = before.saturating_sub(copy.unsettled[layer]);
        let to = self.tokens(layer);
        let (mut dk, mut dv) = (Vec::new(), Vec::new());
        self.gather(layer, from, to, &mut dk, &mut dv)?;
        let copy = self.decoded.as_mut().expect("checked above");
        copy.values.truncate_layer(layer, from);
        copy.values.append(layer, &dk, &dv)
    }

    fn read(&self, layer: usize, k: &mut Vec<f32>, v: &mut Vec<f32>) -> Result<()> {
        self.shape.check_layer(layer)?;
        match &self.decoded {
            Some(copy) => copy.values.read(layer, k, v),
            None => self.gather(layer, 0, self.tokens(layer), k, v),
        }
    }

    fn attend(&self, layer: usize, q: &Tensor) -> Result<Tensor> {
        if let Some(copy) = &self.decoded {
            return copy.values.attend(layer, q);
        }
        let (q_heads, n, d) = q.dims3()?;
        let queries = q.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; queries.len()];
        self.cache
            .attend(layer, Input::F32(&queries), q_heads, Output::F32(&mut out))
            .map_err(cache_error)?;
        Ok(Tensor::from_vec(out, (q_heads, n, d), q.device())?)
    }

    fn truncate(&mut self, tokens: usize) -> Result<()> {
        self.cache.crop(tokens).map_err(cache_error)?;
        if let Some(copy) = &mut self.decoded {
            copy.values.truncate(tokens)?;
        }
        Ok(())
    }

    fn held_bytes(&self) -> usize {
        self.cache.bytes_held()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_codec::cache::Kivi;
    use kv_codec::{CodecConfig, CodecSpec};

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
                let v: Vec<f32> = k.iter().map(|x| -0.5 * x).collect();
                store.append(l, &k, &v).unwrap();
            }
            at += n;
        }
    }

    fn read(s: &dyn KvStore, l: usize) -> (Vec<f32>, Vec<f32>) {
        let (mut k, mut v) = (vec![], vec![]);
        s.read(l, &mut k, &mut v).unwrap();
        (k, v)
    }

    /// The cache file of a store: every byte it holds.
    fn bytes(s: &CacheStore) -> Vec<u8> {
        let mut out = Vec::new();
        s.cache().save(&mut out).unwrap();
        out
    }

    /// A small KIVI (groups of 8, 4 recent tokens) so that a few dozen tokens flush groups.
    const KIVI: Kivi = Kivi {
        bits: 3,
        group: 8,
        residual: 4,
    };

    /// Plans over the two layers: codecs (whole-byte and not), mixed with f16 and KIVI.
    fn plans() -> Vec<CachePlan> {
        let spec = |s: &str| s.parse::<CodecSpec>().unwrap();
        vec![
            CachePlan::parse("voronoi-e8-q6-s3", 2).unwrap(),
            CachePlan::parse("k=turboquant-b3,v=int4,raw=1", 2).unwrap(),
            CachePlan::parse("voronoi-e8-q9-s2,protect=2:3:4", 2).unwrap(),
            CachePlan {
                layers: vec![
                    LayerChoice::codecs(Some(spec("compat-d4-q8")), None),
                    LayerChoice::Kivi(KIVI),
                ],
                name: None,
            },
        ]
    }

    fn store(plan: &CachePlan, path: AttentionPath) -> CacheStore {
        CacheStore::new(SHAPE, plan.clone(), path).unwrap()
    }

    const PATHS: [AttentionPath; 2] = [AttentionPath::Pages, AttentionPath::DecodedCopy];

    #[test]
    fn exact_store_returns_what_was_appended_whatever_the_chunking() {
        let mut a = ExactStore::new(SHAPE);
        let mut b = ExactStore::new(SHAPE);
        fill(&mut a, &[5]);
        fill(&mut b, &[1, 3, 1]);
        for l in 0..SHAPE.layers {
            assert_eq!(read(&a, l).0, token_block(l, 0, 5));
            assert_eq!(read(&a, l), read(&b, l));
        }
        assert_eq!(a.tokens(1), 5);
        assert_eq!(a.held_bytes(), 2 * 2 * 3 * 5 * 64 * 4);
    }

    #[test]
    fn cache_store_bytes_do_not_depend_on_the_chunking() {
        for plan in plans() {
            for path in PATHS {
                let mut a = store(&plan, path);
                let mut b = store(&plan, path);
                fill(&mut a, &[37]);
                fill(&mut b, &[1, 3, 1, 20, 1, 1, 10]);
                assert_eq!(bytes(&a), bytes(&b), "{}", plan.label());
                for l in 0..SHAPE.layers {
                    assert_eq!(read(&a, l), read(&b, l), "{}", plan.label());
                }
                assert_eq!(a.tokens(1), 37);
            }
        }
    }

    #[test]
    fn held_bytes_are_the_caches() {
        // 190 bits per vector: not a whole number of bytes.
        let spec: CodecSpec = "voronoi-e8-q6-s3".parse().unwrap();
        let bits = CodecConfig::new(spec, 64)
            .build()
            .unwrap()
            .bits_per_vector() as usize;
        assert_ne!(bits % 8, 0);
        for path in PATHS {
            let mut s = store(&CachePlan::uniform(spec, 2), path);
            fill(&mut s, &[8, 9]);
            assert_eq!(s.held_bytes(), s.cache().bytes_held());
            // 17 tokens: two pages of 16 per stream (layers × heads × K and V), each
            // exactly the codec's bits for 16 vectors.
            assert_eq!(s.held_bytes(), 2 * 3 * 2 * 2 * (16 * bits).div_ceil(8));
        }
        assert_eq!(page_tokens(&plans()[2]), 16);
        let wide = CachePlan::parse("kivi-b2-g32-r32", 2).unwrap();
        assert_eq!(page_tokens(&wide), 32);
    }

    #[test]
    fn the_decoded_copy_is_what_the_cache_decodes_at_every_step() {
        for plan in plans() {
            let mut pages = store(&plan, AttentionPath::Pages);
            let mut copy = store(&plan, AttentionPath::DecodedCopy);
            assert_eq!(copy.path(), AttentionPath::DecodedCopy);
            fill(&mut pages, &[5]);
            fill(&mut copy, &[5]);
            // Token by token past several KIVI flushes, then a crop and more tokens.
            for t in 5..45 {
                fill_from(&mut pages, t, &[1]);
                fill_from(&mut copy, t, &[1]);
                for l in 0..SHAPE.layers {
                    assert_eq!(read(&pages, l), read(&copy, l), "{} at {t}", plan.label());
                }
            }
            pages.truncate(30).unwrap();
            copy.truncate(30).unwrap();
            fill_from(&mut pages, 60, &[3, 1, 12]);
            fill_from(&mut copy, 60, &[3, 1, 12]);
            for l in 0..SHAPE.layers {
                assert_eq!(read(&pages, l), read(&copy, l), "{}", plan.label());
            }
            assert_eq!(pages.held_bytes(), copy.held_bytes());
        }
    }

    #[test]
    fn truncation_then_append_gives_the_same_bytes() {
        // Per-vector plans only: a KIVI crop that cuts a key group returns its tokens to the
        // f16 window as decoded, so KIVI's state after a crop depends on its history (the
        // decoded copy still follows it; see the test above).
        for plan in &plans()[..2] {
            let mut a = store(plan, AttentionPath::DecodedCopy);
            let mut b = store(plan, AttentionPath::DecodedCopy);
            fill(&mut a, &[21]);
            fill(&mut b, &[30]);
            b.truncate(21).unwrap();
            assert_eq!(b.tokens(0), 21);
            // Then tokens that differ from the ones dropped.
            fill_from(&mut a, 50, &[4]);
            fill_from(&mut b, 50, &[4]);
            assert_eq!(bytes(&a), bytes(&b), "{}", plan.label());
            for l in 0..SHAPE.layers {
                assert_eq!(read(&a, l), read(&b, l), "{}", plan.label());
            }
        }
    }

    /// Query heads of GQA 3: `[9, n, d]`.
    fn queries(n: usize, seed: usize) -> Tensor {
        let q: Vec<f32> = (0..9 * n * 64)
            .map(|i| ((i * 13 + seed) as f32 * 0.61).sin() * 2.0)
            .collect();
        Tensor::from_vec(q, (9, n, 64), &Device::Cpu).unwrap()
    }

    #[test]
    fn both_attention_paths_agree() {
        for plan in plans() {
            let mut pages = store(&plan, AttentionPath::Pages);
            let mut copy = store(&plan, AttentionPath::DecodedCopy);
            // A prefix over several pages and attention blocks, then decode steps.
            fill(&mut pages, &[200]);
            fill(&mut copy, &[200]);
            for step in 0..4 {
                fill_from(&mut pages, 200 + step, &[1]);
                fill_from(&mut copy, 200 + step, &[1]);
                for (n, seed) in [(1, 3), (4, 7)] {
                    for l in 0..SHAPE.layers {
                        let q = queries(n, seed + l);
                        let a = pages.attend(l, &q).unwrap();
                        let b = copy.attend(l, &q).unwrap();
                        assert_eq!(a.dims(), b.dims());
                        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
                        let err = a
                            .iter()
                            .zip(&b)
                            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                        assert!(
                            err <= 1e-5 * scale,
                            "{} step {step} layer {l}, {n} queries: {err} of {scale}",
                            plan.label()
                        );
                    }
                }
            }
        }
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
        let bf16 = CachePlan::uniform(CodecSpec::Bf16, 2);
        let mut c = store(&bf16, AttentionPath::Pages);
        let bad = vec![f32::NAN; 3 * 64];
        assert!(matches!(c.append(0, &bad, &bad), Err(Error::Cache { .. })));
        assert!(matches!(
            c.append(2, &bad, &bad),
            Err(Error::NoSuchLayer { .. })
        ));
        assert_eq!(c.tokens(0), 0);
        let three = CachePlan::uniform(CodecSpec::Bf16, 3);
        assert!(matches!(
            CacheStore::new(SHAPE, three, AttentionPath::Pages),
            Err(Error::LengthMismatch { .. })
        ));
        // A KIVI group that does not divide head_dim.
        let odd = CachePlan::parse("kivi-b2-g5-r8", 2).unwrap();
        assert!(matches!(
            CacheStore::new(SHAPE, odd, AttentionPath::Pages),
            Err(Error::Cache { .. })
        ));
    }
}
