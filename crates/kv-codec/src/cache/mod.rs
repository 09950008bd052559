//! A streaming, paged KV cache that holds real packed bytes, with attention computed on the
//! compressed pages.
//!
//! [`KvCache`] holds, per layer, the keys and values of `[batch, kv_heads, seq, head_dim]`
//! tensors. Each stream (one batch row and KV head) keeps its tokens in pages of
//! [`CacheConfig::page_tokens`] tokens, and a page holds exactly the bytes a codec batch of
//! its tokens would ([`crate::VectorCodec::encode`]): the bits the codec advertises, up to
//! one byte per page. Nothing else is kept, except what a policy asks for: the f16 window of
//! recent tokens of the [`Kivi`] policy, and the sinks, recent window (f16 or int8) and key
//! offsets of a per-vector layer's [`Protection`]. Each layer has its own [`LayerPolicy`]: a codec or an
//! uncompressed dtype for K and for V ([`Storage`]) with its protection, or KIVI; a [`CachePlan`] (JSON, written by the audit's
//! planner) sets them per layer.
//!
//! * [`KvCache::append`] takes a prefill chunk or one decode token; vectors are coded on
//!   their own, so the bytes do not depend on how the tokens were chunked.
//! * [`KvCache::attend`] computes attention for the last positions' queries on the pages
//!   (GQA, causal, scale `1/√d`, the sliding window): keys are decoded one small block at a
//!   time in the codec's rotated domain, values are summed there, and each output is
//!   rotated back once (see the `attention` module).
//! * [`KvCache::crop`] rolls back (speculative decoding); [`KvCache::gather`] returns a
//!   token range as plain f32, f16 or bf16 tensors; [`KvCache::save`],
//!   [`KvCache::save_pages`] and [`KvCache::load`] write and read the cache file of
//!   FORMAT.md, whose every section is checksummed.
//! * [`KvCache::bytes_held`] counts the payload buffers actually allocated.
//!
//! Layers are locked separately, so different threads can append to (and attend over)
//! different layers at the same time through a shared `&KvCache`.
//!
//! ```
//! use kv_codec::cache::{CacheConfig, KvCache, LayerPolicy};
//! use kv_codec::{Input, Output};
//!
//! let spec = "voronoi-e8-q16-s4".parse()?;
//! let (batch, kv_heads, d) = (1, 2, 64);
//! let config = CacheConfig::new(batch, kv_heads, d, vec![LayerPolicy::codecs(spec, spec)])
//!     .with_page_tokens(16);
//! let cache = KvCache::new(config)?;
//!
//! // Prefill 20 tokens: keys and values are [batch, kv_heads, 20, d].
//! let kv: Vec<f32> = (0..batch * kv_heads * 20 * d).map(|i| (i as f32 * 0.37).sin()).collect();
//! cache.append(0, Input::F32(&kv), Input::F32(&kv))?;
//! assert_eq!(cache.len(0)?, 20);
//!
//! // One decode step: append the new token, then attend with 4 query heads (GQA 2).
//! let token: Vec<f32> = (0..batch * kv_heads * d).map(|i| (i as f32 * 0.11).cos()).collect();
//! cache.append(0, Input::F32(&token), Input::F32(&token))?;
//! let q = vec![0.1f32; batch * 4 * d];
//! let mut out = vec![0f32; q.len()];
//! cache.attend(0, Input::F32(&q), 4, Output::F32(&mut out))?;
//!
//! // 21 tokens: two pages of 16 per stream, K and V, of 283-bit vectors (11 + 16 + 4·64).
//! assert_eq!(cache.bytes_held(), 2 * 2 * 2 * (16 * 283 / 8));
//! # Ok::<(), kv_codec::Error>(())
//! ```

mod attention;
mod file;
mod kivi;
pub(crate) mod layer;
pub mod plan;
mod store;

use std::fmt;
use std::io::{Read, Write};
use std::ops::Range;
use std::str::FromStr;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

pub use file::{MAGIC as FILE_MAGIC, VERSION as FILE_VERSION};
pub use kivi::Kivi;
pub use plan::{CachePlan, LayerPlan};

use self::attention::Heads;
use self::layer::{Formats, Layer};
use crate::codec::{Input, Output, Par};
use crate::config::DEFAULT_SEED;
use crate::error::Error;
use crate::format::Dtype;
use crate::spec::CodecSpec;

/// How one of K or V of a layer is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Uncompressed values of this dtype (f16 and bf16 round to nearest even and saturate
    /// at their largest finite value).
    Dense(Dtype),
    /// Every vector coded by this codec (at the cache's head_dim and seed).
    Codec(CodecSpec),
}

/// Tokens a per-vector layer keeps beside its coded pages, and the offset its keys are
/// coded around. All zero (the default) codes every token as it is.
///
/// Measured on SmolLM2 (README, kv-eval): the keys of the most recent tokens and of the
/// first ("attention sink") tokens carry most of the attention mass, so coding errors there
/// cost far more next-token KL than anywhere else; and keys share a large per-head mean
/// (45–74% of their energy) that a relative-error codec pays for in every vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Protection {
    /// The first this many positions are also kept in the window format, and attention
    /// and `gather` read them from there (their coded copies in the pages are never read).
    pub sink_tokens: u16,
    /// The last this many tokens stay in a window (in the window format) and are coded
    /// only when they leave it (in order, one by one).
    pub recent_tokens: u16,
    /// When not zero, keys are coded minus a per-stream offset: the mean of the keys at
    /// positions `sink_tokens .. sink_tokens + key_centre_tokens` (as f16), fixed when the
    /// first token is coded; tokens wait in the window until those positions exist.
    /// Attention is unchanged by a constant key offset, and the codec's error shrinks with
    /// the norm it codes.
    pub key_centre_tokens: u16,
    /// How the window and sink tokens are held.
    #[serde(skip_serializing_if = "WindowFormat::is_f16")]
    pub window: WindowFormat,
}

impl Protection {
    /// No protection: every token coded as it is.
    pub const NONE: Self = Self {
        sink_tokens: 0,
        recent_tokens: 0,
        key_centre_tokens: 0,
        window: WindowFormat::F16,
    };

    /// Whether anything is kept beside the pages (the window format alone is not).
    pub fn is_none(&self) -> bool {
        Self {
            window: WindowFormat::F16,
            ..*self
        } == Self::NONE
    }
}

/// The format of a layer's window and sink tokens: what a protected token costs and how
/// exactly it is kept. Tokens that pass through the window are coded into the pages from
/// what the window holds, and tokens that skip it (when a chunk is longer than the window)
/// are first rounded to it, so the pages do not depend on how appends were chunked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowFormat {
    /// IEEE f16 values (16 bits per value), saturated at ±65504.
    #[default]
    F16,
    /// The `int8` codec (per-token absmax, f16 scale): 8 + 16/d bits per value, about half
    /// of f16's, so a window of twice the tokens for the same bytes.
    Int8,
}

/// The compact form `S:R:C`, with `:int8` appended for an int8 window (what kv-eval's
/// `protect=` plan item and `kvc plan --protect` take).
impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.sink_tokens, self.recent_tokens, self.key_centre_tokens
        )?;
        match self.window {
            WindowFormat::F16 => Ok(()),
            WindowFormat::Int8 => f.write_str(":int8"),
        }
    }
}

impl FromStr for Protection {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = || Error::BadProtection {
            text: text.to_owned(),
        };
        let mut it = text.split(':');
        let mut count = || it.next()?.parse::<u16>().ok();
        let (sink_tokens, recent_tokens, key_centre_tokens) = (
            count().ok_or_else(bad)?,
            count().ok_or_else(bad)?,
            count().ok_or_else(bad)?,
        );
        let window = match it.next() {
            None => WindowFormat::F16,
            Some("int8") => WindowFormat::Int8,
            Some(_) => return Err(bad()),
        };
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(Self {
            sink_tokens,
            recent_tokens,
            key_centre_tokens,
            window,
        })
    }
}

impl WindowFormat {
    /// Whether this is the f16 window (the default, left out of plan JSON).
    pub fn is_f16(&self) -> bool {
        *self == Self::F16
    }
}

/// What a layer stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerPolicy {
    /// K and V coded vector by vector (or held uncompressed).
    PerVector {
        /// Storage of the keys.
        k: Storage,
        /// Storage of the values.
        v: Storage,
        /// Tokens kept beside the pages, and the key offset.
        protection: Protection,
    },
    /// The KIVI baseline: keys per channel, values per token, recent tokens in f16.
    Kivi(Kivi),
}

impl LayerPolicy {
    /// K and V each coded by a codec.
    pub fn codecs(k: CodecSpec, v: CodecSpec) -> Self {
        Self::PerVector {
            k: Storage::Codec(k),
            v: Storage::Codec(v),
            protection: Protection::NONE,
        }
    }

    /// This policy with `protection` (per-vector layers; KIVI keeps its own window).
    pub fn with_protection(self, protection: Protection) -> Self {
        match self {
            Self::PerVector { k, v, .. } => Self::PerVector { k, v, protection },
            kivi @ Self::Kivi(_) => kivi,
        }
    }

    /// K and V uncompressed, in `dtype`.
    pub fn uncompressed(dtype: Dtype) -> Self {
        Self::PerVector {
            k: Storage::Dense(dtype),
            v: Storage::Dense(dtype),
            protection: Protection::NONE,
        }
    }
}

/// Keys or values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kv {
    /// Keys.
    K,
    /// Values.
    V,
}

/// Tokens per page when none is given.
pub const DEFAULT_PAGE_TOKENS: usize = 64;

/// Largest page, in tokens.
pub const MAX_PAGE_TOKENS: usize = 1 << 16;

/// The shape and policies of a [`KvCache`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Batch rows.
    pub batch: usize,
    /// KV heads per layer.
    pub kv_heads: usize,
    /// Values per head vector.
    pub head_dim: usize,
    /// Tokens per page (1..=[`MAX_PAGE_TOKENS`]).
    pub page_tokens: usize,
    /// The dtype appended keys and values must have.
    pub dtype: Dtype,
    /// When set, each query sees only the last this many positions (itself included), and
    /// pages no later query can see are dropped.
    pub sliding_window: Option<usize>,
    /// Seed of the codecs' rotation signs.
    pub seed: u64,
    /// How appends, gathers and attention spread over threads (the results are the same).
    pub par: Par,
    /// One policy per layer.
    pub layers: Vec<LayerPolicy>,
}

impl CacheConfig {
    /// A configuration with [`DEFAULT_PAGE_TOKENS`], f32 input, no sliding window, the
    /// default seed and rayon's pool.
    pub fn new(batch: usize, kv_heads: usize, head_dim: usize, layers: Vec<LayerPolicy>) -> Self {
        Self {
            batch,
            kv_heads,
            head_dim,
            page_tokens: DEFAULT_PAGE_TOKENS,
            dtype: Dtype::F32,
            sliding_window: None,
            seed: DEFAULT_SEED,
            par: Par::Rayon,
            layers,
        }
    }

    /// A configuration with the layers of a plan (see [`CachePlan`]).
    pub fn from_plan(plan: &CachePlan, batch: usize, kv_heads: usize, head_dim: usize) -> Self {
        Self::new(batch, kv_heads, head_dim, plan.policies())
    }

    /// Sets the tokens per page.
    pub fn with_page_tokens(mut self, page_tokens: usize) -> Self {
        self.page_tokens = page_tokens;
        self
    }

    /// Sets the dtype of appended keys and values.
    pub fn with_dtype(mut self, dtype: Dtype) -> Self {
        self.dtype = dtype;
        self
    }

    /// Sets a sliding window of `tokens`.
    pub fn with_sliding_window(mut self, tokens: usize) -> Self {
        self.sliding_window = Some(tokens);
        self
    }

    /// Sets the rotation seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the threading.
    pub fn with_par(mut self, par: Par) -> Self {
        self.par = par;
        self
    }

    /// Streams per layer: `batch · kv_heads`.
    pub fn streams(&self) -> usize {
        self.batch * self.kv_heads
    }

    /// Checks the sizes (every field the file header stores must fit it) and builds each
    /// layer's formats.
    fn formats(&self) -> Result<Vec<Formats>, Error> {
        let too_big = |name, value: usize, allowed| Error::InvalidParameter {
            name,
            value: value as u64,
            allowed,
        };
        let limit = u32::MAX as usize;
        if self.batch == 0 || self.batch > limit {
            return Err(too_big("batch", self.batch, "1..=2^32-1"));
        }
        if self.kv_heads == 0 || self.kv_heads > limit {
            return Err(too_big("kv_heads", self.kv_heads, "1..=2^32-1"));
        }
        if self.head_dim == 0 || self.head_dim > hadamard::MAX_LEN {
            return Err(Error::UnsupportedHeadDim {
                head_dim: self.head_dim,
            });
        }
        if !(1..=MAX_PAGE_TOKENS).contains(&self.page_tokens) {
            return Err(too_big("page_tokens", self.page_tokens, "1..=65536"));
        }
        if self.sliding_window == Some(0) {
            return Err(too_big("sliding_window", 0, "at least 1 token"));
        }
        if self.layers.is_empty() || self.layers.len() > limit {
            return Err(too_big("layers", self.layers.len(), "1..=2^32-1"));
        }
        self.layers
            .iter()
            .enumerate()
            .map(|(layer, &policy)| {
                Formats::new(policy, self.head_dim, self.page_tokens, self.seed).map_err(|e| {
                    Error::InvalidLayer {
                        layer,
                        source: Box::new(e),
                    }
                })
            })
            .collect()
    }
}

/// The paged KV cache (see the module docs).
#[derive(Debug)]
pub struct KvCache {
    config: CacheConfig,
    layers: Vec<RwLock<Layer>>,
}

/// Index of the first vector (of `d` values) holding a NaN or an infinity.
fn first_non_finite(x: Input<'_>, d: usize) -> Option<usize> {
    let index = match x {
        Input::F32(v) => v.iter().position(|x| !x.is_finite()),
        Input::F16(v) => v.iter().position(|x| !x.is_finite()),
        Input::Bf16(v) => v.iter().position(|x| !x.is_finite()),
    };
    index.map(|i| i / d)
}

impl KvCache {
    /// An empty cache.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for sizes out of range, [`Error::UnsupportedHeadDim`],
    /// [`Error::InvalidLayer`] for a layer policy the head_dim or page size does not
    /// support.
    pub fn new(config: CacheConfig) -> Result<Self, Error> {
        let formats = config.formats()?;
        let layers = config
            .layers
            .iter()
            .zip(formats)
            .map(|(&policy, fmt)| RwLock::new(Layer::new(policy, fmt, config.streams())))
            .collect();
        Ok(Self { config, layers })
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Number of layers.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    fn lock(&self, layer: usize) -> Result<&RwLock<Layer>, Error> {
        self.layers.get(layer).ok_or(Error::LayerOutOfRange {
            layer,
            layers: self.layers.len(),
        })
    }

    // A panic while a layer was locked happened before any change (appends and crops
    // check everything first), so the data behind a poisoned lock is still consistent.
    pub(crate) fn read(&self, layer: usize) -> Result<RwLockReadGuard<'_, Layer>, Error> {
        Ok(self
            .lock(layer)?
            .read()
            .unwrap_or_else(PoisonError::into_inner))
    }

    fn write(&self, layer: usize) -> Result<RwLockWriteGuard<'_, Layer>, Error> {
        Ok(self
            .lock(layer)?
            .write()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// Tokens appended to a layer (the position of the next token).
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`].
    pub fn len(&self, layer: usize) -> Result<usize, Error> {
        Ok(self.read(layer)?.pos.len)
    }

    /// Whether a layer holds no token.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`].
    pub fn is_empty(&self, layer: usize) -> Result<bool, Error> {
        Ok(self.len(layer)? == 0)
    }

    /// The positions a layer holds: from its first held page (after sliding-window
    /// evictions or a page-range load) to its length.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`].
    pub fn held(&self, layer: usize) -> Result<Range<usize>, Error> {
        let l = self.read(layer)?;
        Ok(l.held_start()..l.pos.len)
    }

    /// Payload bytes a layer holds: its pages (K and V, every stream) and the buffers of
    /// its window and sinks (allocated at their full size on first use). Struct overhead (a few
    /// dozen bytes per page) is not counted.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`].
    pub fn layer_bytes_held(&self, layer: usize) -> Result<usize, Error> {
        Ok(self.read(layer)?.bytes_held())
    }

    /// Payload bytes of every layer ([`KvCache::layer_bytes_held`]).
    pub fn bytes_held(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                l.read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .bytes_held()
            })
            .sum()
    }

    /// Appends `n` tokens to a layer: `k` and `v` are `[batch, kv_heads, n, head_dim]` in
    /// the cache's dtype (`n = 1` at decode time, a prefill chunk otherwise). On error
    /// nothing is appended.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`]; [`Error::DtypeMismatch`]; [`Error::LengthMismatch`]
    /// unless both have the same whole number of tokens; [`Error::NonFinite`] naming the
    /// first vector with a NaN or infinity (counting the keys' vectors, then the values').
    pub fn append(&self, layer: usize, k: Input<'_>, v: Input<'_>) -> Result<(), Error> {
        let c = &self.config;
        for (what, x) in [("keys", k), ("values", v)] {
            if x.dtype() != c.dtype {
                return Err(Error::DtypeMismatch {
                    what,
                    expected: c.dtype,
                    actual: x.dtype(),
                });
            }
        }
        let per_token = c.streams() * c.head_dim;
        if !k.len().is_multiple_of(per_token) {
            return Err(Error::LengthMismatch {
                what: "keys",
                expected: k.len().next_multiple_of(per_token),
                actual: k.len(),
            });
        }
        if v.len() != k.len() {
            return Err(Error::LengthMismatch {
                what: "values",
                expected: k.len(),
                actual: v.len(),
            });
        }
        let vectors = k.len() / c.head_dim;
        if let Some(i) = first_non_finite(k, c.head_dim)
            .or_else(|| first_non_finite(v, c.head_dim).map(|i| vectors + i))
        {
            return Err(Error::NonFinite { vector: i });
        }
        let mut l = self.write(layer)?;
        l.append(k, v, k.len() / per_token, c.sliding_window, c.par);
        Ok(())
    }

    /// Rolls every layer back to `len` tokens (speculative decoding). Layers shorter than
    /// `len` are left alone.
    ///
    /// # Errors
    /// [`Error::TokensNotHeld`] if some layer no longer holds position `len` (evicted by
    /// the sliding window or not loaded), checked before any layer changes;
    /// [`Error::CorruptPayload`] as [`KvCache::crop_layer`].
    pub fn crop(&self, len: usize) -> Result<(), Error> {
        let mut guards = (0..self.layers.len())
            .map(|l| self.write(l))
            .collect::<Result<Vec<_>, Error>>()?;
        if let Some(g) = guards
            .iter()
            .find(|g| len < g.pos.len && len < g.held_start())
        {
            return Err(g.not_held(len, g.pos.len));
        }
        for g in guards.iter_mut().filter(|g| len < g.pos.len) {
            g.crop(len)?;
        }
        Ok(())
    }

    /// Rolls one layer back to `len` tokens. Under KIVI, the tokens of a key group the new
    /// length cuts go back to the f16 window (their values as decoded).
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`]; [`Error::TokensNotHeld`] unless
    /// `held.start ≤ len ≤ held.end`; [`Error::CorruptPayload`] if the cut group does not
    /// decode (possible only for a crafted file).
    pub fn crop_layer(&self, layer: usize, len: usize) -> Result<(), Error> {
        self.write(layer)?.crop(len)
    }

    /// Tokens `range` of a layer's keys or values, decoded into `out` as
    /// `[batch, kv_heads, range.len(), head_dim]`.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`]; [`Error::TokensNotHeld`]; [`Error::LengthMismatch`];
    /// [`Error::CorruptPayload`] for bytes no encoder writes (a crafted file).
    pub fn gather(
        &self,
        layer: usize,
        kv: Kv,
        range: Range<usize>,
        out: Output<'_>,
    ) -> Result<(), Error> {
        self.read(layer)?.gather(kv, range, out, self.config.par)
    }

    /// Attention of the layer's last `n` positions: `queries` are
    /// `[batch, q_heads, n, head_dim]` (any dtype; `q_heads` a multiple of the KV heads,
    /// query head `h` reading KV head `h / (q_heads / kv_heads)`), and `out` receives
    /// `softmax(q·Kᵀ/√d)·V` in the same shape, query `i` seeing the keys at positions up to
    /// its own (`len − n + i`) and, with a sliding window `w`, after `len − n + i − w`.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`]; [`Error::HeadsMismatch`]; [`Error::LengthMismatch`];
    /// [`Error::TokensNotHeld`] when keys a query sees are not held (evicted, not loaded,
    /// or more queries than tokens); [`Error::CorruptPayload`].
    pub fn attend(
        &self,
        layer: usize,
        queries: Input<'_>,
        q_heads: usize,
        out: Output<'_>,
    ) -> Result<(), Error> {
        let c = &self.config;
        let heads = Heads {
            batch: c.batch,
            kv_heads: c.kv_heads,
            q_heads,
        };
        attention::attend(
            &*self.read(layer)?,
            heads,
            queries,
            c.sliding_window,
            out,
            c.par,
        )
    }

    /// Writes the whole cache to `w` in the cache-file format of FORMAT.md.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save<W: Write>(&self, w: &mut W) -> Result<(), Error> {
        file::save(self, w, None)
    }

    /// Writes pages `pages` (page `i` holds positions `i·P..(i+1)·P`) of every layer,
    /// with the f16 window when the range reaches it: loading the file gives a cache that
    /// holds those positions and continues from the range's end (a saved prompt prefix,
    /// say, or pages offloaded to disk).
    ///
    /// # Errors
    /// [`Error::TokensNotHeld`] when a layer holds none of those positions; [`Error::Io`].
    pub fn save_pages<W: Write>(&self, w: &mut W, pages: Range<usize>) -> Result<(), Error> {
        file::save(self, w, Some(pages))
    }

    /// Reads a cache written by [`KvCache::save`] or [`KvCache::save_pages`]. Every
    /// section's checksum is checked before the cache is returned, so a corrupted or
    /// truncated file yields an error and no cache.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::BadMagic`], [`Error::UnsupportedVersion`],
    /// [`Error::CorruptHeader`] (a field out of range or a checksum mismatch),
    /// [`Error::UnknownCodecId`], [`Error::CorruptPayload`] (a non-finite f16 in a window),
    /// [`Error::Io`].
    pub fn load<R: Read>(r: &mut R) -> Result<Self, Error> {
        file::load(r)
    }
}
