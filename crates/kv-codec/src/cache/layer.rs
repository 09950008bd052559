//! One layer of the cache: its K and V page formats, its positions, and per stream (batch
//! row × KV head) the pages, the window of recent tokens, the copies of the sink tokens
//! (both in the layer's [`super::WindowFormat`]) and the key offset (see [`Protection`]).
//!
//! Token `t` (absolute position) of a stream lies in page `t / P`, slot `t % P`, while
//! `t < flushed`; tokens `flushed..len` lie in the window (only policies with a recent
//! window or a key offset, and KIVI, have one: elsewhere `flushed == len`). Pages
//! `first_page..` are held; the sliding window and page-range loads drop whole pages from
//! the front (and the sink tokens with the first page). A stream has a key offset exactly
//! when its layer centres keys and `flushed > 0`.

use std::collections::VecDeque;

use rayon::prelude::*;

use super::kivi::{KiviKeys, KiviValues};
use super::store::{Dense, Packed, PageFormat, Scratch, VectorCoder};
use super::{Kv, LayerPolicy, Protection, Storage, WindowFormat};
use crate::bits::clear_bits_from;
use crate::codec::{Input, Output, Par};
use crate::config::CodecConfig;
use crate::error::Error;
use crate::format::Dtype;
use crate::spec::CodecSpec;

/// Most tokens one read or write handles at a time (rounded up to whole units).
pub(crate) const BLOCK_TOKENS: usize = 32;

/// The fixed part of a layer: formats and sizes.
#[derive(Debug)]
pub(crate) struct Formats {
    pub(crate) k: Box<dyn PageFormat>,
    pub(crate) v: Box<dyn PageFormat>,
    /// The layout of the recent window and the sink tokens ([`WindowFormat`]).
    pub(crate) window: Packed<Box<dyn VectorCoder>>,
    /// Recent tokens kept in the window (at least).
    pub(crate) recent: usize,
    /// Leading positions also kept in the window format.
    pub(crate) sinks: usize,
    /// Positions whose mean key is the key offset (0: keys are not centred).
    pub(crate) centre: usize,
    /// Tokens leave the window in multiples of this.
    pub(crate) unit: usize,
    /// Tokens per page.
    pub(crate) page_tokens: usize,
    /// Values per token.
    pub(crate) d: usize,
}

/// Where a layer's tokens are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Positions {
    /// Tokens appended (the next token's position).
    pub(crate) len: usize,
    /// Tokens `..flushed` are in pages, `flushed..len` in the window.
    pub(crate) flushed: usize,
    /// Absolute index of each stream's first held page.
    pub(crate) first_page: usize,
}

/// One page of one stream.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) k: Box<[u8]>,
    pub(crate) v: Box<[u8]>,
}

/// One stream (batch row × KV head) of a layer.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    pub(crate) pages: VecDeque<Page>,
    /// Recent keys, dense f16, token after token.
    pub(crate) window_k: Vec<u8>,
    /// Recent values, dense f16.
    pub(crate) window_v: Vec<u8>,
    /// Keys of the sink tokens (positions `0..sinks` held), dense f16.
    pub(crate) sink_k: Vec<u8>,
    /// Values of the sink tokens, dense f16.
    pub(crate) sink_v: Vec<u8>,
    /// What the coded keys are relative to, once fixed.
    pub(crate) key_offset: Option<KeyOffset>,
}

/// The offset the keys of a stream are coded around, as stored and rotated into the key
/// format's rotated domain (what attention reads).
#[derive(Debug)]
pub(crate) struct KeyOffset {
    pub(crate) plain: Box<[f32]>,
    rotated: Box<[f32]>,
}

impl KeyOffset {
    pub(crate) fn new(plain: Vec<f32>, format: &dyn PageFormat) -> Self {
        let mut rotated = plain.clone();
        if let Some(r) = format.rotation() {
            r.forward_inplace(&mut rotated);
        }
        Self {
            plain: plain.into_boxed_slice(),
            rotated: rotated.into_boxed_slice(),
        }
    }
}

/// Scratch for reading both of K and V and the window.
#[derive(Debug)]
pub(crate) struct Scratches {
    k: Scratch,
    v: Scratch,
    window: Scratch,
}

/// One layer.
#[derive(Debug)]
pub(crate) struct Layer {
    pub(crate) policy: LayerPolicy,
    pub(crate) fmt: Formats,
    pub(crate) pos: Positions,
    pub(crate) streams: Vec<Stream>,
}

fn storage_format(storage: Storage, d: usize, seed: u64) -> Result<Box<dyn PageFormat>, Error> {
    Ok(match storage {
        Storage::Dense(dtype) => Box::new(Packed(Dense { dtype, head_dim: d })),
        Storage::Codec(spec) => {
            Box::new(Packed(CodecConfig::new(spec, d).with_seed(seed).build()?))
        }
    })
}

impl Formats {
    /// The formats of `policy` at `d` values per token and pages of `page_tokens`.
    pub(crate) fn new(
        policy: LayerPolicy,
        d: usize,
        page_tokens: usize,
        seed: u64,
    ) -> Result<Self, Error> {
        type Parts = (Box<dyn PageFormat>, Box<dyn PageFormat>, Protection);
        let (k, v, protection): Parts = match policy {
            LayerPolicy::PerVector { k, v, protection } => {
                if usize::from(protection.sink_tokens) > page_tokens {
                    // Eviction and page-range loads drop the sinks with the first page.
                    return Err(Error::InvalidParameter {
                        name: "sink_tokens",
                        value: protection.sink_tokens.into(),
                        allowed: "at most page_tokens",
                    });
                }
                let fmt = |s| storage_format(s, d, seed);
                (fmt(k)?, fmt(v)?, protection)
            }
            LayerPolicy::Kivi(kivi) => {
                kivi.validate(d, page_tokens)?;
                (
                    Box::new(KiviKeys { kivi, head_dim: d }),
                    Box::new(Packed(KiviValues { kivi, head_dim: d })),
                    Protection::NONE,
                )
            }
        };
        let recent = match policy {
            LayerPolicy::PerVector { protection, .. } => protection.recent_tokens.into(),
            LayerPolicy::Kivi(kivi) => kivi.residual as usize,
        };
        // Both units divide the page (KIVI's validation), so their maximum is a common unit.
        let unit = k.unit().max(v.unit());
        Ok(Self {
            k,
            v,
            window: Packed(match protection.window {
                WindowFormat::F16 => Box::new(Dense {
                    dtype: Dtype::F16,
                    head_dim: d,
                }),
                WindowFormat::Int8 => Box::new(
                    CodecConfig::new(CodecSpec::Int { bits: 8, group: 0 }, d)
                        .with_seed(seed)
                        .build()?,
                ),
            }),
            recent,
            sinks: protection.sink_tokens.into(),
            centre: protection.key_centre_tokens.into(),
            unit,
            page_tokens,
            d,
        })
    }

    pub(crate) fn format(&self, kv: Kv) -> &dyn PageFormat {
        match kv {
            Kv::K => &*self.k,
            Kv::V => &*self.v,
        }
    }

    /// Most tokens the window holds: before a centring layer fixes its key offset (when
    /// `coding` is false) up to `S + C − 1`, else fewer than `recent + unit`. The buffers
    /// are allocated at this size.
    pub(crate) fn window_capacity(&self, coding: bool) -> usize {
        let steady = self.recent + self.unit;
        let most = if coding {
            steady
        } else {
            steady.max(self.centre_ready())
        };
        most.saturating_sub(1)
    }

    /// Tokens a stream needs before any is coded: those of the key offset's positions.
    pub(crate) fn centre_ready(&self) -> usize {
        if self.centre == 0 {
            0
        } else {
            self.sinks + self.centre
        }
    }

    /// Sink tokens a layer of `len` tokens holds from position `held_start` on.
    pub(crate) fn sinks_held(&self, held_start: usize, len: usize) -> usize {
        if held_start == 0 {
            self.sinks.min(len)
        } else {
            0
        }
    }

    /// Tokens per read or write block: [`BLOCK_TOKENS`] rounded up to whole units.
    pub(crate) fn block(&self) -> usize {
        BLOCK_TOKENS.div_ceil(self.unit) * self.unit
    }

    pub(crate) fn scratches(&self) -> Scratches {
        Scratches {
            k: self.k.scratch(),
            v: self.v.scratch(),
            window: self.window.scratch(),
        }
    }

    /// Splits `range` into blocks that each lie in one page or in the window, of at most
    /// [`Formats::block`] tokens; blocks in pages start on a unit boundary, so the first
    /// may start before `range.start`.
    pub(crate) fn blocks(
        &self,
        pos: Positions,
        range: core::ops::Range<usize>,
    ) -> impl Iterator<Item = (usize, usize)> + use<'_> {
        let (u, p, max) = (self.unit, self.page_tokens, self.block());
        let mut t = if range.start < pos.flushed {
            range.start / u * u
        } else {
            range.start
        };
        core::iter::from_fn(move || {
            if t >= range.end {
                return None;
            }
            let end = if t < pos.flushed {
                let page_end = (t / p + 1) * p;
                page_end
                    .min(pos.flushed)
                    .min(t + max)
                    .min(range.end.div_ceil(u) * u)
            } else {
                range.end.min(t + max)
            };
            let block = (t, end - t);
            t = end;
            Some(block)
        })
    }
}

/// One stream of a layer, for reading.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamView<'a> {
    pub(crate) fmt: &'a Formats,
    pub(crate) pos: Positions,
    pub(crate) stream: &'a Stream,
}

impl StreamView<'_> {
    /// Reads `out.len() / d` tokens from `t0` (a block of [`Formats::blocks`]), rotated
    /// into the K or V format's rotated domain when `rotated` is set.
    ///
    /// # Errors
    /// [`Error::CorruptPayload`] naming the absolute position of a corrupt token.
    pub(crate) fn read(
        &self,
        kv: Kv,
        t0: usize,
        out: &mut [f32],
        rotated: bool,
        scratch: &mut Scratches,
    ) -> Result<(), Error> {
        let (fmt, pos, stream) = (self.fmt, self.pos, self.stream);
        let format = fmt.format(kv);
        let result = if t0 >= pos.flushed {
            let window = match kv {
                Kv::K => &stream.window_k,
                Kv::V => &stream.window_v,
            };
            let r = fmt
                .window
                .read(window, t0 - pos.flushed, out, false, &mut scratch.window);
            if let (Ok(()), true, Some(rotation)) = (&r, rotated, format.rotation()) {
                rotation.forward_inplace(out);
            }
            r
        } else {
            let page = &stream.pages[t0 / fmt.page_tokens - pos.first_page];
            let (bytes, sc) = match kv {
                Kv::K => (&page.k, &mut scratch.k),
                Kv::V => (&page.v, &mut scratch.v),
            };
            format
                .read(bytes, t0 % fmt.page_tokens, out, rotated, sc)
                .and_then(|()| self.protect(kv, t0, out, rotated, &mut scratch.window))
        };
        result.map_err(|(i, reason)| Error::CorruptPayload {
            vector: t0 + i,
            reason,
        })
    }
}

impl StreamView<'_> {
    /// Adds the key offset to keys read from pages starting at `t0`, and replaces the sink
    /// tokens among them by their copies in the window format.
    fn protect(
        &self,
        kv: Kv,
        t0: usize,
        out: &mut [f32],
        rotated: bool,
        scratch: &mut Scratch,
    ) -> Result<(), (usize, &'static str)> {
        let (fmt, stream) = (self.fmt, self.stream);
        let d = fmt.d;
        if let (Kv::K, Some(offset)) = (kv, &stream.key_offset) {
            let mu = if rotated {
                &offset.rotated
            } else {
                &offset.plain
            };
            for x in out.chunks_exact_mut(d) {
                x.iter_mut().zip(mu.iter()).for_each(|(x, m)| *x += m);
            }
        }
        let sinks = match kv {
            Kv::K => &stream.sink_k,
            Kv::V => &stream.sink_v,
        };
        let held = sinks.len() / fmt.window_token_bytes();
        if t0 < held {
            let n = (held - t0).min(out.len() / d);
            let out = &mut out[..n * d];
            fmt.window.read(sinks, t0, out, false, scratch)?;
            if let (true, Some(rotation)) = (rotated, fmt.format(kv).rotation()) {
                rotation.forward_inplace(out);
            }
        }
        Ok(())
    }
}

/// The appended tokens of one call, per stream: `[streams, n, d]` keys and values.
struct Incoming<'a> {
    k: Input<'a>,
    v: Input<'a>,
    n: usize,
}

impl Layer {
    /// An empty layer of `streams` streams.
    pub(crate) fn new(policy: LayerPolicy, fmt: Formats, streams: usize) -> Self {
        Self {
            policy,
            fmt,
            pos: Positions {
                len: 0,
                flushed: 0,
                first_page: 0,
            },
            streams: (0..streams).map(|_| Stream::default()).collect(),
        }
    }

    /// Stream `s`, for reading.
    pub(crate) fn view(&self, s: usize) -> StreamView<'_> {
        StreamView {
            fmt: &self.fmt,
            pos: self.pos,
            stream: &self.streams[s],
        }
    }

    /// The first token held.
    pub(crate) fn held_start(&self) -> usize {
        self.pos.first_page * self.fmt.page_tokens
    }

    /// Payload bytes held: every page buffer, the window and sink buffers' allocations and
    /// the key offsets (plain and rotated).
    pub(crate) fn bytes_held(&self) -> usize {
        let page = self.fmt.k.page_bytes(self.fmt.page_tokens)
            + self.fmt.v.page_bytes(self.fmt.page_tokens);
        self.streams
            .iter()
            .map(|s| {
                let offset = s
                    .key_offset
                    .as_ref()
                    .map_or(0, |o| (o.plain.len() + o.rotated.len()) * size_of::<f32>());
                s.pages.len() * page
                    + s.window_k.capacity()
                    + s.window_v.capacity()
                    + s.sink_k.capacity()
                    + s.sink_v.capacity()
                    + offset
            })
            .sum()
    }

    /// An error for a token range outside the held tokens.
    pub(crate) fn not_held(&self, start: usize, end: usize) -> Error {
        Error::TokensNotHeld {
            start,
            end,
            held_start: self.held_start(),
            held_end: self.pos.len,
        }
    }

    /// Drops the pages no query from position `next` on can see through a sliding window
    /// of `window` tokens (keys before `next + 1 − window`).
    fn evict(&mut self, window: usize, next: usize) {
        let keep_from = (next + 1).saturating_sub(window).min(self.pos.flushed);
        let p = self.fmt.page_tokens;
        while (self.pos.first_page + 1) * p <= keep_from {
            for s in &mut self.streams {
                s.pages.pop_front();
                // The sinks lie in the first page (at most a page of them).
                s.sink_k = Vec::new();
                s.sink_v = Vec::new();
            }
            self.pos.first_page += 1;
        }
    }

    /// Appends `n` tokens to every stream: `k` and `v` are `[streams, n, d]`, finite
    /// (checked by the caller). Tokens go to pages directly, or through the window when
    /// the policy keeps recent tokens.
    pub(crate) fn append(
        &mut self,
        k: Input<'_>,
        v: Input<'_>,
        n: usize,
        sliding_window: Option<usize>,
        par: Par,
    ) {
        if let Some(w) = sliding_window {
            self.evict(w, self.pos.len);
        }
        let fmt = &self.fmt;
        let pos = self.pos;
        let held = pos.len - pos.flushed;
        // Tokens that leave the window (or never enter it): whole units, keeping `recent`,
        // and none before the key offset's positions exist.
        let flush = if pos.len + n < fmt.centre_ready() {
            0
        } else {
            (held + n).saturating_sub(fmt.recent) / fmt.unit * fmt.unit
        };
        let incoming = Incoming { k, v, n };
        let work = |(s, stream): (usize, &mut Stream)| {
            fmt.append_stream(pos, stream, s, &incoming, flush);
        };
        match par {
            Par::Seq => self.streams.iter_mut().enumerate().for_each(work),
            Par::Rayon => self.streams.par_iter_mut().enumerate().for_each(work),
        }
        self.pos.len += n;
        self.pos.flushed += flush;
    }

    /// Shortens the layer to `len` tokens (rolling back speculative tokens). Tokens of a
    /// KIVI key group cut by the new length go back to the f16 window.
    ///
    /// # Errors
    /// [`Error::TokensNotHeld`] unless `held_start ≤ len ≤ self.len`;
    /// [`Error::CorruptPayload`] if a group to re-hold does not decode (loaded files only).
    pub(crate) fn crop(&mut self, len: usize) -> Result<(), Error> {
        if len > self.pos.len || len < self.held_start() {
            return Err(self.not_held(len, self.pos.len));
        }
        let fmt = &self.fmt;
        let d = fmt.d;
        let sinks = fmt.sinks_held(self.held_start(), len) * fmt.window_token_bytes();
        for s in &mut self.streams {
            s.sink_k.truncate(sinks);
            s.sink_v.truncate(sinks);
        }
        if len >= self.pos.flushed {
            let keep = (len - self.pos.flushed) * fmt.window_token_bytes();
            for s in &mut self.streams {
                s.window_k.truncate(keep);
                s.window_v.truncate(keep);
            }
            self.pos.len = len;
            return Ok(());
        }
        let start = len / fmt.unit * fmt.unit;
        // Decode the tokens to re-hold before changing anything.
        let rehold: Vec<(Vec<f32>, Vec<f32>)> = if start < len {
            let mut scratch = fmt.scratches();
            (0..self.streams.len())
                .map(|s| {
                    let (mut k, mut v) = (vec![0f32; fmt.unit * d], vec![0f32; fmt.unit * d]);
                    let view = self.view(s);
                    view.read(Kv::K, start, &mut k, false, &mut scratch)?;
                    view.read(Kv::V, start, &mut v, false, &mut scratch)?;
                    k.truncate((len - start) * d);
                    v.truncate((len - start) * d);
                    Ok((k, v))
                })
                .collect::<Result<_, Error>>()?
        } else {
            vec![(Vec::new(), Vec::new()); self.streams.len()]
        };
        let p = fmt.page_tokens;
        let (page, slot) = (start / p - self.pos.first_page, start % p);
        let mut scratch_window = fmt.window.scratch();
        for (s, (k, v)) in self.streams.iter_mut().zip(rehold) {
            if slot == 0 {
                s.pages.truncate(page);
            } else {
                s.pages.truncate(page + 1);
                let last = &mut s.pages[page];
                clear_bits_from(&mut last.k, fmt.k.bit_of(slot));
                clear_bits_from(&mut last.v, fmt.v.bit_of(slot));
            }
            s.window_k.clear();
            s.window_v.clear();
            fmt.push_window(s, &k, &v, &mut scratch_window);
            if start == 0 {
                // No coded token left: the next ones fix a new offset, as in a new cache.
                s.key_offset = None;
            }
        }
        self.pos.len = len;
        self.pos.flushed = start;
        Ok(())
    }

    /// Tokens `range` of K or V, as `[streams, range.len(), d]` into `out`.
    ///
    /// # Errors
    /// [`Error::TokensNotHeld`], [`Error::LengthMismatch`], [`Error::CorruptPayload`].
    pub(crate) fn gather(
        &self,
        kv: Kv,
        range: core::ops::Range<usize>,
        mut out: Output<'_>,
        par: Par,
    ) -> Result<(), Error> {
        if range.start > range.end || range.start < self.held_start() || range.end > self.pos.len {
            return Err(self.not_held(range.start, range.end));
        }
        let d = self.fmt.d;
        let per_stream = range.len() * d;
        let expected = self.streams.len() * per_stream;
        if out.len() != expected {
            return Err(Error::LengthMismatch {
                what: "gather output",
                expected,
                actual: out.len(),
            });
        }
        let fmt = &self.fmt;
        let pos = self.pos;
        let work = |s: usize| -> Result<Vec<f32>, Error> {
            let view = self.view(s);
            let mut values = vec![0f32; per_stream];
            let mut block = vec![0f32; fmt.block() * d];
            let mut scratch = fmt.scratches();
            for (t0, count) in fmt.blocks(pos, range.clone()) {
                let buf = &mut block[..count * d];
                view.read(kv, t0, buf, false, &mut scratch)?;
                let (a, b) = (t0.max(range.start), (t0 + count).min(range.end));
                values[(a - range.start) * d..(b - range.start) * d]
                    .copy_from_slice(&buf[(a - t0) * d..(b - t0) * d]);
            }
            Ok(values)
        };
        let streams: Vec<Result<Vec<f32>, Error>> = match par {
            Par::Seq => (0..self.streams.len()).map(work).collect(),
            Par::Rayon => (0..self.streams.len()).into_par_iter().map(work).collect(),
        };
        for (s, values) in streams.into_iter().enumerate() {
            out.store(s * per_stream, &values?);
        }
        Ok(())
    }
}

impl Formats {
    /// Appends to one stream: flushes `flush` tokens (the window's oldest, then the
    /// incoming ones) to pages, and keeps the rest of the incoming tokens in the window.
    fn append_stream(
        &self,
        pos: Positions,
        stream: &mut Stream,
        s: usize,
        incoming: &Incoming<'_>,
        flush: usize,
    ) {
        let (d, p) = (self.d, self.page_tokens);
        let held = pos.len - pos.flushed;
        let block = self.block();
        let (mut xk, mut xv) = (vec![0f32; block * d], vec![0f32; block * d]);
        let mut scratch = self.scratches();
        // The window's token `j` (its first `held`), then the incoming ones, rounded to the
        // window format when the layer has a window (what the window would have held).
        let token = |j: usize, k: &mut [f32], v: &mut [f32], w: &mut Scratch| {
            if j < held {
                // Windows hold what their format wrote (finite), checked on load.
                self.window
                    .read(&stream.window_k, j, k, false, w)
                    .and_then(|()| self.window.read(&stream.window_v, j, v, false, w))
                    .expect("windows hold finite values");
            } else {
                incoming.k.load(s * incoming.n + j - held, d, k);
                incoming.v.load(s * incoming.n + j - held, d, v);
                if self.window_capacity(false) > 0 {
                    // So that the bytes do not depend on how the tokens were chunked.
                    self.round_to_window(k, w);
                    self.round_to_window(v, w);
                }
            }
        };
        let sinks = self.sinks_held(pos.first_page * p, pos.len + incoming.n);
        let sinks_had = stream.sink_k.len() / self.window_token_bytes();
        if sinks > sinks_had {
            let (k, v) = (&mut xk[..d], &mut xv[..d]);
            for t in sinks_had..sinks {
                token(t - pos.flushed, k, v, &mut scratch.window);
                self.push_held(&mut stream.sink_k, k, self.sinks, &mut scratch.window);
                self.push_held(&mut stream.sink_v, v, self.sinks, &mut scratch.window);
            }
        }
        if flush > 0 && self.centre > 0 && stream.key_offset.is_none() {
            // The first coded token: fix the offset (every position up to the window's
            // end is still here, since nothing was coded yet).
            let mut sum = vec![0f32; d];
            let (k, v) = (&mut xk[..d], &mut xv[..d]);
            for t in self.sinks..self.centre_ready() {
                token(t - pos.flushed, k, v, &mut scratch.window);
                sum.iter_mut().zip(k.iter()).for_each(|(a, x)| *a += x);
            }
            let n = self.centre as f32;
            let mean = sum.into_iter().map(|a| a / n).collect();
            stream.key_offset = Some(KeyOffset::new(mean, &*self.k));
        }
        let mut t = pos.flushed;
        let end = pos.flushed + flush;
        while t < end {
            let slot = t % p;
            // Whole units: `slot`, `p` and `flush` are multiples of the unit.
            let run = block.min(p - slot).min(end - t);
            for i in 0..run {
                let (k, v) = (&mut xk[i * d..(i + 1) * d], &mut xv[i * d..(i + 1) * d]);
                token(t + i - pos.flushed, k, v, &mut scratch.window);
                if let Some(offset) = &stream.key_offset {
                    k.iter_mut()
                        .zip(offset.plain.iter())
                        .for_each(|(x, m)| *x -= m);
                }
            }
            let index = t / p - pos.first_page;
            if index == stream.pages.len() {
                stream.pages.push_back(Page {
                    k: vec![0; self.k.page_bytes(p)].into_boxed_slice(),
                    v: vec![0; self.v.page_bytes(p)].into_boxed_slice(),
                });
            }
            let page = &mut stream.pages[index];
            self.k
                .write(&mut page.k, slot, &xk[..run * d], &mut scratch.k);
            self.v
                .write(&mut page.v, slot, &xv[..run * d], &mut scratch.v);
            t += run;
        }
        // The window keeps its tokens after the flushed ones, then the incoming rest.
        let dropped = flush.min(held) * self.window_token_bytes();
        stream.window_k.drain(..dropped);
        stream.window_v.drain(..dropped);
        if flush > 0 {
            // Coding has begun: the window never again holds more than `recent` tokens.
            let steady = self.window_capacity(true) * self.window_token_bytes();
            stream.window_k.shrink_to(steady);
            stream.window_v.shrink_to(steady);
        }
        let (k, v) = (&mut xk[..d], &mut xv[..d]);
        for j in flush.saturating_sub(held)..incoming.n {
            incoming.k.load(s * incoming.n + j, d, k);
            incoming.v.load(s * incoming.n + j, d, v);
            self.push_window(stream, k, v, &mut scratch.window);
        }
    }

    /// Appends tokens (`d` values each) to a stream's window.
    fn push_window(&self, stream: &mut Stream, k: &[f32], v: &[f32], scratch: &mut Scratch) {
        let coding = self.centre == 0 || stream.key_offset.is_some();
        let capacity = self.window_capacity(coding);
        self.push_held(&mut stream.window_k, k, capacity, scratch);
        self.push_held(&mut stream.window_v, v, capacity, scratch);
    }

    /// Bytes of one token in the window format (whole bytes: f16 values, or int8's 16-bit
    /// scale and 8-bit values).
    pub(crate) fn window_token_bytes(&self) -> usize {
        self.window.page_bytes(1)
    }

    /// Rounds tokens (`d` values each) to what the window would hold of them.
    fn round_to_window(&self, x: &mut [f32], scratch: &mut Scratch) {
        for token in x.chunks_exact_mut(self.d) {
            self.window
                .0
                .encode(token, &mut scratch.bytes, &mut scratch.floats);
            self.window
                .0
                .decode(&scratch.bytes, token, false, &mut scratch.floats)
                .expect("the window format decodes what it encodes");
        }
    }

    /// Appends tokens (`d` values each) in the window format to a buffer of at most
    /// `capacity` tokens.
    fn push_held(&self, buffer: &mut Vec<u8>, x: &[f32], capacity: usize, scratch: &mut Scratch) {
        let bytes = self.window_token_bytes();
        reserve_window(buffer, capacity * bytes, x.len());
        for token in x.chunks_exact(self.d) {
            let at = buffer.len();
            buffer.resize(at + bytes, 0);
            self.window
                .0
                .encode(token, &mut buffer[at..], &mut scratch.floats);
        }
    }

    /// Appends encoded window tokens (a loaded file's) to a stream's window.
    pub(crate) fn push_window_bytes(&self, stream: &mut Stream, k: &[u8], v: &[u8], coding: bool) {
        let capacity = self.window_capacity(coding) * self.window_token_bytes();
        for (window, x) in [(&mut stream.window_k, k), (&mut stream.window_v, v)] {
            reserve_window(window, capacity, x.len());
            window.extend_from_slice(x);
        }
    }

    /// Appends encoded sink tokens (a loaded file's) to a stream.
    pub(crate) fn push_sink_bytes(&self, stream: &mut Stream, k: &[u8], v: &[u8]) {
        let capacity = self.sinks * self.window_token_bytes();
        for (sinks, x) in [(&mut stream.sink_k, k), (&mut stream.sink_v, v)] {
            reserve_window(sinks, capacity, x.len());
            sinks.extend_from_slice(x);
        }
    }
}

/// Allocates a window or sink buffer at its full size (`capacity` bytes) when the first of `adding`
/// values arrive (a window shrinks once coding begins), so that [`Layer::bytes_held`] counts its real
/// size.
fn reserve_window(buffer: &mut Vec<u8>, capacity: usize, adding: usize) {
    if buffer.capacity() == 0 && adding > 0 {
        buffer.reserve_exact(capacity);
    }
}
