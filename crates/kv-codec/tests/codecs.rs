//! Properties every codec must have: exact sizes, round trips within the rate's error,
//! the same bytes whatever the batch split and threading, typed errors on bad input, and
//! no panic on random or corrupted bytes.

use kv_codec::{
    CodecConfig, CodecSpec, Error, Input, Output, Par, VectorCodec, decode_batch, encode_batch,
};
use proptest::prelude::*;

fn specs() -> Vec<CodecSpec> {
    [
        "voronoi-e8-q4-s2",
        "voronoi-e8-q6-s2",
        "voronoi-e8-q16-s4",
        "voronoi-e8-q8-s1",
        "compat-d4-q38",
        "compat-e8-q4",
        "compat-d4-q10-joint",
        "compat-e8-q10-joint",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect()
}

fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
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

fn round_trip(codec: &dyn VectorCodec, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let n = x.len() / codec.head_dim();
    let mut bytes = vec![0u8; codec.encoded_len(n)];
    codec.encode(Input::F32(x), &mut bytes).unwrap();
    let mut y = vec![0f32; x.len()];
    codec.decode(&bytes, Output::F32(&mut y)).unwrap();
    (bytes, y)
}

fn rel_mse(x: &[f32], y: &[f32]) -> f64 {
    let e: f64 = x.iter().zip(y).map(|(a, b)| f64::from(a - b).powi(2)).sum();
    e / x.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>()
}

#[test]
fn voronoi_bits_per_vector_follow_the_layout() {
    let bits = |spec: &str, d| {
        CodecConfig::new(spec.parse().unwrap(), d)
            .build()
            .unwrap()
            .bits_per_vector()
    };
    assert_eq!(bits("voronoi-e8-q16-s4", 128), 11 + 16 * 2 + 128 * 4);
    assert_eq!(bits("voronoi-e8-q8-s2", 64), 11 + 8 + 64 * 3);
    assert_eq!(bits("voronoi-e8-q8-s1", 96), 11 + 96 * 3);
    // q = 6: one mixed-radix number of ⌈8·log2 2 + 64·log2 6⌉ = 174 bits.
    assert_eq!(bits("voronoi-e8-q6-s2", 64), 11 + 174);
    // k = 3: ⌈8·log2 3 + 64·3⌉ = 205 bits.
    assert_eq!(bits("voronoi-e8-q8-s3", 64), 11 + 205);
}

#[test]
fn a_rate_resolves_to_the_default_codec_that_fits() {
    for d in [64, 128, 256] {
        for bpv in [2.5, 3.0, 4.0, 5.5, 8.0] {
            let config = CodecConfig::for_rate(bpv, d).unwrap();
            let got = config.build().unwrap().bits_per_value();
            assert!(
                got <= bpv && got > bpv - 0.25,
                "{bpv} bpv at d={d}: {} gives {got}",
                config.spec
            );
        }
    }
    assert!(matches!(
        CodecConfig::for_rate(0.5, 128),
        Err(Error::RateUnreachable { .. })
    ));
    assert!(matches!(
        CodecConfig::for_rate(4.0, 100),
        Err(Error::UnsupportedHeadDim { .. })
    ));
}

#[test]
fn voronoi_quality_on_gaussian_data() {
    // Gaps to the Shannon bound measured when the design constants were chosen; the bound
    // here leaves 0.3 dB of slack for the smaller sample.
    for (spec, d, max_gap) in [
        ("voronoi-e8-q8-s4", 128, 2.9),
        ("voronoi-e8-q16-s4", 128, 2.95),
        ("voronoi-e8-q4-s2", 128, 3.05),
        ("voronoi-e8-q8-s4", 64, 3.65),
    ] {
        let codec = CodecConfig::new(spec.parse().unwrap(), d).build().unwrap();
        let x = gaussian(1024 * d, 11);
        let (_, y) = round_trip(codec.as_ref(), &x);
        let snr = -10.0 * rel_mse(&x, &y).log10();
        let gap = 20.0 * 2f64.log10() * codec.bits_per_value() - snr;
        assert!(
            gap <= max_gap,
            "{spec} d={d}: SNR {snr:.2} dB, gap {gap:.2} dB"
        );
    }
}

#[test]
fn bytes_do_not_depend_on_split_or_threads() {
    for spec in specs() {
        let codec = CodecConfig::new(spec, 64).build().unwrap();
        let x = gaussian(700 * 64, 3);
        let (all, _) = round_trip(codec.as_ref(), &x);
        assert_eq!(
            all.len(),
            (700 * codec.bits_per_vector() as usize).div_ceil(8)
        );
        let mut seq = vec![0u8; all.len()];
        encode_batch(codec.as_ref(), Input::F32(&x), &mut seq, Par::Seq).unwrap();
        assert_eq!(seq, all, "{spec}: sequential vs rayon");
        // One vector at a time, as at decode time: the same bits as at its offset in the batch.
        let bits = codec.bits_per_vector() as usize;
        let bit = |bytes: &[u8], k: usize| (bytes[k / 8] >> (k % 8)) & 1;
        for i in [0, 1, 255, 256, 699] {
            let mut one = vec![0u8; codec.encoded_len(1)];
            codec
                .encode(Input::F32(&x[i * 64..(i + 1) * 64]), &mut one)
                .unwrap();
            for k in 0..bits {
                assert_eq!(
                    bit(&one, k),
                    bit(&all, i * bits + k),
                    "{spec}: vector {i} alone, bit {k}"
                );
            }
        }
        // Any split at a multiple of 8 vectors gives the same bytes.
        let split = 64;
        let mut head = vec![0u8; codec.encoded_len(split)];
        codec
            .encode(Input::F32(&x[..split * 64]), &mut head)
            .unwrap();
        assert_eq!(head, all[..head.len()], "{spec}: split at {split}");
    }
}

#[test]
fn half_precision_inputs_and_outputs() {
    let codec = CodecConfig::new("voronoi-e8-q16-s4".parse().unwrap(), 128)
        .build()
        .unwrap();
    let x = gaussian(64 * 128, 5);
    let xh: Vec<half::bf16> = x.iter().map(|&v| half::bf16::from_f32(v)).collect();
    let xf: Vec<f32> = xh.iter().map(|v| v.to_f32()).collect();
    let mut a = vec![0u8; codec.encoded_len(64)];
    let mut b = a.clone();
    codec.encode(Input::Bf16(&xh), &mut a).unwrap();
    codec.encode(Input::F32(&xf), &mut b).unwrap();
    assert_eq!(a, b);
    let mut out = vec![half::f16::ZERO; x.len()];
    decode_batch(codec.as_ref(), &a, Output::F16(&mut out), Par::Seq).unwrap();
    assert!(rel_mse(&xf, &out.iter().map(|v| v.to_f32()).collect::<Vec<_>>()) < 1e-2);
}

#[test]
fn zero_tiny_and_huge_vectors() {
    for spec in specs() {
        let codec = CodecConfig::new(spec, 64).build().unwrap();
        let (_, y) = round_trip(codec.as_ref(), &[0.0; 64]);
        assert!(y.iter().all(|&v| v == 0.0), "{spec}: zero vector");
        for scale in [1e-30f32, 1e-3, 3e3, 1e20, f32::MAX / 16.0] {
            let x: Vec<f32> = gaussian(64, 9)
                .iter()
                .map(|v| (v * scale).clamp(-f32::MAX, f32::MAX))
                .collect();
            let (_, y) = round_trip(codec.as_ref(), &x);
            assert!(
                y.iter().all(|v| v.is_finite()),
                "{spec}: non-finite output at scale {scale}"
            );
            if scale < 1e30 {
                assert!(
                    rel_mse(&x, &y) < 0.1,
                    "{spec}: scale {scale} rel-MSE {}",
                    rel_mse(&x, &y)
                );
            }
        }
    }
}

#[test]
fn bad_input_gives_typed_errors() {
    let codec = CodecConfig::new("voronoi-e8-q16-s4".parse().unwrap(), 64)
        .build()
        .unwrap();
    let mut x = gaussian(3 * 64, 1);
    x[64 + 5] = f32::NAN;
    let mut bytes = vec![0u8; codec.encoded_len(3)];
    assert!(matches!(
        codec.encode(Input::F32(&x), &mut bytes),
        Err(Error::NonFinite { vector: 1 })
    ));
    x[64 + 5] = f32::INFINITY;
    assert!(matches!(
        codec.encode(Input::F32(&x), &mut bytes),
        Err(Error::NonFinite { vector: 1 })
    ));
    assert!(matches!(
        codec.encode(Input::F32(&x[..100]), &mut bytes),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        codec.encode(Input::F32(&x), &mut bytes[1..]),
        Err(Error::LengthMismatch { .. })
    ));
    for d in [60, 100, 9] {
        let err = CodecConfig::new("voronoi-e8-q16-s4".parse().unwrap(), d)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::UnsupportedHeadDim { head_dim } if head_dim == d));
        assert!(
            err.to_string().contains("64, ") && err.to_string().contains("96"),
            "{err}"
        );
    }
    assert!(
        CodecConfig::new("compat-d4-q10".parse().unwrap(), 96)
            .build()
            .is_err()
    );
}

#[test]
fn non_power_of_two_head_dims() {
    for d in [80, 96, 112, 160, 192] {
        let codec = CodecConfig::new("voronoi-e8-q16-s4".parse().unwrap(), d)
            .build()
            .unwrap();
        let x = gaussian(256 * d, d as u64);
        let (_, y) = round_trip(codec.as_ref(), &x);
        let snr = -10.0 * rel_mse(&x, &y).log10();
        assert!(snr > 22.5, "d = {d}: SNR {snr:.2}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10000))]

    #[test]
    fn random_bytes_decode_or_error(spec_i in 0usize..8, bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let codec = CodecConfig::new(specs()[spec_i], 64).build().unwrap();
        let n = bytes.len() * 8 / codec.bits_per_vector() as usize;
        let mut out = vec![0f32; n * 64];
        if let Ok(()) = codec.decode(&bytes[..codec.encoded_len(n)], Output::F32(&mut out)) {
            prop_assert!(out.iter().all(|v| v.is_finite()));
        }
        // A wrong byte count is an error, not a panic.
        if bytes.len() != codec.encoded_len(n) {
            prop_assert!(codec.decode(&bytes, Output::F32(&mut out)).is_err());
        }
    }

    #[test]
    fn corrupted_streams_decode_or_error(spec_i in 0usize..8, flips in prop::collection::vec((any::<usize>(), 0u8..8), 1..6)) {
        let codec = CodecConfig::new(specs()[spec_i], 64).build().unwrap();
        let x = gaussian(4 * 64, 21);
        let (mut bytes, _) = round_trip(codec.as_ref(), &x);
        let len = bytes.len();
        for (at, bit) in flips {
            bytes[at % len] ^= 1 << bit;
        }
        let mut out = vec![0f32; 4 * 64];
        let _ = codec.decode(&bytes, Output::F32(&mut out));
    }
}
