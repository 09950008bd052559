//! The paged KV cache: attention on compressed pages against a dequantise-then-f64
//! reference for every codec and page size, exact memory accounting, chunking and
//! threading independence, crop/rollback, sliding window, save/load with corruption, the
//! plan JSON, concurrent appends and typed errors.

use std::ops::Range;

use kv_codec::cache::{
    CacheConfig, CachePlan, FILE_MAGIC, FILE_VERSION, Kivi, Kv, KvCache, LayerPolicy, Protection,
    Storage, WindowFormat,
};
use kv_codec::format::Dtype;
use kv_codec::{CodecConfig, CodecSpec, Error, Input, Output, Par, VectorCodec};
use proptest::prelude::*;

fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut u = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| ((-2.0 * u().ln()).sqrt() * (std::f64::consts::TAU * u()).cos()) as f32)
        .collect()
}

fn spec(s: &str) -> CodecSpec {
    s.parse().unwrap()
}

/// One policy of every codec family and packing, the dense dtypes, KIVI and a mixed layer.
fn policies() -> Vec<(String, LayerPolicy)> {
    let mut p: Vec<(String, LayerPolicy)> = [
        "voronoi-e8-q16-s4",
        "voronoi-e8-q6-s3",
        "compat-d4-q38",
        "compat-e8-q4-joint",
        "bf16",
        "fp8-e4m3",
        "int8",
        "int4-g32",
        "q8_0",
        "q4_0",
        "turboquant-b3",
        "strawman-b4",
    ]
    .iter()
    .map(|s| (s.to_string(), LayerPolicy::codecs(spec(s), spec(s))))
    .collect();
    for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
        p.push((format!("dense {dtype:?}"), LayerPolicy::uncompressed(dtype)));
    }
    p.push((
        "kivi".into(),
        LayerPolicy::Kivi(Kivi {
            bits: 2,
            group: 8,
            residual: 5,
        }),
    ));
    p.push((
        "voronoi K, q4_0 V".into(),
        LayerPolicy::codecs(spec("voronoi-e8-q8-s2"), spec("q4_0")),
    ));
    p.push((
        "f16 K, voronoi V".into(),
        LayerPolicy::PerVector {
            k: Storage::Dense(Dtype::F16),
            v: Storage::Codec(spec("voronoi-e8-q16-s4")),
            protection: Protection::NONE,
        },
    ));
    p.push((
        "voronoi, sinks + recent + centred keys".into(),
        LayerPolicy::codecs(spec("voronoi-e8-q16-s4"), spec("voronoi-e8-q6-s3")).with_protection(
            Protection {
                sink_tokens: 2,
                recent_tokens: 3,
                key_centre_tokens: 6,
                ..Protection::NONE
            },
        ),
    ));
    p.push((
        "voronoi, sinks + recent + centred keys, int8 window".into(),
        LayerPolicy::codecs(spec("voronoi-e8-q13-s2"), spec("int4")).with_protection(Protection {
            sink_tokens: 3,
            recent_tokens: 4,
            key_centre_tokens: 5,
            window: WindowFormat::Int8,
        }),
    ));
    p.push((
        "int4, centred keys".into(),
        LayerPolicy::codecs(spec("int4"), spec("turboquant-b3")).with_protection(Protection {
            key_centre_tokens: 4,
            ..Protection::NONE
        }),
    ));
    p
}

/// Whether a policy keeps a window of recent tokens (a crop into coded tokens leaves them
/// coded, so the cropped cache is not the one that never held the dropped tokens).
fn has_window(policy: &LayerPolicy) -> bool {
    match policy {
        LayerPolicy::Kivi(_) => true,
        LayerPolicy::PerVector { protection, .. } => protection.recent_tokens > 0,
    }
}

/// Keys and values of `n` tokens, `[streams, n, d]`, with an outlier channel in the keys.
fn tokens(streams: usize, n: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut k = gaussian(streams * n * d, seed);
    for (i, v) in k.iter_mut().enumerate() {
        if i % d == 3 {
            *v = *v * 4.0 + 6.0;
        }
    }
    (k, gaussian(streams * n * d, seed ^ 0xABCD))
}

/// Attention of the last `n` positions by dequantising every held token (`gather`) and
/// computing softmax(q·Kᵀ/√d)·V in f64 with the causal mask and the sliding window.
fn reference(cache: &KvCache, layer: usize, q: &[f32], q_heads: usize) -> Vec<f64> {
    let c = cache.config();
    let (d, kv_heads) = (c.head_dim, c.kv_heads);
    let held = cache.held(layer).unwrap();
    let t = held.len();
    let mut k = vec![0f32; c.streams() * t * d];
    let mut v = vec![0f32; k.len()];
    cache
        .gather(layer, Kv::K, held.clone(), Output::F32(&mut k))
        .unwrap();
    cache
        .gather(layer, Kv::V, held.clone(), Output::F32(&mut v))
        .unwrap();
    let n = q.len() / (c.batch * q_heads * d);
    let len = held.end;
    let window = c.sliding_window.unwrap_or(usize::MAX);
    let mut out = vec![0f64; q.len()];
    for b in 0..c.batch {
        for h in 0..q_heads {
            let s = b * kv_heads + h / (q_heads / kv_heads);
            for i in 0..n {
                let p = len - n + i;
                let lo = (p + 1).saturating_sub(window);
                assert!(lo >= held.start, "the reference needs keys {lo}..");
                let qv = &q[((b * q_heads + h) * n + i) * d..][..d];
                let key = |j: usize| &k[(s * t + j - held.start) * d..][..d];
                let val = |j: usize| &v[(s * t + j - held.start) * d..][..d];
                let scores: Vec<f64> = (lo..=p)
                    .map(|j| {
                        qv.iter()
                            .zip(key(j))
                            .map(|(&a, &b)| f64::from(a) * f64::from(b))
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let total: f64 = w.iter().sum();
                let o = &mut out[((b * q_heads + h) * n + i) * d..][..d];
                for (j, wj) in (lo..=p).zip(&w) {
                    for (x, &y) in o.iter_mut().zip(val(j)) {
                        *x += wj / total * f64::from(y);
                    }
                }
            }
        }
    }
    out
}

/// The largest relative error (vector norm) of an attention output against the reference.
fn attention_error(cache: &KvCache, layer: usize, q: &[f32], q_heads: usize) -> f64 {
    let mut out = vec![0f32; q.len()];
    cache
        .attend(layer, Input::F32(q), q_heads, Output::F32(&mut out))
        .unwrap();
    let expected = reference(cache, layer, q, q_heads);
    let d = cache.config().head_dim;
    out.chunks_exact(d)
        .zip(expected.chunks_exact(d))
        .map(|(o, e)| {
            let err: f64 = o
                .iter()
                .zip(e)
                .map(|(&a, b)| (f64::from(a) - b).powi(2))
                .sum();
            let norm: f64 = e.iter().map(|b| b * b).sum();
            (err / norm).sqrt()
        })
        .fold(0.0, f64::max)
}

/// Runs a prefill of `prefill` tokens and `steps` decode steps on one layer, checking the
/// attention of every call against the reference; returns the cache.
fn run_and_check(config: CacheConfig, q_heads: usize, prefill: usize, steps: usize) -> KvCache {
    let (streams, d, batch) = (config.streams(), config.head_dim, config.batch);
    let cache = KvCache::new(config).unwrap();
    let (k, v) = tokens(streams, prefill, d, 1);
    cache.append(0, Input::F32(&k), Input::F32(&v)).unwrap();
    let q = gaussian(batch * q_heads * prefill * d, 2);
    let err = attention_error(&cache, 0, &q, q_heads);
    assert!(err < 1e-5, "prefill: relative error {err:e}");
    for step in 0..steps {
        let (k, v) = tokens(streams, 1, d, 10 + step as u64);
        cache.append(0, Input::F32(&k), Input::F32(&v)).unwrap();
        let q = gaussian(batch * q_heads * d, 20 + step as u64);
        let err = attention_error(&cache, 0, &q, q_heads);
        assert!(err < 1e-5, "decode step {step}: relative error {err:e}");
    }
    cache
}

#[test]
fn attention_on_pages_matches_the_f64_reference_for_every_codec_and_page_size() {
    for (name, policy) in policies() {
        for page in [8, 16, 64] {
            let config = CacheConfig::new(2, 2, 64, vec![policy]).with_page_tokens(page);
            // Checked inside; the name says which case failed.
            let result = std::panic::catch_unwind(|| run_and_check(config, 4, 29, 3));
            assert!(result.is_ok(), "{name}, pages of {page}");
        }
    }
}

#[test]
fn attention_at_other_head_dims_and_without_gqa() {
    for (s, d, q_heads) in [
        ("voronoi-e8-q8-s4", 96, 2),
        ("turboquant-b4", 80, 6),
        ("int8", 12, 4),
        ("voronoi-e8-q8-s4", 128, 8),
    ] {
        let policy = LayerPolicy::codecs(spec(s), spec(s));
        let config = CacheConfig::new(1, 2, d, vec![policy]).with_page_tokens(5);
        run_and_check(config, q_heads, 13, 2);
    }
}

#[test]
fn sliding_window_attends_to_the_last_tokens_and_drops_pages() {
    for policy in [
        LayerPolicy::codecs(spec("voronoi-e8-q16-s4"), spec("int8")),
        LayerPolicy::Kivi(Kivi {
            bits: 4,
            group: 4,
            residual: 3,
        }),
    ] {
        let config = CacheConfig::new(1, 2, 32, vec![policy])
            .with_page_tokens(8)
            .with_sliding_window(11);
        let cache = run_and_check(config, 2, 30, 20);
        let held = cache.held(0).unwrap();
        assert_eq!(held.end, 50);
        // Keys from 50 − 11 = 39 on are still needed by the next query; pages ending
        // before them are gone.
        assert_eq!(held.start, 32, "{policy:?}");
        // A query that needs evicted keys is refused.
        let q = gaussian(2 * 12 * 32, 5);
        let mut out = vec![0f32; q.len()];
        assert!(matches!(
            cache.attend(0, Input::F32(&q), 2, Output::F32(&mut out)),
            Err(Error::TokensNotHeld { start: 28, .. })
        ));
        assert!(matches!(
            cache.crop(31),
            Err(Error::TokensNotHeld { start: 31, .. })
        ));
    }
}

#[test]
fn a_prefill_chunk_of_many_queries_matches_the_reference_across_chunks() {
    // More tokens than one attention work item, so chunks are merged.
    let policy = LayerPolicy::codecs(spec("int4"), spec("int8"));
    let config = CacheConfig::new(1, 1, 8, vec![policy]).with_page_tokens(32);
    run_and_check(config, 2, 1100, 1);
}

#[test]
fn bytes_held_are_the_advertised_bits() {
    let (batch, kv_heads, d, page) = (2, 3, 128, 32);
    for s in [
        "voronoi-e8-q16-s4",
        "voronoi-e8-q6-s2",
        "q4_0",
        "bf16",
        "int4-g32",
    ] {
        let codec = CodecConfig::new(spec(s), d).build().unwrap();
        let policy = LayerPolicy::codecs(spec(s), spec(s));
        let cache = KvCache::new(
            CacheConfig::new(batch, kv_heads, d, vec![policy; 2]).with_page_tokens(page),
        )
        .unwrap();
        let tokens = 3 * page;
        let (k, v) = self::tokens(batch * kv_heads, tokens, d, 3);
        cache.append(0, Input::F32(&k), Input::F32(&v)).unwrap();
        cache.append(1, Input::F32(&k), Input::F32(&v)).unwrap();
        let layer = cache.layer_bytes_held(0).unwrap();
        assert_eq!(cache.bytes_held(), 2 * layer);
        // K and V, every stream: the bits of every vector, padded once per page.
        let exact = 2 * batch * kv_heads * 3 * codec.encoded_len(page);
        assert_eq!(layer, exact, "{s}");
        let ratio = layer as f64 / (2 * tokens * batch * kv_heads * d * 2) as f64;
        let expected = codec.bits_per_value() / 16.0;
        assert!(
            (ratio / expected - 1.0).abs() < 0.01,
            "{s}: {ratio} vs {expected}"
        );
    }
    // Dense f32 is twice bf16; KIVI adds its f16 window (R + G − 1 tokens, allocated once).
    let kivi = Kivi {
        bits: 2,
        group: 32,
        residual: 64,
    };
    let cache = KvCache::new(
        CacheConfig::new(1, 1, 128, vec![LayerPolicy::Kivi(kivi)]).with_page_tokens(64),
    )
    .unwrap();
    let (k, v) = tokens(1, 200, 128, 4);
    cache.append(0, Input::F32(&k), Input::F32(&v)).unwrap();
    // 200 tokens: 128 flushed in groups (two pages), 72 in the window.
    let group_bytes = (32 * 128 + 32 * 128 * 2) / 8;
    let value_bytes = 64 * (128 / 32 * (32 + 32 * 2)) / 8;
    let window = 2 * (64 + 32 - 1) * 128 * 2;
    assert_eq!(
        cache.bytes_held(),
        2 * (2 * group_bytes + value_bytes) + window
    );
}

#[test]
fn appends_are_independent_of_chunking_and_threads() {
    for (name, policy) in policies() {
        let d = 64;
        let (k, v) = tokens(4, 23, d, 7);
        let run = |chunks: &[usize], par: Par| {
            let cache = KvCache::new(
                CacheConfig::new(2, 2, d, vec![policy])
                    .with_page_tokens(8)
                    .with_par(par),
            )
            .unwrap();
            let mut at = 0;
            for &n in chunks {
                // Tokens at..at + n of every stream, as a [batch, heads, n, d] tensor.
                let part = |x: &[f32]| -> Vec<f32> {
                    (0..4)
                        .flat_map(|s| x[(s * 23 + at) * d..(s * 23 + at + n) * d].to_vec())
                        .collect()
                };
                cache
                    .append(0, Input::F32(&part(&k)), Input::F32(&part(&v)))
                    .unwrap();
                at += n;
            }
            let mut file = Vec::new();
            cache.save(&mut file).unwrap();
            let q = gaussian(2 * 4 * 3 * d, 8);
            let mut out = vec![0f32; q.len()];
            cache
                .attend(0, Input::F32(&q), 4, Output::F32(&mut out))
                .unwrap();
            (file, out)
        };
        let whole = run(&[23], Par::Rayon);
        assert!(whole == run(&[1; 23], Par::Seq), "{name}: token by token");
        assert!(whole == run(&[5, 11, 7], Par::Rayon), "{name}: chunks");
    }
}

fn gather_all(cache: &KvCache, layer: usize, kv: Kv, range: Range<usize>) -> Vec<f32> {
    let c = cache.config();
    let mut out = vec![0f32; c.streams() * range.len() * c.head_dim];
    cache
        .gather(layer, kv, range, Output::F32(&mut out))
        .unwrap();
    out
}

#[test]
fn crop_rolls_back_exactly() {
    for (name, policy) in policies() {
        let d = 64;
        let config = CacheConfig::new(1, 2, d, vec![policy]).with_page_tokens(8);
        let (k, v) = tokens(2, 30, d, 9);
        let first = |n: usize, x: &[f32]| -> Vec<f32> {
            (0..2)
                .flat_map(|s| x[s * 30 * d..(s * 30 + n) * d].to_vec())
                .collect()
        };
        let short = KvCache::new(config.clone()).unwrap();
        short
            .append(0, Input::F32(&first(19, &k)), Input::F32(&first(19, &v)))
            .unwrap();
        let long = KvCache::new(config).unwrap();
        long.append(0, Input::F32(&k), Input::F32(&v)).unwrap();
        let before = gather_all(&long, 0, Kv::K, 0..19);
        long.crop(19).unwrap();
        assert_eq!(long.len(0).unwrap(), 19);
        let after = gather_all(&long, 0, Kv::K, 0..19);
        if matches!(policy, LayerPolicy::Kivi(_)) {
            // The cut key group (16..24) returns to the f16 window as decoded: the tokens
            // before the cut keep their values up to f16 rounding.
            for (a, b) in before.iter().zip(&after) {
                assert!((a - b).abs() <= a.abs() / 1024.0, "{name}: {a} vs {b}");
            }
        } else {
            assert!(before == after, "{name}");
        }
        if !has_window(&policy) {
            let (mut fa, mut fb) = (Vec::new(), Vec::new());
            short.save(&mut fa).unwrap();
            long.save(&mut fb).unwrap();
            assert!(fa == fb, "{name}: cropped cache differs from the short one");
            assert_eq!(short.bytes_held(), long.bytes_held());
        }
        assert_eq!(gather_all(&short, 0, Kv::V, 0..19).len(), 2 * 19 * d);
        // Appending after the crop continues from the new length.
        let (k2, v2) = tokens(2, 4, d, 11);
        long.append(0, Input::F32(&k2), Input::F32(&v2)).unwrap();
        assert_eq!(long.len(0).unwrap(), 23);
        assert!(matches!(
            long.crop_layer(0, 24),
            Err(Error::TokensNotHeld { start: 24, .. })
        ));
        long.crop(0).unwrap();
        assert!(long.is_empty(0).unwrap());
        // Only a KIVI window's buffers (allocated once) remain.
        assert!(long.bytes_held() <= 2 * 2 * (5 + 8 - 1) * d * 2, "{name}");
    }
}

#[test]
fn gather_returns_every_dtype_and_any_range() {
    let d = 32;
    let policy = LayerPolicy::codecs(spec("voronoi-e8-q16-s4"), spec("q8_0"));
    let cache = KvCache::new(CacheConfig::new(2, 1, d, vec![policy]).with_page_tokens(4)).unwrap();
    let (k, v) = tokens(2, 10, d, 12);
    cache.append(0, Input::F32(&k), Input::F32(&v)).unwrap();
    let all = gather_all(&cache, 0, Kv::V, 0..10);
    let part = gather_all(&cache, 0, Kv::V, 3..9);
    for s in 0..2 {
        assert_eq!(
            part[s * 6 * d..(s + 1) * 6 * d],
            all[(s * 10 + 3) * d..(s * 10 + 9) * d]
        );
    }
    let mut h = vec![half::f16::ZERO; 2 * 6 * d];
    cache.gather(0, Kv::V, 3..9, Output::F16(&mut h)).unwrap();
    assert!(
        h.iter()
            .zip(&part)
            .all(|(a, &b)| *a == half::f16::from_f32(b))
    );
    let mut b16 = vec![half::bf16::ZERO; 2 * 6 * d];
    cache
        .gather(0, Kv::V, 3..9, Output::Bf16(&mut b16))
        .unwrap();
    assert!(
        b16.iter()
            .zip(&part)
            .all(|(a, &b)| *a == half::bf16::from_f32(b))
    );
    assert!(matches!(
        cache.gather(0, Kv::K, 5..11, Output::F32(&mut vec![0.0; 2 * 6 * d])),
        Err(Error::TokensNotHeld {
            start: 5,
            end: 11,
            held_start: 0,
            held_end: 10
        })
    ));
    assert!(matches!(
        cache.gather(0, Kv::K, 0..2, Output::F32(&mut [0.0; 5])),
        Err(Error::LengthMismatch { .. })
    ));
}

/// The protection of [`small_cache`]'s third layer.
const SMALL_PROTECTION: Protection = Protection {
    sink_tokens: 2,
    recent_tokens: 2,
    key_centre_tokens: 3,
    window: WindowFormat::Int8,
};

/// A small cache of three layers (a codec, KIVI, a protected codec) with a few tokens.
fn small_cache() -> KvCache {
    let codecs = LayerPolicy::codecs(spec("voronoi-e8-q6-s3"), spec("int4"));
    let layers = vec![
        codecs,
        LayerPolicy::Kivi(Kivi {
            bits: 2,
            group: 4,
            residual: 2,
        }),
        codecs.with_protection(SMALL_PROTECTION),
    ];
    let cache = KvCache::new(CacheConfig::new(1, 2, 16, layers).with_page_tokens(4)).unwrap();
    let (k, v) = tokens(2, 11, 16, 13);
    for layer in 0..3 {
        cache.append(layer, Input::F32(&k), Input::F32(&v)).unwrap();
    }
    cache
}

#[test]
fn save_and_load_round_trip() {
    let cache = small_cache();
    let mut file = Vec::new();
    cache.save(&mut file).unwrap();
    // The layout of FORMAT.md: a 64-byte header, then per layer a 96-byte header and the
    // pages and windows of both streams.
    assert_eq!(file[..4], FILE_MAGIC);
    assert_eq!(u16::from_le_bytes([file[4], file[5]]), FILE_VERSION);
    let page = |s: &str| {
        CodecConfig::new(spec(s), 16)
            .build()
            .unwrap()
            .encoded_len(4)
    };
    // Layer 0: three pages of 4 tokens (the last one partial). Layer 1 (KIVI, b = 2,
    // G = 4): two flushed pages of one key group (16 · 32 + 4 · 16 · 2 bits) and four
    // value vectors (4 · (32 + 4 · 2) bits each), and a window of 3 f16 keys and values.
    let layer0 = 2 * 3 * (page("voronoi-e8-q6-s3") + page("int4"));
    let layer1 = 2 * (2 * (80 + 80) + 2 * 3 * 16 * 2);
    // Layer 2: 9 tokens coded (three pages), a window of 2 int8 tokens and 2 int8 sink
    // tokens (K and V of each; an f16 scale and 16 values each) and a key offset of 16 f32.
    let layer2 = 2 * (3 * (page("voronoi-e8-q6-s3") + page("int4")) + 2 * 2 * 2 * (2 + 16) + 64);
    assert_eq!(file.len(), 64 + 3 * 96 + layer0 + layer1 + layer2);
    let loaded = KvCache::load(&mut file.as_slice()).unwrap();
    assert_eq!(loaded.config(), cache.config());
    assert_eq!(loaded.bytes_held(), cache.bytes_held());
    for layer in 0..3 {
        assert_eq!(loaded.held(layer).unwrap(), 0..11);
        for kv in [Kv::K, Kv::V] {
            assert_eq!(
                gather_all(&loaded, layer, kv, 0..11),
                gather_all(&cache, layer, kv, 0..11)
            );
        }
    }
    let mut again = Vec::new();
    loaded.save(&mut again).unwrap();
    assert!(again == file);

    // Both continue identically.
    let (k, v) = tokens(2, 3, 16, 14);
    for c in [&cache, &loaded] {
        c.append(1, Input::F32(&k), Input::F32(&v)).unwrap();
    }
    assert_eq!(
        gather_all(&loaded, 1, Kv::K, 0..14),
        gather_all(&cache, 1, Kv::K, 0..14)
    );
}

#[test]
fn a_page_range_loads_as_a_cache_of_those_positions() {
    let cache = small_cache();
    // Pages 1..2 hold positions 4..8 of each layer.
    let mut file = Vec::new();
    cache.save_pages(&mut file, 1..2).unwrap();
    let part = KvCache::load(&mut file.as_slice()).unwrap();
    for layer in 0..3 {
        assert_eq!(part.held(layer).unwrap(), 4..8);
        assert_eq!(
            gather_all(&part, layer, Kv::V, 4..8),
            gather_all(&cache, layer, Kv::V, 4..8)
        );
    }
    // A prefix (pages 0..2) can be continued like the original cut at 8 tokens.
    let mut file = Vec::new();
    cache.save_pages(&mut file, 0..2).unwrap();
    let prefix = KvCache::load(&mut file.as_slice()).unwrap();
    assert_eq!(prefix.len(0).unwrap(), 8);
    let q = gaussian(4 * 16, 15);
    let mut out = vec![0f32; q.len()];
    prefix
        .attend(0, Input::F32(&q), 4, Output::F32(&mut out))
        .unwrap();
    // Pages past the end hold nothing.
    assert!(matches!(
        cache.save_pages(&mut Vec::new(), 3..5),
        Err(Error::TokensNotHeld { .. })
    ));
    // Page 2 holds positions 8..11: in the codec layer a partial page, in the KIVI layer
    // (8 tokens flushed) the f16 window; both load back exactly.
    let mut file = Vec::new();
    cache.save_pages(&mut file, 2..3).unwrap();
    let tail = KvCache::load(&mut file.as_slice()).unwrap();
    assert_eq!(tail.held(1).unwrap(), 8..11);
    assert_eq!(
        gather_all(&tail, 1, Kv::K, 8..11),
        gather_all(&cache, 1, Kv::K, 8..11)
    );
}

#[test]
fn protection_keeps_sinks_and_recent_tokens_in_f16_and_centres_keys() {
    let (d, page, n) = (64, 16, 100);
    let protection = Protection {
        sink_tokens: 4,
        recent_tokens: 8,
        key_centre_tokens: 32,
        ..Protection::NONE
    };
    let plain = LayerPolicy::codecs(spec("voronoi-e8-q9-s2"), spec("voronoi-e8-q9-s2"));
    let config = |p| CacheConfig::new(1, 2, d, vec![p]).with_page_tokens(page);
    // Keys with a large shared mean (as real keys have), values without.
    let (mut k, v) = tokens(2, n, d, 21);
    let mean = gaussian(d, 22);
    for (i, x) in k.iter_mut().enumerate() {
        *x += 4.0 * mean[i % d];
    }
    let rel_error = |cache: &KvCache, kv: Kv, x: &[f32], range: Range<usize>| {
        let got = gather_all(cache, 0, kv, 0..n);
        let (mut e, mut s) = (0f64, 0f64);
        for st in 0..2 {
            for t in range.clone() {
                for c in 0..d {
                    let i = (st * n + t) * d + c;
                    e += f64::from(got[i] - x[i]).powi(2);
                    s += f64::from(x[i]).powi(2);
                }
            }
        }
        e / s
    };
    let caches = [plain, plain.with_protection(protection)].map(|p| {
        let cache = KvCache::new(config(p)).unwrap();
        cache.append(0, Input::F32(&k), Input::F32(&v)).unwrap();
        cache
    });
    let [bare, kept] = &caches;
    // Sinks and the last 8 tokens read back as f16; the rest is coded.
    let f16 = |x: f32| half::f16::from_f32(x).to_f32();
    let got = gather_all(kept, 0, Kv::K, 0..n);
    for st in 0..2 {
        for t in (0..4).chain(n - 8..n) {
            let i = (st * n + t) * d;
            let want: Vec<f32> = k[i..i + d].iter().map(|&x| f16(x)).collect();
            assert_eq!(got[i..i + d], want[..], "stream {st}, token {t}");
        }
    }
    // Centring removes the shared mean from what the codec codes: the coded keys' error
    // falls by well over the 6 dB a 4× mean against unit noise predicts.
    let coded = 4..n - 8;
    let (e_bare, e_kept) = (
        rel_error(bare, Kv::K, &k, coded.clone()),
        rel_error(kept, Kv::K, &k, coded.clone()),
    );
    assert!(e_kept < e_bare / 4.0, "{e_kept} vs {e_bare}");
    // Values are not centred: the same codec, the same error up to the f16 rounding.
    let (v_bare, v_kept) = (
        rel_error(bare, Kv::V, &v, coded.clone()),
        rel_error(kept, Kv::V, &v, coded),
    );
    assert!((v_kept / v_bare - 1.0).abs() < 0.05, "{v_kept} vs {v_bare}");
    // Memory: the pages of all 100 tokens' first 92, the window (8 tokens once coding has
    // begun), 4 sink tokens and the offset (plain, rotated).
    let codec = CodecConfig::new(spec("voronoi-e8-q9-s2"), d)
        .build()
        .unwrap();
    let pages = 92usize.div_ceil(page);
    let per_stream =
        2 * pages * codec.encoded_len(page) + 2 * (8 + 4) * d * 2 + 2 * d * size_of::<f32>();
    assert_eq!(kept.bytes_held(), 2 * per_stream);
    // Nothing is coded before the offset's positions exist: 35 tokens stay in f16.
    let early = KvCache::new(config(plain.with_protection(protection))).unwrap();
    let first = |m: usize, x: &[f32]| -> Vec<f32> {
        (0..2)
            .flat_map(|s| x[s * n * d..(s * n + m) * d].to_vec())
            .collect()
    };
    early
        .append(0, Input::F32(&first(35, &k)), Input::F32(&first(35, &v)))
        .unwrap();
    let got = gather_all(&early, 0, Kv::K, 0..35);
    assert!(got.iter().zip(&first(35, &k)).all(|(a, &b)| *a == f16(b)));
    // More sinks than a page holds is refused.
    let too_many = plain.with_protection(Protection {
        sink_tokens: 17,
        ..Protection::NONE
    });
    assert!(matches!(
        KvCache::new(config(too_many)),
        Err(Error::InvalidLayer { .. })
    ));
}

/// Rewrites a saved file's version (and the header checksum that covers it).
fn set_version(file: &mut [u8], version: u16) {
    file[4..6].copy_from_slice(&version.to_le_bytes());
    let crc = !kv_codec::format::crc32_update(!0, &file[..56]);
    file[56..60].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn a_version_2_file_still_loads() {
    // Version 2 had f16 windows only, its window-format byte a reserved zero: a v3 file of a
    // cache with f16 windows differs from the v2 file only in the version (and checksum).
    let protected = |window| {
        let policy = LayerPolicy::codecs(spec("int4"), spec("int8")).with_protection(Protection {
            sink_tokens: 2,
            recent_tokens: 3,
            key_centre_tokens: 4,
            window,
        });
        let cache =
            KvCache::new(CacheConfig::new(1, 2, 32, vec![policy]).with_page_tokens(8)).unwrap();
        let (k, v) = tokens(2, 20, 32, 24);
        cache.append(0, Input::F32(&k), Input::F32(&v)).unwrap();
        let mut file = Vec::new();
        cache.save(&mut file).unwrap();
        set_version(&mut file, 2);
        (cache, file)
    };
    let (cache, file) = protected(WindowFormat::F16);
    let loaded = KvCache::load(&mut file.as_slice()).unwrap();
    assert_eq!(loaded.config(), cache.config());
    for kv in [Kv::K, Kv::V] {
        assert_eq!(
            gather_all(&loaded, 0, kv, 0..20),
            gather_all(&cache, 0, kv, 0..20)
        );
    }
    // A version-2 file may not carry an int8 window.
    let (_, file) = protected(WindowFormat::Int8);
    assert!(matches!(
        KvCache::load(&mut file.as_slice()),
        Err(Error::CorruptHeader {
            field: "window format"
        })
    ));
}

#[test]
fn a_version_1_file_still_loads() {
    // Version 1 had no protection: its fields were reserved zeros, and a v2 file of an
    // unprotected cache differs from the v1 file only in the version (and checksum).
    let layers = vec![
        LayerPolicy::codecs(spec("voronoi-e8-q6-s3"), spec("int4")),
        LayerPolicy::Kivi(Kivi::KIVI2),
    ];
    let cache = KvCache::new(CacheConfig::new(1, 2, 32, layers).with_page_tokens(32)).unwrap();
    let (k, v) = tokens(2, 40, 32, 23);
    for layer in 0..2 {
        cache.append(layer, Input::F32(&k), Input::F32(&v)).unwrap();
    }
    let mut file = Vec::new();
    cache.save(&mut file).unwrap();
    set_version(&mut file, 1);
    let loaded = KvCache::load(&mut file.as_slice()).unwrap();
    assert_eq!(loaded.config(), cache.config());
    assert_eq!(
        gather_all(&loaded, 0, Kv::K, 0..40),
        gather_all(&cache, 0, Kv::K, 0..40)
    );
    // A version-1 file may not carry protection.
    let protected = KvCache::new(
        CacheConfig::new(
            1,
            1,
            32,
            vec![
                LayerPolicy::codecs(spec("int8"), spec("int8")).with_protection(Protection {
                    recent_tokens: 2,
                    ..Protection::NONE
                }),
            ],
        )
        .with_page_tokens(8),
    )
    .unwrap();
    let mut file = Vec::new();
    protected.save(&mut file).unwrap();
    set_version(&mut file, 1);
    assert!(matches!(
        KvCache::load(&mut file.as_slice()),
        Err(Error::CorruptHeader { .. })
    ));
}

#[test]
fn an_undecodable_window_token_under_a_valid_checksum_is_refused() {
    // small_cache's third layer holds its window and sinks as int8 vectors (an f16x scale,
    // then 16 levels): write the level int8 never writes (-128) into the last sink value
    // vector of the last stream, just before its key offset, and fix the layer's checksum.
    let mut file = Vec::new();
    small_cache().save(&mut file).unwrap();
    let u64_at = |f: &[u8], at: usize| u64::from_le_bytes(f[at..at + 8].try_into().unwrap());
    let mut at = 64;
    for _ in 0..2 {
        at += 96 + u64_at(&file, at + 80) as usize;
    }
    let end = at + 96 + u64_at(&file, at + 80) as usize;
    assert_eq!(end, file.len());
    file[end - 64 - 1] = 0x80;
    let crc = !kv_codec::format::crc32_update(
        kv_codec::format::crc32_update(!0, &file[at..at + 88]),
        &file[at + 96..end],
    );
    file[at + 88..at + 92].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        KvCache::load(&mut file.as_slice()),
        Err(Error::CorruptPayload { .. })
    ));
}

#[test]
fn every_corrupted_or_truncated_file_is_refused() {
    let cache = small_cache();
    let mut file = Vec::new();
    cache.save(&mut file).unwrap();
    for at in 0..file.len() {
        for bit in [0, 5] {
            let mut bad = file.clone();
            bad[at] ^= 1 << bit;
            assert!(
                KvCache::load(&mut bad.as_slice()).is_err(),
                "flipping bit {bit} of byte {at} went unnoticed"
            );
        }
    }
    for len in 0..file.len() {
        assert!(
            matches!(
                KvCache::load(&mut &file[..len]),
                Err(Error::Truncated { .. } | Error::BadMagic)
            ),
            "truncated at {len}"
        );
    }
    let mut longer = file.clone();
    longer.push(0);
    assert!(matches!(
        KvCache::load(&mut longer.as_slice()),
        Err(Error::CorruptHeader {
            field: "trailing bytes"
        })
    ));
    let mut foreign = file.clone();
    foreign[0] = b'X';
    assert!(matches!(
        KvCache::load(&mut foreign.as_slice()),
        Err(Error::BadMagic)
    ));
    let mut newer = file;
    newer[4..6].copy_from_slice(&(FILE_VERSION + 1).to_le_bytes());
    assert!(matches!(
        KvCache::load(&mut newer.as_slice()),
        Err(Error::UnsupportedVersion { version, .. }) if version == FILE_VERSION + 1
    ));
}

#[test]
fn concurrent_appends_to_different_layers() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<KvCache>();
    let layers = 4;
    let policy = LayerPolicy::codecs(spec("voronoi-e8-q8-s2"), spec("voronoi-e8-q8-s2"));
    let config = CacheConfig::new(1, 2, 32, vec![policy; layers]).with_page_tokens(8);
    let (k, v) = tokens(2, 40, 32, 16);
    let token = |t: usize, x: &[f32]| -> Vec<f32> {
        (0..2)
            .flat_map(|s| x[(s * 40 + t) * 32..(s * 40 + t + 1) * 32].to_vec())
            .collect()
    };
    let shared = KvCache::new(config.clone()).unwrap();
    std::thread::scope(|scope| {
        for layer in 0..layers {
            let (shared, k, v) = (&shared, &k, &v);
            scope.spawn(move || {
                for t in 0..40 {
                    shared
                        .append(layer, Input::F32(&token(t, k)), Input::F32(&token(t, v)))
                        .unwrap();
                }
            });
        }
    });
    let serial = KvCache::new(config).unwrap();
    for layer in 0..layers {
        serial
            .append(layer, Input::F32(&k), Input::F32(&v))
            .unwrap();
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    shared.save(&mut a).unwrap();
    serial.save(&mut b).unwrap();
    assert!(a == b);
}

#[test]
fn misuse_gives_typed_errors() {
    let policy = LayerPolicy::codecs(spec("voronoi-e8-q16-s4"), spec("int8"));
    let cache = KvCache::new(CacheConfig::new(1, 2, 64, vec![policy])).unwrap();
    let x = vec![0.5f32; 2 * 64];
    let h = vec![half::bf16::ONE; 2 * 64];
    assert!(matches!(
        cache.append(0, Input::Bf16(&h), Input::Bf16(&h)),
        Err(Error::DtypeMismatch {
            what: "keys",
            expected: Dtype::F32,
            actual: Dtype::Bf16
        })
    ));
    assert!(matches!(
        cache.append(0, Input::F32(&x[..100]), Input::F32(&x[..100])),
        Err(Error::LengthMismatch { what: "keys", .. })
    ));
    assert!(matches!(
        cache.append(0, Input::F32(&x), Input::F32(&x[..64])),
        Err(Error::LengthMismatch { what: "values", .. })
    ));
    assert!(matches!(
        cache.append(3, Input::F32(&x), Input::F32(&x)),
        Err(Error::LayerOutOfRange {
            layer: 3,
            layers: 1
        })
    ));
    let mut nan = x.clone();
    nan[64 + 5] = f32::NAN;
    assert!(matches!(
        cache.append(0, Input::F32(&x), Input::F32(&nan)),
        Err(Error::NonFinite { vector: 3 })
    ));
    assert_eq!(cache.len(0).unwrap(), 0, "nothing was appended");
    cache.append(0, Input::F32(&x), Input::F32(&x)).unwrap();
    let mut out = vec![0f32; 3 * 64];
    assert!(matches!(
        cache.attend(0, Input::F32(&vec![0.0; 3 * 64]), 3, Output::F32(&mut out)),
        Err(Error::HeadsMismatch {
            q_heads: 3,
            kv_heads: 2
        })
    ));
    // Two query positions, but the layer holds one token.
    let mut out = vec![0f32; 2 * 2 * 64];
    assert!(matches!(
        cache.attend(0, Input::F32(&vec![0.0; 4 * 64]), 2, Output::F32(&mut out)),
        Err(Error::TokensNotHeld { .. })
    ));
    assert!(matches!(
        cache.attend(0, Input::F32(&vec![0.0; 2 * 64]), 2, Output::F32(&mut out)),
        Err(Error::LengthMismatch { .. })
    ));
    // A codec that does not support the head_dim is named with its layer.
    let bad = LayerPolicy::codecs(spec("compat-d4-q38"), spec("int8"));
    let ok = LayerPolicy::uncompressed(Dtype::F16);
    assert!(matches!(
        KvCache::new(CacheConfig::new(1, 1, 96, vec![ok, bad])),
        Err(Error::InvalidLayer { layer: 1, ref source }) if matches!(**source, Error::UnsupportedHeadDim { head_dim: 96 })
    ));
    assert!(matches!(
        KvCache::new(CacheConfig::new(1, 1, 64, vec![ok]).with_page_tokens(0)),
        Err(Error::InvalidParameter {
            name: "page_tokens",
            ..
        })
    ));
    let kivi = LayerPolicy::Kivi(Kivi::KIVI2);
    assert!(matches!(
        KvCache::new(CacheConfig::new(1, 1, 128, vec![kivi]).with_page_tokens(48)),
        Err(Error::InvalidLayer { layer: 0, .. })
    ));
}

#[test]
fn the_plan_json_has_exactly_the_documented_schema() {
    let text =
        r#"{"layers":[{"k":"voronoi-e8-q16-s4","v":"voronoi-e8-q13-s2"},{"k":null,"v":"bf16"}]}"#;
    let plan = CachePlan::from_json(text).unwrap();
    assert_eq!(plan.to_json(), text);
    let config = CacheConfig::from_plan(&plan, 1, 2, 64);
    assert_eq!(
        config.layers,
        vec![
            LayerPolicy::codecs(spec("voronoi-e8-q16-s4"), spec("voronoi-e8-q13-s2")),
            LayerPolicy::PerVector {
                k: Storage::Dense(Dtype::F16),
                v: Storage::Codec(CodecSpec::Bf16),
                protection: Protection::NONE,
            },
        ]
    );
    KvCache::new(config).unwrap();
    assert_eq!(plan.policies_for(2).unwrap().len(), 2);
    assert!(matches!(
        plan.policies_for(3),
        Err(Error::PlanLayers {
            expected: 3,
            actual: 2
        })
    ));
    // The window format: written only when not f16.
    let int8 = r#"{"layers":[{"k":"int4","v":"int4","protection":{"sink_tokens":0,"recent_tokens":32,"key_centre_tokens":0,"window":"int8"}}]}"#;
    let plan = CachePlan::from_json(int8).unwrap();
    assert_eq!(plan.to_json(), int8);
    assert_eq!(
        plan.policies()[0],
        LayerPolicy::codecs(spec("int4"), spec("int4")).with_protection(Protection {
            recent_tokens: 32,
            window: WindowFormat::Int8,
            ..Protection::NONE
        })
    );
    for bad in [
        r#"{"layers":[{"k":null}]}"#,
        r#"{"layers":[{"k":null,"v":null,"w":null}]}"#,
        r#"{"layers":[{"k":"int4","v":"int4","protection":{"window":"int4"}}]}"#,
        r#"{"layers":[{"k":"voronoi-e8-q16-s9","v":null}]}"#,
        r#"{"layers":[{"k":16,"v":null}]}"#,
        r#"{"layer":[]}"#,
        "",
    ] {
        assert!(
            matches!(CachePlan::from_json(bad), Err(Error::PlanJson(_))),
            "{bad}"
        );
    }
}

/// A codec that rotates but keeps the trait's default `decode_rotated`.
#[derive(Debug)]
struct DefaultRotated(Box<dyn VectorCodec>);

impl VectorCodec for DefaultRotated {
    fn spec(&self) -> CodecSpec {
        self.0.spec()
    }
    fn head_dim(&self) -> usize {
        self.0.head_dim()
    }
    fn bits_per_vector(&self) -> u32 {
        self.0.bits_per_vector()
    }
    fn scratch_len(&self) -> usize {
        self.0.scratch_len()
    }
    fn encode_vector(&self, x: &[f32], out: &mut [u8], scratch: &mut [f32]) {
        self.0.encode_vector(x, out, scratch);
    }
    fn decode_vector(&self, b: &[u8], out: &mut [f32], s: &mut [f32]) -> Result<(), &'static str> {
        self.0.decode_vector(b, out, s)
    }
    fn rotation(&self) -> Option<&hadamard::Fwht> {
        self.0.rotation()
    }
}

#[test]
fn rotated_decodes_are_the_rotation_of_the_decodes() {
    let x = tokens(1, 6, 64, 17).0;
    for s in [
        "voronoi-e8-q16-s4",
        "voronoi-e8-q6-s3",
        "compat-d4-q38",
        "compat-e8-q4-joint",
        "bf16",
        "fp8-e4m3",
        "int4",
        "q8_0",
        "q4_0",
        "turboquant-b3",
        "strawman-b4",
    ] {
        let codec = CodecConfig::new(spec(s), 64).build().unwrap();
        let default = DefaultRotated(CodecConfig::new(spec(s), 64).build().unwrap());
        let rotates = !matches!(
            spec(s),
            CodecSpec::Bf16 | CodecSpec::Fp8E4m3 { .. } | CodecSpec::Int { .. }
        );
        assert_eq!(codec.rotation().is_some(), rotates, "{s}");
        let mut scratch = vec![0f32; codec.scratch_len()];
        let mut bytes = vec![0u8; codec.bytes_per_vector()];
        for v in x.chunks_exact(64) {
            codec.encode_vector(v, &mut bytes, &mut scratch);
            let mut plain = vec![0f32; 64];
            codec
                .decode_vector(&bytes, &mut plain, &mut scratch)
                .unwrap();
            let mut fast = vec![0f32; 64];
            codec
                .decode_rotated(&bytes, &mut fast, &mut scratch)
                .unwrap();
            let mut slow = vec![0f32; 64];
            default
                .decode_rotated(&bytes, &mut slow, &mut scratch)
                .unwrap();
            let mut expected = plain.clone();
            if let Some(r) = codec.rotation() {
                r.forward_inplace(&mut expected);
            }
            assert_eq!(slow, expected, "{s}: the default rotates the decode");
            let err: f32 = fast
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            let norm: f32 = expected.iter().map(|a| a * a).sum();
            assert!(err <= 1e-12 * norm, "{s}: {err} vs {norm}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Attention matches the reference for random shapes, page sizes, policies, windows.
    #[test]
    fn attention_matches_the_reference_on_random_shapes(
        batch in 1usize..=2,
        kv_heads in 1usize..=3,
        // Groups of 4 and 5 take the scores' four-query pass (with a leftover at 5).
        group in 1usize..=5,
        d in prop::sample::select(vec![8usize, 16, 24, 32]),
        page_units in 1usize..=5,
        prefill in 1usize..=24,
        steps in 0usize..=3,
        policy in 0usize..5,
        window in prop::option::of(1usize..=12),
    ) {
        let (policy, unit) = match policy {
            0 => (LayerPolicy::codecs(spec("voronoi-e8-q4-s2"), spec("voronoi-e8-q5-s1")), 1),
            1 => (LayerPolicy::codecs(spec("int4"), spec("turboquant-b2")), 1),
            2 => (LayerPolicy::uncompressed(Dtype::F16), 1),
            3 => (LayerPolicy::codecs(spec("q8_0"), spec("fp8-e4m3")), 1),
            _ => (LayerPolicy::Kivi(Kivi { bits: 3, group: 4, residual: 3 }), 4),
        };
        let policy = if d % 32 != 0 && policy == LayerPolicy::codecs(spec("q8_0"), spec("fp8-e4m3")) {
            LayerPolicy::uncompressed(Dtype::Bf16)
        } else {
            policy
        };
        let mut config = CacheConfig::new(batch, kv_heads, d, vec![policy])
            .with_page_tokens(page_units * unit);
        if let Some(w) = window {
            config = config.with_sliding_window(w);
        }
        run_and_check(config, kv_heads * group, prefill, steps);
    }

    /// Random byte flips and truncations of a cache file are refused, never a panic.
    #[test]
    fn random_damage_to_a_file_is_an_error(at in 0usize..10_000, value in 1u8..=255, cut in 0usize..10_000) {
        let cache = small_cache();
        let mut file = Vec::new();
        cache.save(&mut file).unwrap();
        let mut bad = file.clone();
        let at = at % bad.len();
        bad[at] ^= value;
        prop_assert!(KvCache::load(&mut bad.as_slice()).is_err());
        let cut = cut % file.len();
        prop_assert!(KvCache::load(&mut &file[..cut]).is_err());
    }
}
