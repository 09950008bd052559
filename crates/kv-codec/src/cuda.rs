//! The CUDA backend (feature `cuda`): kv-codec's codecs described to `kv-cuda`'s kernels, a
//! [`CudaCodec`] that runs batch calls on a GPU, and the device types for callers that keep
//! their K/V in device memory.
//!
//! The CPU codecs are the specification: [`kernel_codec`] reads the numbers a codec's kernels
//! need from the CPU codec itself (its scale multipliers, its Lloyd–Max levels), and
//! [`CudaCodec`] checks that the kernels' size per vector equals the CPU codec's.
//!
//! [`DeviceLayer`] keeps one cache layer's K and V pages in device memory (copied from a CPU
//! [`KvCache`] or appended from device tensors and encoded there: the same bytes either way)
//! and computes decode attention on them without decoding them to memory.
//!
//! Codecs on the GPU: `voronoi-e8-q<q>-s<k>` (q ≤ 256), `compat-d4-q<Q>[-joint]` and
//! `compat-e8-q<Q>[-joint]` (boxes of fewer than 2^64 points), `turboquant-b<b>`,
//! `fp8-e4m3[-g<n>]`, `int<b>[-g<n>]` and `bf16`, at head dimensions that are multiples of 8
//! up to 256 (groups multiples of 8). Not yet: `q8_0`/`q4_0` and the strawman. Others return
//! [`Error::Cuda`] with [`kv_cuda::Error::Unsupported`].

use std::sync::Arc;

use half::slice::HalfFloatSliceExt;

pub use kv_cuda::Error as CudaError;
pub use kv_cuda::{
    BoxLattice, Device, DeviceAttention, DeviceBuffer, DevicePages, DevicePlan, Dtype, KernelCodec,
    Launch, Op, PagePool, PagesShape, Plan, Values, ValuesMut, is_available, kernel_source,
};

use crate::cache::{CacheConfig, KvCache, LayerPolicy, Storage};
use crate::codec::{Input, Output, VectorCodec};
use crate::codecs::baselines::turboquant::TurboQuantCodec;
use crate::codecs::compat::CompatCodec;
use crate::codecs::voronoi::VoronoiCodec;
use crate::config::CodecConfig;
use crate::error::Error;
use crate::spec::{CodecSpec, CompatLattice};

/// The kernels' description of the codec `config` builds.
///
/// # Errors
/// The codec's own parameter errors; [`Error::Cuda`] with [`kv_cuda::Error::Unsupported`]
/// for a codec that has no kernels.
pub fn kernel_codec(config: &CodecConfig) -> Result<KernelCodec, Error> {
    let d = config.head_dim;
    let whole = |group: u32| if group == 0 { d } else { group as usize };
    Ok(match config.spec {
        spec @ CodecSpec::Voronoi { q, .. } => {
            let codec = VoronoiCodec::new(spec, d, config.seed)?;
            KernelCodec::Voronoi {
                head_dim: d,
                seed: config.seed,
                q,
                fill_q: codec.fill_q(),
                alphas: codec.alphas().to_vec(),
            }
        }
        spec @ CodecSpec::TurboQuant { bits } => {
            let codec = TurboQuantCodec::new(spec, d, config.seed)?;
            KernelCodec::TurboQuant {
                head_dim: d,
                seed: config.seed,
                bits,
                levels: codec.levels().to_vec(),
                thresholds: codec.thresholds().to_vec(),
            }
        }
        CodecSpec::Fp8E4m3 { group } => KernelCodec::Fp8E4m3 {
            head_dim: d,
            group: whole(group),
        },
        CodecSpec::Int { bits, group } => KernelCodec::Int {
            head_dim: d,
            bits,
            group: whole(group),
        },
        CodecSpec::Bf16 => KernelCodec::Bf16 { head_dim: d },
        spec @ CodecSpec::Compat { lattice, q, joint } => {
            // Builds the CPU codec for its parameter and head_dim checks.
            CompatCodec::new(spec, d)?;
            KernelCodec::Compat {
                head_dim: d,
                lattice: match lattice {
                    CompatLattice::D4 => BoxLattice::D4,
                    CompatLattice::E8 => BoxLattice::E8,
                },
                q,
                joint,
            }
        }
        other => {
            let (id, _) = other.wire();
            return Err(Error::Cuda(kv_cuda::Error::Unsupported {
                what: "codec id",
                value: u64::from(id),
                supported: "voronoi-e8, compat, turboquant, fp8-e4m3, int, bf16",
            }));
        }
    })
}

/// Maps the kernels' data faults to the CPU codec's errors (so both backends report the
/// same `Error` for the same bad input), and everything else to [`Error::Cuda`].
fn from_cuda(e: kv_cuda::Error) -> Error {
    match e {
        kv_cuda::Error::NonFinite { vector } => Error::NonFinite { vector },
        kv_cuda::Error::CorruptPayload { vector, reason } => {
            Error::CorruptPayload { vector, reason }
        }
        kv_cuda::Error::LengthMismatch {
            what,
            expected,
            actual,
        } => Error::LengthMismatch {
            what,
            expected,
            actual,
        },
        other => Error::Cuda(other),
    }
}

/// A codec whose batch calls run on a GPU; single-vector calls run the CPU codec (the same
/// bytes either way).
#[derive(Debug)]
pub struct CudaCodec {
    cpu: Box<dyn VectorCodec>,
    plan: DevicePlan,
}

impl CudaCodec {
    /// The codec `config` builds, on CUDA device `ordinal`.
    ///
    /// # Errors
    /// As [`kernel_codec`]; [`Error::Cuda`] for device failures.
    ///
    /// # Panics
    /// If the kernels' bits per vector differ from the CPU codec's (a bug).
    pub fn new(config: &CodecConfig, ordinal: usize) -> Result<Self, Error> {
        let cpu = config.build()?;
        let plan = Plan::new(kernel_codec(config)?)?;
        assert_eq!(
            plan.bits_per_vector(),
            cpu.bits_per_vector(),
            "kernel and CPU sizes differ for {}",
            config.spec
        );
        let device = Arc::new(Device::new(ordinal)?);
        let plan = device.load(plan)?;
        Ok(Self { cpu, plan })
    }

    /// The plan loaded on the device, for callers whose K/V already sit in device memory
    /// ([`DevicePlan::encode`], [`DevicePlan::decode`]).
    pub fn device_plan(&self) -> &DevicePlan {
        &self.plan
    }

    fn vectors(&self, values: usize, what: &'static str) -> Result<usize, Error> {
        let d = self.cpu.head_dim();
        if values.is_multiple_of(d) {
            Ok(values / d)
        } else {
            Err(Error::LengthMismatch {
                what,
                expected: values.next_multiple_of(d),
                actual: values,
            })
        }
    }
}

impl VectorCodec for CudaCodec {
    fn spec(&self) -> CodecSpec {
        self.cpu.spec()
    }

    fn head_dim(&self) -> usize {
        self.cpu.head_dim()
    }

    fn bits_per_vector(&self) -> u32 {
        self.cpu.bits_per_vector()
    }

    fn scratch_len(&self) -> usize {
        self.cpu.scratch_len()
    }

    fn encode_vector(&self, x: &[f32], out: &mut [u8], scratch: &mut [f32]) {
        self.cpu.encode_vector(x, out, scratch);
    }

    fn decode_vector(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), &'static str> {
        self.cpu.decode_vector(bytes, out, scratch)
    }

    fn encode_vectors(&self, x: &[f32], out: &mut [u8]) {
        self.cpu.encode_vectors(x, out);
    }

    fn decode_vectors(&self, bytes: &[u8], out: &mut [f32]) -> Result<(), (usize, &'static str)> {
        self.cpu.decode_vectors(bytes, out)
    }

    fn encode(&self, input: Input<'_>, out: &mut [u8]) -> Result<(), Error> {
        let values = match input {
            Input::F32(v) => v.len(),
            Input::F16(v) => v.len(),
            Input::Bf16(v) => v.len(),
        };
        let n = self.vectors(values, "input")?;
        let expected = self.encoded_len(n);
        if out.len() != expected {
            return Err(Error::LengthMismatch {
                what: "encoded output",
                expected,
                actual: out.len(),
            });
        }
        let device = self.plan.device();
        let mut bytes = device.zeros::<u8>(out.len())?;
        match input {
            Input::F32(v) => {
                let x = device.upload(v)?;
                self.plan.encode(Values::F32(&x), &mut bytes)
            }
            Input::F16(v) => {
                let x = device.upload(v.reinterpret_cast())?;
                self.plan.encode(Values::F16(&x), &mut bytes)
            }
            Input::Bf16(v) => {
                let x = device.upload(v.reinterpret_cast())?;
                self.plan.encode(Values::Bf16(&x), &mut bytes)
            }
        }
        .map_err(from_cuda)?;
        device.download(&bytes, out).map_err(from_cuda)
    }

    fn decode(&self, bytes: &[u8], out: Output<'_>) -> Result<(), Error> {
        let values = match &out {
            Output::F32(v) => v.len(),
            Output::F16(v) => v.len(),
            Output::Bf16(v) => v.len(),
        };
        let n = self.vectors(values, "decoded output")?;
        let expected = self.encoded_len(n);
        if bytes.len() != expected {
            return Err(Error::LengthMismatch {
                what: "encoded input",
                expected,
                actual: bytes.len(),
            });
        }
        let device = self.plan.device();
        let src = device.upload(bytes)?;
        match out {
            Output::F32(v) => {
                let mut y = device.zeros::<f32>(v.len())?;
                self.plan
                    .decode(&src, ValuesMut::F32(&mut y))
                    .map_err(from_cuda)?;
                device.download(&y, v)?;
            }
            Output::F16(v) => {
                let mut y = device.zeros::<u16>(v.len())?;
                self.plan
                    .decode(&src, ValuesMut::F16(&mut y))
                    .map_err(from_cuda)?;
                device.download(&y, v.reinterpret_cast_mut())?;
            }
            Output::Bf16(v) => {
                let mut y = device.zeros::<u16>(v.len())?;
                self.plan
                    .decode(&src, ValuesMut::Bf16(&mut y))
                    .map_err(from_cuda)?;
                device.download(&y, v.reinterpret_cast_mut())?;
            }
        }
        Ok(())
    }
}

/// One layer of a cache in device memory: its K and V pages (the bytes a CPU [`KvCache`]
/// holds for them) and decode attention over them ([`DeviceAttention`]).
///
/// Tokens come from a CPU cache ([`DeviceLayer::from_cache`], which copies its pages) or
/// from device tensors ([`DeviceLayer::append`], which encodes them on the GPU and ORs their
/// bits into the pages); both give the same bytes. [`DeviceLayer::attend`] computes, for
/// one query position per batch row (the next token's, seeing every token held),
/// `softmax(q·Kᵀ/√d)·V` as [`KvCache::attend`] does, within f32 rounding.
///
/// Layers whose K and V are both coded by a codec with attention kernels (`voronoi-e8` with
/// q and the scale count powers of two, `turboquant`, `fp8-e4m3`, `int`, `bf16`) and no
/// sliding window are supported; others return [`Error::Cuda`] with
/// [`kv_cuda::Error::Unsupported`].
#[derive(Debug)]
pub struct DeviceLayer {
    attention: DeviceAttention,
    pages: DevicePages,
    head_dim: usize,
    len: usize,
}

fn unsupported_layer(what: &'static str, value: u64, supported: &'static str) -> Error {
    Error::Cuda(kv_cuda::Error::Unsupported {
        what,
        value,
        supported,
    })
}

fn values_len(v: &Values<'_>) -> usize {
    match v {
        Values::F32(b) => b.len(),
        Values::F16(b) | Values::Bf16(b) => b.len(),
    }
}

impl DeviceLayer {
    /// Empty pages for layer `layer` of a cache configured by `config`, for up to `capacity`
    /// tokens per stream, on `device`.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`]; [`Error::Cuda`] for layer policies without attention
    /// kernels (see the type's docs), sizes beyond the kernels' and device failures; the
    /// codecs' own parameter errors.
    ///
    /// # Panics
    /// If the kernels' bits per vector differ from the CPU codec's (a bug).
    pub fn new(
        device: &Arc<Device>,
        config: &CacheConfig,
        layer: usize,
        capacity: usize,
    ) -> Result<Self, Error> {
        let policy = *config.layers.get(layer).ok_or(Error::LayerOutOfRange {
            layer,
            layers: config.layers.len(),
        })?;
        let LayerPolicy::PerVector {
            k: Storage::Codec(k),
            v: Storage::Codec(v),
            protection,
        } = policy
        else {
            return Err(unsupported_layer(
                "layer policy of layer",
                layer as u64,
                "K and V both coded by a codec (no dense storage, no KIVI)",
            ));
        };
        if !protection.is_none() {
            return Err(unsupported_layer(
                "protected (sinks, recent window or key offset) layer",
                layer as u64,
                "no protection: the device kernels read pages only",
            ));
        }
        if let Some(w) = config.sliding_window {
            return Err(unsupported_layer(
                "sliding window",
                w as u64,
                "no sliding window",
            ));
        }
        let d = config.head_dim;
        let plan = |spec| -> Result<Plan, Error> {
            let codec = CodecConfig::new(spec, d).with_seed(config.seed);
            let cpu = codec.build()?;
            let plan = Plan::new(kernel_codec(&codec)?)?;
            assert_eq!(
                plan.bits_per_vector(),
                cpu.bits_per_vector(),
                "kernel and CPU sizes differ for {spec}"
            );
            Ok(plan)
        };
        let (k, v) = (plan(k)?, plan(v)?);
        let shape = PagesShape {
            batch: config.batch,
            kv_heads: config.kv_heads,
            page_tokens: config.page_tokens,
            max_pages: capacity.div_ceil(config.page_tokens).max(1),
        };
        let pages = DevicePages::new(device, shape, k.bits_per_vector(), v.bits_per_vector())?;
        let attention = DeviceAttention::new(device, k, v)?;
        Ok(Self {
            attention,
            pages,
            head_dim: d,
            len: 0,
        })
    }

    /// A copy of layer `layer` of `cache` (its pages, byte for byte), with room for
    /// `capacity` tokens per stream (at least the layer's length).
    ///
    /// # Errors
    /// As [`DeviceLayer::new`]; [`Error::TokensNotHeld`] when the layer no longer holds its
    /// first tokens (evicted or loaded from a page range).
    pub fn from_cache(
        device: &Arc<Device>,
        cache: &KvCache,
        layer: usize,
        capacity: usize,
    ) -> Result<Self, Error> {
        let l = cache.read(layer)?;
        let mut out = Self::new(device, cache.config(), layer, capacity.max(l.pos.len))?;
        if l.held_start() != 0 {
            return Err(l.not_held(0, l.pos.len));
        }
        for (s, stream) in l.streams.iter().enumerate() {
            for (i, page) in stream.pages.iter().enumerate() {
                out.pages.write_page(PagePool::K, s, i, &page.k)?;
                out.pages.write_page(PagePool::V, s, i, &page.v)?;
            }
        }
        out.len = l.pos.len;
        Ok(out)
    }

    /// Tokens held per stream.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens each stream can hold.
    pub fn capacity(&self) -> usize {
        self.pages.shape().capacity()
    }

    /// The pages (to read them back, for instance).
    pub fn pages(&self) -> &DevicePages {
        &self.pages
    }

    /// The pages, to write them directly (pages of a cache file, say). Tokens are held up to
    /// [`DeviceLayer::len`] whatever is written.
    pub fn pages_mut(&mut self) -> &mut DevicePages {
        &mut self.pages
    }

    /// The attention and the codecs' plans on the device.
    pub fn attention(&self) -> &DeviceAttention {
        &self.attention
    }

    /// Appends `n` tokens to every stream: `k` and `v` are `[batch, kv_heads, n, head_dim]`
    /// in device memory, encoded on the device into the pages. On error nothing is appended.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] unless both hold the same whole number of tokens;
    /// [`Error::NonFinite`] (the first such vector, counting the keys', then the values');
    /// [`Error::Cuda`] past the capacity or for device failures.
    pub fn append(&mut self, k: Values<'_>, v: Values<'_>) -> Result<(), Error> {
        let streams = self.pages.shape().streams();
        let per_token = streams * self.head_dim;
        let (kn, vn) = (values_len(&k), values_len(&v));
        if !kn.is_multiple_of(per_token) {
            return Err(Error::LengthMismatch {
                what: "keys",
                expected: kn.next_multiple_of(per_token),
                actual: kn,
            });
        }
        if vn != kn {
            return Err(Error::LengthMismatch {
                what: "values",
                expected: kn,
                actual: vn,
            });
        }
        let n = kn / per_token;
        if self.len + n > self.capacity() {
            return Err(Error::Cuda(kv_cuda::Error::TooManyTokens {
                tokens: self.len + n,
                capacity: self.capacity(),
            }));
        }
        if n == 0 {
            return Ok(());
        }
        let (kp, vp) = (self.attention.k_plan(), self.attention.v_plan());
        let device = kp.device();
        let mut kb = device.zeros::<u8>(kp.plan().encoded_len(streams * n))?;
        let mut vb = device.zeros::<u8>(vp.plan().encoded_len(streams * n))?;
        kp.enqueue_encode(k, &mut kb)?;
        vp.enqueue_encode(v, &mut vb)?;
        kp.finish().map_err(from_cuda)?;
        vp.finish().map_err(|e| match from_cuda(e) {
            Error::NonFinite { vector } => Error::NonFinite {
                vector: vector + streams * n,
            },
            other => other,
        })?;
        self.pages.enqueue_write(PagePool::K, &kb, self.len, n)?;
        self.pages.enqueue_write(PagePool::V, &vb, self.len, n)?;
        device.synchronize()?;
        self.len += n;
        Ok(())
    }

    /// Queues decode attention: `queries` are `[batch, q_heads, head_dim]` f32 (the next
    /// position's, which sees every token held), `out` receives the same shape. Call
    /// [`DeviceAttention::finish`] (or use [`DeviceLayer::attend`]) to wait and see faults.
    ///
    /// # Errors
    /// [`Error::Cuda`] (with [`kv_cuda::Error::HeadsMismatch`],
    /// [`kv_cuda::Error::TooManyTokens`] for an empty layer, ...); [`Error::LengthMismatch`].
    pub fn enqueue_attend(
        &self,
        queries: &DeviceBuffer<f32>,
        q_heads: usize,
        out: &mut DeviceBuffer<f32>,
    ) -> Result<(), Error> {
        self.attention
            .enqueue_attend(&self.pages, self.len, q_heads, queries, out)
            .map_err(from_cuda)
    }

    /// Decode attention and wait: [`DeviceLayer::enqueue_attend`], then the fault check.
    ///
    /// # Errors
    /// As [`DeviceLayer::enqueue_attend`]; [`Error::CorruptPayload`] naming the position of
    /// a token whose bytes no encoder writes.
    pub fn attend(
        &self,
        queries: &DeviceBuffer<f32>,
        q_heads: usize,
        out: &mut DeviceBuffer<f32>,
    ) -> Result<(), Error> {
        self.enqueue_attend(queries, q_heads, out)?;
        self.attention.finish().map_err(from_cuda)
    }
}
