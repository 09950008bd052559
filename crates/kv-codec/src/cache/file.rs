//! The cache file: a 64-byte header, then one checksummed record per layer (a 96-byte
//! header and the pages and window of every stream). FORMAT.md describes it field by field.
//!
//! ```text
//! cache header                      layer header
//! offset size field                 offset size field
//!  0      4   magic "KVCC"           0      1   policy (0 per-vector, 1 KIVI)
//!  4      2   version (3)            1      1   window format (per-vector; v3:
//!                                               0 f16, 1 int8; else zero)
//!                                    2      2   sink tokens (per-vector; v2)
//!                                    4      2   recent tokens (per-vector; v2)
//!                                    6      2   key-centre tokens (per-vector; v2)
//!  6      2   reserved, zero         8     24   K storage, or KIVI's parameters
//!  8      4   batch                 32     24   V storage (zero under KIVI)
//! 12      4   kv_heads              56      8   first held page
//! 16      4   head_dim              64      8   length (tokens)
//! 20      4   page_tokens           72      8   flushed (tokens in pages)
//! 24      4   layers                80      8   payload length in bytes
//! 28      1   dtype                 88      4   CRC-32 of bytes 0..88 and the payload
//! 29      3   reserved, zero        92      4   reserved, zero
//! 32      8   sliding window (0: none)
//! 40      8   rotation seed
//! 48      8   reserved, zero
//! 56      4   CRC-32 of bytes 0..56
//! 60      4   reserved, zero
//! ```
//!
//! A stream's payload: its pages (K then V of each), its window (K, then V), then in v2
//! its sink tokens (K, then V) and its key offset (`head_dim` f32) when it has one. Window
//! and sink tokens are in the window format: `head_dim` f16 values, or (v3) the `int8`
//! codec's bytes. Version 1 (no protection) and 2 (f16 windows only) files still load.
//!
//! Loading builds the whole cache before returning it, so a file that is corrupted
//! (checksums, reserved bytes, positions that disagree) or truncated anywhere yields an
//! error and nothing else.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::ops::Range;
use std::sync::RwLock;

use super::kivi::Kivi;
use super::layer::{Formats, KeyOffset, Layer, Page, Positions, Stream};
use super::store::PageFormat;
use super::{CacheConfig, KvCache, LayerPolicy, Protection, Storage, WindowFormat};
use crate::codec::Par;
use crate::error::Error;
use crate::format::{Dtype, crc32_update};
use crate::spec::CodecSpec;

/// The cache file's magic bytes.
pub const MAGIC: [u8; 4] = *b"KVCC";
/// The cache-file version this library writes (and the newest it reads).
pub const VERSION: u16 = 3;
/// Length of the cache header.
const HEADER_LEN: usize = 64;
/// Length of a layer header.
const LAYER_HEADER_LEN: usize = 96;

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The 24-byte field of one storage.
fn storage_field(storage: Storage) -> [u8; 24] {
    let mut f = [0u8; 24];
    match storage {
        Storage::Dense(dtype) => f[1] = dtype.code(),
        Storage::Codec(spec) => {
            f[0] = 1;
            let (id, params) = spec.wire();
            f[2..4].copy_from_slice(&id.to_le_bytes());
            for (i, p) in params.iter().enumerate() {
                put_u32(&mut f, 4 + 4 * i, *p);
            }
        }
    }
    f
}

fn corrupt(field: &'static str) -> Error {
    Error::CorruptHeader { field }
}

fn parse_storage(f: &[u8]) -> Result<Storage, Error> {
    if f[20..24] != [0; 4] {
        return Err(corrupt("reserved bytes"));
    }
    match f[0] {
        0 => {
            if f[2..20].iter().any(|&b| b != 0) {
                return Err(corrupt("reserved bytes"));
            }
            Dtype::from_code(f[1])
                .map(Storage::Dense)
                .ok_or(corrupt("dtype"))
        }
        1 => {
            if f[1] != 0 {
                return Err(corrupt("reserved bytes"));
            }
            let id = u16::from_le_bytes([f[2], f[3]]);
            let params = std::array::from_fn(|i| get_u32(f, 4 + 4 * i));
            Ok(Storage::Codec(CodecSpec::from_wire(id, params)?))
        }
        _ => Err(corrupt("storage kind")),
    }
}

/// The header of a layer record (its checksum still to be filled in).
fn layer_header(policy: LayerPolicy, pos: Positions, payload: u64) -> [u8; LAYER_HEADER_LEN] {
    let mut h = [0u8; LAYER_HEADER_LEN];
    match policy {
        LayerPolicy::PerVector { k, v, protection } => {
            h[1] = match protection.window {
                WindowFormat::F16 => 0,
                WindowFormat::Int8 => 1,
            };
            h[2..4].copy_from_slice(&protection.sink_tokens.to_le_bytes());
            h[4..6].copy_from_slice(&protection.recent_tokens.to_le_bytes());
            h[6..8].copy_from_slice(&protection.key_centre_tokens.to_le_bytes());
            h[8..32].copy_from_slice(&storage_field(k));
            h[32..56].copy_from_slice(&storage_field(v));
        }
        LayerPolicy::Kivi(kivi) => {
            h[0] = 1;
            put_u32(&mut h, 8, kivi.bits);
            put_u32(&mut h, 12, kivi.group);
            put_u32(&mut h, 16, kivi.residual);
        }
    }
    put_u64(&mut h, 56, pos.first_page as u64);
    put_u64(&mut h, 64, pos.len as u64);
    put_u64(&mut h, 72, pos.flushed as u64);
    put_u64(&mut h, 80, payload);
    h
}

fn parse_policy(h: &[u8], version: u16) -> Result<LayerPolicy, Error> {
    if h[92..96] != [0; 4] {
        return Err(corrupt("reserved bytes"));
    }
    let window = match h[1] {
        0 => WindowFormat::F16,
        // Version 2 reserved (zeroed) this byte.
        1 if version >= 3 && h[0] == 0 => WindowFormat::Int8,
        _ => return Err(corrupt("window format")),
    };
    let u16_at = |at: usize| u16::from_le_bytes([h[at], h[at + 1]]);
    let protection = Protection {
        sink_tokens: u16_at(2),
        recent_tokens: u16_at(4),
        key_centre_tokens: u16_at(6),
        window,
    };
    // Version 1 reserved (zeroed) these fields.
    if (version < 2 || h[0] != 0) && !protection.is_none() {
        return Err(corrupt("reserved bytes"));
    }
    match h[0] {
        0 => Ok(LayerPolicy::PerVector {
            k: parse_storage(&h[8..32])?,
            v: parse_storage(&h[32..56])?,
            protection,
        }),
        1 => {
            if h[20..56].iter().any(|&b| b != 0) {
                return Err(corrupt("reserved bytes"));
            }
            Ok(LayerPolicy::Kivi(Kivi {
                bits: get_u32(h, 8),
                group: get_u32(h, 12),
                residual: get_u32(h, 16),
            }))
        }
        _ => Err(corrupt("layer policy")),
    }
}

/// What of a layer a file holds: positions, and which of its pages.
struct Slice {
    pos: Positions,
    /// Indices into each stream's pages.
    pages: Range<usize>,
    /// Window tokens (a prefix of the window).
    window: usize,
}

/// The part of `layer` that pages `pages` cover (all of it for `None`). A range that
/// starts inside the f16 window also takes the page the window follows, so that the
/// slice's window still starts where its pages end.
fn slice(layer: &Layer, pages: Option<&Range<usize>>) -> Result<Slice, Error> {
    let p = layer.fmt.page_tokens;
    let held = layer.held_start()..layer.pos.len;
    let (a, b) = match pages {
        None => (held.start, held.end),
        Some(r) => {
            let (a, b) = (
                held.start.max(r.start.saturating_mul(p)),
                held.end.min(r.end.saturating_mul(p)),
            );
            if a >= b {
                return Err(Error::TokensNotHeld {
                    start: r.start.saturating_mul(p),
                    end: r.end.saturating_mul(p),
                    held_start: held.start,
                    held_end: held.end,
                });
            }
            (a.min(layer.pos.flushed / p * p), b)
        }
    };
    let flushed = layer.pos.flushed.min(b);
    let first_page = a / p;
    Ok(Slice {
        pos: Positions {
            len: b,
            flushed,
            first_page,
        },
        pages: first_page - layer.pos.first_page..flushed.div_ceil(p) - layer.pos.first_page,
        window: b - flushed,
    })
}

/// The bytes of one stream's part of a layer record, in order.
fn stream_parts<'a>(
    layer: &'a Layer,
    s: &'a Stream,
    slice: &'a Slice,
) -> impl Iterator<Item = Cow<'a, [u8]>> {
    let fmt = &layer.fmt;
    let window = slice.window * fmt.window_token_bytes();
    let sinks = fmt.sinks_held(slice.pos.first_page * fmt.page_tokens, slice.pos.len)
        * fmt.window_token_bytes();
    let offset = s
        .key_offset
        .as_ref()
        .filter(|_| slice.pos.flushed > 0)
        .map(|o| Cow::Owned(o.plain.iter().flat_map(|x| x.to_le_bytes()).collect()));
    s.pages
        .range(slice.pages.clone())
        .flat_map(|page| [&page.k[..], &page.v[..]])
        .chain([
            &s.window_k[..window],
            &s.window_v[..window],
            &s.sink_k[..sinks],
            &s.sink_v[..sinks],
        ])
        .map(Cow::Borrowed)
        .chain(offset)
}

/// Writes the cache (or the pages `pages` of every layer).
pub(super) fn save<W: Write>(
    cache: &KvCache,
    w: &mut W,
    pages: Option<Range<usize>>,
) -> Result<(), Error> {
    let c = &cache.config;
    let layers = (0..cache.layers())
        .map(|l| cache.read(l))
        .collect::<Result<Vec<_>, Error>>()?;
    let slices = layers
        .iter()
        .map(|l| slice(l, pages.as_ref()))
        .collect::<Result<Vec<_>, Error>>()?;

    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    // Sizes were checked to fit u32 when the cache was made.
    put_u32(&mut h, 8, c.batch as u32);
    put_u32(&mut h, 12, c.kv_heads as u32);
    put_u32(&mut h, 16, c.head_dim as u32);
    put_u32(&mut h, 20, c.page_tokens as u32);
    put_u32(&mut h, 24, c.layers.len() as u32);
    h[28] = c.dtype.code();
    put_u64(&mut h, 32, c.sliding_window.unwrap_or(0) as u64);
    put_u64(&mut h, 40, c.seed);
    let crc = !crc32_update(!0, &h[..56]);
    put_u32(&mut h, 56, crc);
    w.write_all(&h)?;

    for (layer, slice) in layers.iter().zip(&slices) {
        let parts = || {
            layer
                .streams
                .iter()
                .flat_map(|s| stream_parts(layer, s, slice))
        };
        let payload: usize = parts().map(|p| p.len()).sum();
        let mut lh = layer_header(layer.policy, slice.pos, payload as u64);
        let crc = !parts().fold(crc32_update(!0, &lh[..88]), |c, p| crc32_update(c, &p));
        put_u32(&mut lh, 88, crc);
        w.write_all(&lh)?;
        for part in parts() {
            w.write_all(&part)?;
        }
    }
    w.flush()?;
    Ok(())
}

/// Reads exact byte counts, keeping the offset for truncation errors and a running CRC.
struct Source<'a, R> {
    r: &'a mut R,
    offset: usize,
    crc: u32,
}

impl<R: Read> Source<'_, R> {
    /// The next `n` bytes. The buffer grows with the data read, so a length field that
    /// lies costs no more memory than the file has.
    fn take(&mut self, n: usize) -> Result<Vec<u8>, Error> {
        let mut buf = Vec::with_capacity(n.min(1 << 20));
        (&mut *self.r).take(n as u64).read_to_end(&mut buf)?;
        if buf.len() < n {
            return Err(Error::Truncated {
                needed: self.offset + n,
                available: self.offset + buf.len(),
            });
        }
        self.offset += n;
        self.crc = crc32_update(self.crc, &buf);
        Ok(buf)
    }
}

/// A header field as `usize`, or a corrupt-header error naming it.
fn size(v: u64, field: &'static str) -> Result<usize, Error> {
    usize::try_from(v).map_err(|_| corrupt(field))
}

/// Reads a cache file.
pub(super) fn load<R: Read>(r: &mut R) -> Result<KvCache, Error> {
    let mut src = Source {
        r,
        offset: 0,
        crc: !0,
    };
    let h = src.take(HEADER_LEN)?;
    if h[0..4] != MAGIC {
        return Err(Error::BadMagic);
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if version == 0 || version > VERSION {
        return Err(Error::UnsupportedVersion {
            version,
            supported: VERSION,
        });
    }
    if !crc32_update(!0, &h[..56]) != get_u32(&h, 56) {
        return Err(corrupt("checksum"));
    }
    if h[6..8] != [0; 2] || h[29..32] != [0; 3] || h[48..56] != [0; 8] || h[60..64] != [0; 4] {
        return Err(corrupt("reserved bytes"));
    }
    let window = get_u64(&h, 32);
    let mut config = CacheConfig {
        batch: get_u32(&h, 8) as usize,
        kv_heads: get_u32(&h, 12) as usize,
        head_dim: get_u32(&h, 16) as usize,
        page_tokens: get_u32(&h, 20) as usize,
        dtype: Dtype::from_code(h[28]).ok_or(corrupt("dtype"))?,
        sliding_window: (window != 0).then_some(size(window, "sliding window")?),
        seed: get_u64(&h, 40),
        par: Par::Rayon,
        layers: Vec::new(),
    };
    let count = get_u32(&h, 24) as usize;
    let mut layers = Vec::with_capacity(count.min(1 << 10));
    for _ in 0..count {
        let lh = src.take(LAYER_HEADER_LEN)?;
        // The layer's checksum covers its header up to the checksum field, then the payload.
        src.crc = crc32_update(!0, &lh[..88]);
        let policy = parse_policy(&lh, version)?;
        // The sizes and the policy together: what `KvCache::new` would check.
        config.layers = vec![policy];
        let fmt = config.formats().map_err(|e| match e {
            Error::InvalidParameter { name, .. } => corrupt(name),
            Error::UnsupportedHeadDim { .. } => corrupt("head_dim"),
            _ => corrupt("layer policy"),
        })?;
        let fmt = fmt.into_iter().next().expect("one layer");
        let layer = load_layer(&mut src, &lh, policy, fmt, config.streams())?;
        layers.push(RwLock::new(layer));
    }
    // Nothing may follow the last layer.
    let mut rest = Vec::new();
    (&mut *src.r).take(1).read_to_end(&mut rest)?;
    if !rest.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    if layers.is_empty() {
        return Err(corrupt("layers"));
    }
    config.layers = layers
        .iter_mut()
        .map(|l| l.get_mut().expect("not shared yet").policy)
        .collect();
    Ok(KvCache { config, layers })
}

fn load_layer<R: Read>(
    src: &mut Source<'_, R>,
    lh: &[u8],
    policy: LayerPolicy,
    fmt: Formats,
    streams: usize,
) -> Result<Layer, Error> {
    let pos = Positions {
        first_page: size(get_u64(lh, 56), "first page")?,
        len: size(get_u64(lh, 64), "length")?,
        flushed: size(get_u64(lh, 72), "flushed")?,
    };
    let p = fmt.page_tokens;
    let start = pos.first_page.checked_mul(p).ok_or(corrupt("first page"))?;
    let window = pos.len.checked_sub(pos.flushed).ok_or(corrupt("flushed"))?;
    if start > pos.flushed
        || !pos.flushed.is_multiple_of(fmt.unit)
        || window > fmt.window_capacity(pos.flushed > 0)
        || (pos.flushed > 0 && pos.len < fmt.centre_ready())
    {
        return Err(corrupt("positions"));
    }
    let pages = pos.flushed.div_ceil(p).saturating_sub(pos.first_page);
    let (kp, vp) = (fmt.k.page_bytes(p), fmt.v.page_bytes(p));
    let window_bytes = window * fmt.window_token_bytes();
    let sink_bytes = fmt.sinks_held(start, pos.len) * fmt.window_token_bytes();
    let has_offset = fmt.centre > 0 && pos.flushed > 0;
    let offset_bytes = if has_offset { 4 * fmt.d } else { 0 };
    let expected = pages
        .checked_mul(kp + vp)
        .and_then(|b| b.checked_add(2 * window_bytes + 2 * sink_bytes + offset_bytes))
        .and_then(|b| b.checked_mul(streams))
        .ok_or(corrupt("payload length"))?;
    if get_u64(lh, 80) != expected as u64 {
        return Err(corrupt("payload length"));
    }
    let mut layer = Layer::new(policy, fmt, 0);
    layer.pos = pos;
    for _ in 0..streams {
        let mut stream = Stream {
            pages: VecDeque::with_capacity(pages.min(1 << 16)),
            ..Stream::default()
        };
        for _ in 0..pages {
            let k = src.take(kp)?.into_boxed_slice();
            let v = src.take(vp)?.into_boxed_slice();
            stream.pages.push_back(Page { k, v });
        }
        let f = &layer.fmt;
        let (k, v) = (src.take(window_bytes)?, src.take(window_bytes)?);
        let (sk, sv) = (src.take(sink_bytes)?, src.take(sink_bytes)?);
        // Window and sink tokens must decode in the window format: the f16 reader refuses
        // non-finite values (every writer saturates), the int8 codec its invalid codes.
        let mut scratch = f.window.scratch();
        let mut x = vec![0f32; window.max(f.sinks) * f.d];
        for (w, first) in [(&k, pos.flushed), (&v, pos.flushed), (&sk, 0), (&sv, 0)] {
            let x = &mut x[..w.len() / f.window_token_bytes() * f.d];
            f.window
                .read(w, 0, x, false, &mut scratch)
                .map_err(|(i, reason)| Error::CorruptPayload {
                    vector: first + i,
                    reason,
                })?;
        }
        f.push_window_bytes(&mut stream, &k, &v, pos.flushed > 0);
        f.push_sink_bytes(&mut stream, &sk, &sv);
        if has_offset {
            let mean: Vec<f32> = src
                .take(offset_bytes)?
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect();
            if !mean.iter().all(|m| m.is_finite()) {
                return Err(Error::CorruptPayload {
                    vector: pos.flushed,
                    reason: "non-finite key offset",
                });
            }
            stream.key_offset = Some(KeyOffset::new(mean, &*f.k));
        }
        layer.streams.push(stream);
    }
    if !src.crc != get_u32(lh, 88) {
        return Err(corrupt("checksum"));
    }
    Ok(layer)
}
