//! CPU↔CUDA parity of every codec with kernels (feature `cuda`): the GPU must write the same
//! bytes as the CPU and decode them to the same bits, report the same first fault, and write
//! every output element (outputs are poisoned before each run).
//!
//! Tests that need a GPU print why they skip when `kv_cuda::is_available()` is false (written
//! straight to stderr, past the test harness's capture, so a skip is never silent). The
//! larger parity runs (10^7 random vectors, the real K/V of ../shared/data) are in kv-audit's
//! `gpu_parity` example.
#![cfg(feature = "cuda")]

use std::io::Write;
use std::sync::{Arc, OnceLock};

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use kv_codec::cache::{CacheConfig, KvCache, LayerPolicy};
use kv_codec::cuda::{self, Device, DeviceLayer, PagePool, Plan, Values, ValuesMut};
use kv_codec::format::Dtype;
use kv_codec::{
    Backend, CodecConfig, CodecSpec, Error, Input, Output, Par, decode_batch, encode_batch,
};

/// The device, or `None` with the skip reason printed for `test`.
fn device(test: &str) -> Option<Arc<Device>> {
    static DEVICE: OnceLock<Option<Arc<Device>>> = OnceLock::new();
    let device = DEVICE
        .get_or_init(|| {
            cuda::is_available().then(|| Arc::new(Device::new(0).expect("device 0 opens")))
        })
        .clone();
    if device.is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: kv_cuda::is_available() is false (no CUDA driver, NVRTC or GPU)"
        );
    }
    device
}

/// Gaussian vectors at random scales, with the awkward cases mixed in: zero vectors, one-hot
/// and constant vectors (worst cases of the rotation), a huge outlier channel, half-integer
/// values (rounding ties) and scales from 1e-30 to 1e30 (the exact prescaling paths).
fn vectors(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut x = Vec::with_capacity(n * d);
    for v in 0..n {
        let scale = 10f64.powf(next() * 60.0 - 30.0);
        for i in 0..d {
            let g = (-2.0 * next().ln()).sqrt() * (std::f64::consts::TAU * next()).cos();
            let value = match v % 16 {
                0 => 0.0,
                1 => f64::from(u8::from(i == 5)) * scale,
                2 => scale,
                3 if i % 7 == 0 => 50.0 * scale,
                4 => (2.0 * g).round() * 0.5,
                5..=9 => g,
                _ => g * scale,
            };
            x.push(value as f32);
        }
    }
    x
}

const SPECS: [&str; 14] = [
    "voronoi-e8-q16-s4",
    "voronoi-e8-q4-s2",
    "voronoi-e8-q6-s3",
    "voronoi-e8-q256-s1",
    "compat-d4-q38",
    "compat-e8-q4",
    "compat-d4-q10-joint",
    "compat-e8-q10-joint",
    "turboquant-b3",
    "fp8-e4m3",
    "fp8-e4m3-g64",
    "int8",
    "int4-g32",
    "bf16",
];

/// Encodes and decodes `n` vectors in each dtype on both backends and compares the bits.
fn check_parity(device: &Arc<Device>, spec: &str, d: usize, n: usize) {
    let config = CodecConfig::new(spec.parse::<CodecSpec>().unwrap(), d);
    let Ok(cpu) = config.build() else {
        return; // a shape this codec refuses on every backend
    };
    let plan = device
        .load(Plan::new(cuda::kernel_codec(&config).unwrap()).unwrap())
        .unwrap();
    assert_eq!(plan.plan().bits_per_vector(), cpu.bits_per_vector());
    let x = vectors(n, d, 0x5eed ^ d as u64);
    let x16: Vec<f16> = x
        .iter()
        .map(|&v| f16::from_f32(v.clamp(-6e4, 6e4)))
        .collect();
    let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let bytes_len = cpu.encoded_len(n);
    let mut out = device.zeros::<u8>(bytes_len).unwrap();
    for (name, input) in [
        ("f32", Input::F32(&x)),
        ("f16", Input::F16(&x16)),
        ("bf16", Input::Bf16(&xb)),
    ] {
        let mut want = vec![0u8; bytes_len];
        encode_batch(cpu.as_ref(), input, &mut want, Par::Rayon).unwrap();
        device.fill_bytes(&mut out, 0xCD).unwrap();
        match input {
            Input::F32(v) => plan.encode(Values::F32(&device.upload(v).unwrap()), &mut out),
            Input::F16(v) => plan.encode(
                Values::F16(&device.upload(v.reinterpret_cast()).unwrap()),
                &mut out,
            ),
            Input::Bf16(v) => plan.encode(
                Values::Bf16(&device.upload(v.reinterpret_cast()).unwrap()),
                &mut out,
            ),
        }
        .unwrap();
        let mut got = vec![0u8; bytes_len];
        device.download(&out, &mut got).unwrap();
        let first = want.iter().zip(&got).position(|(a, b)| a != b);
        assert_eq!(first, None, "{spec} d={d} {name}: encoded bytes differ");

        // Decode the CPU's bytes into each output dtype.
        let src = device.upload(&want).unwrap();
        let mut y = vec![0f32; n * d];
        decode_batch(cpu.as_ref(), &want, Output::F32(&mut y), Par::Rayon).unwrap();
        let mut gy = device.zeros::<f32>(n * d).unwrap();
        device.fill_bytes(&mut gy, 0xCD).unwrap();
        plan.decode(&src, ValuesMut::F32(&mut gy)).unwrap();
        let mut got_y = vec![0f32; n * d];
        device.download(&gy, &mut got_y).unwrap();
        let first = y
            .iter()
            .zip(&got_y)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(first, None, "{spec} d={d} {name}: decoded f32 differ");

        let mut y16 = vec![f16::ZERO; n * d];
        decode_batch(cpu.as_ref(), &want, Output::F16(&mut y16), Par::Rayon).unwrap();
        let mut g16 = device.zeros::<u16>(n * d).unwrap();
        device.fill_bytes(&mut g16, 0xCD).unwrap();
        plan.decode(&src, ValuesMut::F16(&mut g16)).unwrap();
        let mut got16 = vec![0u16; n * d];
        device.download(&g16, &mut got16).unwrap();
        assert_eq!(
            y16.reinterpret_cast(),
            &got16[..],
            "{spec} d={d} {name}: decoded f16 differ"
        );

        let mut yb = vec![bf16::ZERO; n * d];
        decode_batch(cpu.as_ref(), &want, Output::Bf16(&mut yb), Par::Rayon).unwrap();
        let mut gb = device.zeros::<u16>(n * d).unwrap();
        device.fill_bytes(&mut gb, 0xCD).unwrap();
        plan.decode(&src, ValuesMut::Bf16(&mut gb)).unwrap();
        let mut gotb = vec![0u16; n * d];
        device.download(&gb, &mut gotb).unwrap();
        assert_eq!(
            yb.reinterpret_cast(),
            &gotb[..],
            "{spec} d={d} {name}: decoded bf16 differ"
        );
    }
}

#[test]
fn every_codec_matches_the_cpu_bit_for_bit() {
    let Some(device) = device("every_codec_matches_the_cpu_bit_for_bit") else {
        return;
    };
    // Counts that are not multiples of the 32-vector chunk exercise the partial last chunk.
    for spec in SPECS {
        for d in [64, 96, 128, 256] {
            check_parity(&device, spec, d, 4099);
        }
    }
    for d in [8, 24, 80, 112, 160, 192, 224] {
        for spec in ["voronoi-e8-q16-s4", "turboquant-b4", "int4", "fp8-e4m3"] {
            check_parity(&device, spec, d, 1027);
        }
    }
}

#[test]
fn host_api_on_the_cuda_backend_matches_the_cpu() {
    let Some(_) = device("host_api_on_the_cuda_backend_matches_the_cpu") else {
        return;
    };
    let config = CodecConfig::default();
    let gpu = config.build_on(Backend::Cuda { ordinal: 0 }).unwrap();
    let cpu = config.build().unwrap();
    let x = vectors(777, 128, 3);
    let mut a = vec![0u8; cpu.encoded_len(777)];
    let mut b = vec![0u8; cpu.encoded_len(777)];
    cpu.encode(Input::F32(&x), &mut a).unwrap();
    gpu.encode(Input::F32(&x), &mut b).unwrap();
    assert_eq!(a, b);
    let (mut ya, mut yb) = (vec![0f32; x.len()], vec![0f32; x.len()]);
    cpu.decode(&a, Output::F32(&mut ya)).unwrap();
    gpu.decode(&a, Output::F32(&mut yb)).unwrap();
    assert!(ya.iter().zip(&yb).all(|(p, q)| p.to_bits() == q.to_bits()));
    // Lengths are checked before anything reaches the device.
    assert!(matches!(
        gpu.encode(Input::F32(&x[..100]), &mut b),
        Err(Error::LengthMismatch { .. })
    ));
}

#[test]
fn faults_are_the_cpus() {
    let Some(_) = device("faults_are_the_cpus") else {
        return;
    };
    for spec in SPECS {
        let config = CodecConfig::new(spec.parse::<CodecSpec>().unwrap(), 128);
        let cpu = config.build().unwrap();
        let gpu = config.build_on(Backend::Cuda { ordinal: 0 }).unwrap();
        let n = 300;
        // A NaN in vector 77 and an infinity in vector 201: both report vector 77.
        let mut x = vectors(n, 128, 9);
        x[77 * 128 + 3] = f32::NAN;
        x[201 * 128] = f32::INFINITY;
        let mut bytes = vec![0u8; cpu.encoded_len(n)];
        let err = gpu.encode(Input::F32(&x), &mut bytes).unwrap_err();
        assert!(
            matches!(err, Error::NonFinite { vector: 77 }),
            "{spec}: {err}"
        );
        // Random bytes: the same first corrupt vector and reason as the CPU, or no error.
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for b in &mut bytes {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            *b = (s >> 56) as u8;
        }
        let mut y = vec![0f32; n * 128];
        let want = cpu
            .decode(&bytes, Output::F32(&mut y))
            .err()
            .map(|e| e.to_string());
        let got = gpu
            .decode(&bytes, Output::F32(&mut y))
            .err()
            .map(|e| e.to_string());
        assert_eq!(got, want, "{spec}");
    }
}

#[test]
fn shapes_without_kernels_are_typed_errors() {
    // Needs no device: the plan is refused before any driver call.
    for (spec, d) in [
        ("voronoi-e8-q16-s4", 512),
        ("voronoi-e8-q512-s4", 128),
        ("int4-g4", 64),
        ("q4_0", 128),
        ("strawman-b3", 128),
    ] {
        let config = CodecConfig::new(spec.parse::<CodecSpec>().unwrap(), d);
        let err = cuda::kernel_codec(&config)
            .and_then(|k| Plan::new(k).map_err(Error::from))
            .unwrap_err();
        assert!(
            matches!(err, Error::Cuda(cuda::CudaError::Unsupported { .. })),
            "{spec} d={d}: {err}"
        );
    }
}

// --- Decode attention on device pages -------------------------------------------------------

/// Seeded Gaussian values times `scale`.
fn gaussian(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let g = (-2.0 * next().ln()).sqrt() * (std::f64::consts::TAU * next()).cos();
            g as f32 * scale
        })
        .collect()
}

/// One attention case: a CPU cache of `len` tokens (appended as a prefill and one decode
/// token), the same layer on the device twice (its pages copied from the CPU cache, and
/// appended from device tensors and encoded there), the pages compared byte for byte and
/// the attention of one query per batch row compared with `KvCache::attend` within 1e-3
/// relative (per output vector, against its largest magnitude). Outputs are poisoned
/// before each run.
struct Case {
    k: &'static str,
    v: &'static str,
    d: usize,
    batch: usize,
    kv_heads: usize,
    q_heads: usize,
    page: usize,
    len: usize,
}

fn check_attention(device: &Arc<Device>, c: &Case) {
    let name = format!(
        "K {} V {} d={} batch={} heads={}/{} page={} len={}",
        c.k, c.v, c.d, c.batch, c.q_heads, c.kv_heads, c.page, c.len
    );
    let policy = LayerPolicy::codecs(c.k.parse().unwrap(), c.v.parse().unwrap());
    let config = CacheConfig::new(c.batch, c.kv_heads, c.d, vec![policy]).with_page_tokens(c.page);
    let cache = KvCache::new(config.clone()).unwrap();
    let mut gpu = DeviceLayer::new(device, &config, 0, c.len).unwrap();
    let streams = c.batch * c.kv_heads;
    for (i, n) in [c.len - 1, 1].into_iter().enumerate() {
        let k = gaussian(streams * n * c.d, 11 + i as u64, 1.0);
        let v = gaussian(streams * n * c.d, 23 + i as u64, 1.0);
        cache.append(0, Input::F32(&k), Input::F32(&v)).unwrap();
        let (kd, vd) = (device.upload(&k).unwrap(), device.upload(&v).unwrap());
        gpu.append(Values::F32(&kd), Values::F32(&vd)).unwrap();
    }
    let copied = DeviceLayer::from_cache(device, &cache, 0, c.len).unwrap();
    assert_eq!((gpu.len(), copied.len()), (c.len, c.len));
    // The device-encoded pages are the CPU's bytes.
    for pool in [PagePool::K, PagePool::V] {
        let bytes = gpu.pages().layout(pool).page_bytes();
        let (mut a, mut b) = (vec![0u8; bytes], vec![0u8; bytes]);
        for s in 0..streams {
            for p in 0..c.len.div_ceil(c.page) {
                gpu.pages().read_page(pool, s, p, &mut a).unwrap();
                copied.pages().read_page(pool, s, p, &mut b).unwrap();
                assert!(a == b, "{name}: {pool:?} page {p} of stream {s} differs");
            }
        }
    }
    // Queries with a peaked softmax (scores of several units).
    let q = gaussian(c.batch * c.q_heads * c.d, 99, 3.0);
    let mut want = vec![0f32; q.len()];
    cache
        .attend(0, Input::F32(&q), c.q_heads, Output::F32(&mut want))
        .unwrap();
    let qd = device.upload(&q).unwrap();
    for (which, layer) in [("appended", &gpu), ("copied", &copied)] {
        let mut out = device.zeros::<f32>(q.len()).unwrap();
        device.fill_bytes(&mut out, 0xff).unwrap();
        layer.attend(&qd, c.q_heads, &mut out).unwrap();
        let mut got = vec![0f32; q.len()];
        device.download(&out, &mut got).unwrap();
        let mut worst = 0f32;
        for (g, w) in got.chunks_exact(c.d).zip(want.chunks_exact(c.d)) {
            let top = w.iter().fold(0f32, |m, x| m.max(x.abs()));
            let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff.is_finite(),
                "{name} ({which}): unwritten or NaN output"
            );
            worst = worst.max(diff / top);
        }
        println!("attention {name} ({which}): max relative error {worst:.2e}");
        assert!(worst <= 1e-3, "{name} ({which}): relative error {worst}");
    }
}

#[test]
fn attention_on_device_pages_matches_the_cpu() {
    let Some(device) = device("attention_on_device_pages_matches_the_cpu") else {
        return;
    };
    let case = |k, v, d, (batch, kv_heads, q_heads), page, len| Case {
        k,
        v,
        d,
        batch,
        kv_heads,
        q_heads,
        page,
        len,
    };
    for c in [
        case(
            "voronoi-e8-q16-s4",
            "voronoi-e8-q16-s4",
            128,
            (2, 2, 8),
            64,
            300,
        ),
        case("int4", "int4", 128, (2, 2, 8), 64, 300),
        // Int pages of one scale per vector: the tensor-core kernels (GQA groups of 8, 1 and
        // 3, many small chunks, a range shorter than one tile).
        case("int8", "int4", 64, (1, 2, 16), 64, 777),
        case("int4", "int8", 128, (2, 4, 4), 16, 1500),
        case("int8", "int8", 128, (1, 1, 3), 128, 5),
        case("voronoi-e8-q16-s4", "int8", 128, (1, 2, 4), 16, 1500),
        case("int4-g32", "voronoi-e8-q4-s2", 64, (2, 1, 1), 32, 77),
        case("turboquant-b3", "fp8-e4m3-g64", 128, (1, 2, 6), 64, 130),
        case("bf16", "voronoi-e8-q256-s1", 128, (1, 1, 8), 64, 65),
        case("voronoi-e8-q8-s2", "int8", 96, (2, 2, 4), 64, 200),
        case(
            "voronoi-e8-q16-s4",
            "voronoi-e8-q16-s4",
            128,
            (1, 8, 32),
            64,
            5000,
        ),
    ] {
        check_attention(&device, &c);
    }
}

#[test]
fn attention_errors_are_typed() {
    let Some(device) = device("attention_errors_are_typed") else {
        return;
    };
    let spec: CodecSpec = "int4".parse().unwrap();
    let config = CacheConfig::new(1, 2, 128, vec![LayerPolicy::codecs(spec, spec)]);
    let mut layer = DeviceLayer::new(&device, &config, 0, 100).unwrap();
    let q = device.upload(&vec![0.5f32; 4 * 128]).unwrap();
    let mut out = device.zeros::<f32>(4 * 128).unwrap();
    // An empty layer has nothing to attend to.
    assert!(matches!(
        layer.attend(&q, 4, &mut out),
        Err(Error::Cuda(cuda::CudaError::TooManyTokens { .. }))
    ));
    let kv = device.upload(&gaussian(2 * 70 * 128, 5, 1.0)).unwrap();
    layer.append(Values::F32(&kv), Values::F32(&kv)).unwrap();
    assert!(matches!(
        layer.attend(&q, 3, &mut out),
        Err(Error::Cuda(cuda::CudaError::HeadsMismatch { .. }))
    ));
    // Past the capacity, nothing is appended.
    assert!(matches!(
        layer.append(Values::F32(&kv), Values::F32(&kv)),
        Err(Error::Cuda(cuda::CudaError::TooManyTokens { .. }))
    ));
    assert_eq!(layer.len(), 70);
    let mut bad = gaussian(2 * 128, 6, 1.0);
    bad[128 + 3] = f32::NAN;
    let bad = device.upload(&bad).unwrap();
    let good = device.upload(&gaussian(2 * 128, 7, 1.0)).unwrap();
    assert!(matches!(
        layer.append(Values::F32(&good), Values::F32(&bad)),
        Err(Error::NonFinite { vector: 3 })
    ));
    assert_eq!(layer.len(), 70);
    // Bytes no encoder writes are reported with the token's position (the first at
    // fault): page 1 of stream 0 holds positions 64..
    let bytes = layer.pages().layout(PagePool::K).page_bytes();
    layer
        .pages_mut()
        .write_page(PagePool::K, 0, 1, &vec![0xff; bytes])
        .unwrap();
    let err = layer.attend(&q, 4, &mut out).unwrap_err();
    assert!(
        matches!(err, Error::CorruptPayload { vector: 64, .. }),
        "{err}"
    );
    // The fault was taken: the next call reports it again, not a stale one.
    assert!(layer.attend(&q, 4, &mut out).is_err());
    // Int pages of one scale per vector take the tensor-core kernels where the GPU has them,
    // which read whole 16-token tiles: bytes past the last token are not looked at, and a
    // value's lowest level (a field no encoder writes) is reported at its token. Stream 1's
    // page 1 holds positions 64..69 of 528 bits (16-bit scale, then 128 4-bit levels).
    let mut layer = DeviceLayer::new(&device, &config, 0, 100).unwrap();
    layer.append(Values::F32(&kv), Values::F32(&kv)).unwrap();
    let mut page = vec![0u8; layer.pages().layout(PagePool::V).page_bytes()];
    layer
        .pages()
        .read_page(PagePool::V, 1, 1, &mut page)
        .unwrap();
    page[6 * 528 / 8..].fill(0xff);
    layer
        .pages_mut()
        .write_page(PagePool::V, 1, 1, &page)
        .unwrap();
    layer.attend(&q, 4, &mut out).unwrap();
    // Position 65's first level: bits 528 + 16.. of the page, the low half of byte 68.
    page[68] = (page[68] & 0xf0) | 0x8;
    layer
        .pages_mut()
        .write_page(PagePool::V, 1, 1, &page)
        .unwrap();
    let err = layer.attend(&q, 4, &mut out).unwrap_err();
    assert!(
        matches!(err, Error::CorruptPayload { vector: 65, .. }),
        "{err}"
    );
    // Dense storage has no attention kernels.
    let dense = CacheConfig::new(1, 2, 128, vec![LayerPolicy::uncompressed(Dtype::F16)]);
    assert!(matches!(
        DeviceLayer::new(&device, &dense, 0, 10),
        Err(Error::Cuda(cuda::CudaError::Unsupported { .. }))
    ));
}
