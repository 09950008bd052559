//! The stream format: round trips, golden bitstreams of every codec (hex snapshots that must
//! keep decoding), and typed errors for truncated, corrupted or foreign bytes.

use kv_codec::format::{self, HEADER_LEN};
use kv_codec::{CodecConfig, CodecSpec, Error, Input};
use proptest::prelude::*;

/// One spec of every codec family and packing.
const GOLDEN_SPECS: [&str; 16] = [
    "voronoi-e8-q16-s4",
    "voronoi-e8-q4-s2",
    "voronoi-e8-q6-s3",
    "compat-d4-q10",
    "compat-e8-q4",
    "compat-d4-q38-joint",
    "bf16",
    "fp8-e4m3",
    "fp8-e4m3-g64",
    "int8",
    "int4-g32",
    "q8_0",
    "q4_0",
    "turboquant-b3",
    "strawman-b4",
    "compat-e8-q10-joint",
];

/// Two deterministic vectors of 64 values: a smooth one and one with an outlier channel.
fn golden_input() -> Vec<f32> {
    let mut x: Vec<f32> = (0..128)
        .map(|i| ((i as f32) * 0.61).sin() * (1.0 + (i % 7) as f32 * 0.1))
        .collect();
    x[64 + 3] = 9.5;
    x
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .map(|row| row.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn golden_streams() {
    let x = golden_input();
    let mut all = String::new();
    for spec in GOLDEN_SPECS {
        let config = CodecConfig::new(spec.parse().unwrap(), 64).with_seed(7);
        let stream = format::encode_stream(&config, Input::F32(&x)).unwrap();
        let (header, y) = format::decode_stream(&stream).unwrap();
        assert_eq!(header.config, config);
        assert_eq!(header.vectors, 2);
        let err: f32 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            / x.iter().map(|a| a * a).sum::<f32>();
        all.push_str(&format!(
            "{spec} (rel-MSE {err:.3e}, {} bytes)\n{}\n\n",
            stream.len(),
            hex(&stream)
        ));
    }
    insta::assert_snapshot!(all);
}

#[test]
fn header_fields_round_trip() {
    let config = CodecConfig::new("voronoi-e8-q8-s2".parse().unwrap(), 96).with_seed(0xdead_beef);
    let x: Vec<f32> = (0..96 * 5).map(|i| (i as f32).cos()).collect();
    let xs: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
    let stream = format::encode_stream(&config, Input::F16(&xs)).unwrap();
    let header = format::read_header(&stream).unwrap();
    assert_eq!(header.config, config);
    assert_eq!(header.dtype, format::Dtype::F16);
    assert_eq!(header.vectors, 5);
    assert_eq!(&stream[..4], b"KVCB");
}

#[test]
fn foreign_truncated_and_corrupt_streams_are_errors() {
    let config = CodecConfig::new("voronoi-e8-q16-s4".parse().unwrap(), 64);
    let stream = format::encode_stream(&config, Input::F32(&golden_input())).unwrap();
    assert!(matches!(
        format::decode_stream(&stream[..10]),
        Err(Error::Truncated { .. })
    ));
    assert!(matches!(
        format::decode_stream(&stream[..stream.len() - 1]),
        Err(Error::Truncated { .. })
    ));
    let mut foreign = stream.clone();
    foreign[0] = b'X';
    assert!(matches!(
        format::decode_stream(&foreign),
        Err(Error::BadMagic)
    ));
    let mut newer = stream.clone();
    newer[4] = 2;
    assert!(matches!(
        format::decode_stream(&newer),
        Err(Error::UnsupportedVersion { version: 2, .. })
    ));
    let mut unknown = stream.clone();
    unknown[6] = 0xee;
    assert!(matches!(
        format::decode_stream(&unknown),
        Err(Error::UnknownCodecId { .. })
    ));
    let mut flipped = stream.clone();
    flipped[HEADER_LEN + 3] ^= 0x10;
    assert!(matches!(
        format::decode_stream(&flipped),
        Err(Error::CorruptHeader { field: "checksum" })
    ));
    let mut dim = stream.clone();
    dim[24] = 63;
    assert!(format::decode_stream(&dim).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40000))]

    #[test]
    fn corrupted_streams_never_panic(spec_i in 0usize..GOLDEN_SPECS.len(), flips in prop::collection::vec((any::<usize>(), 0u8..8), 1..8), cut in any::<usize>()) {
        let config = CodecConfig::new(GOLDEN_SPECS[spec_i].parse::<CodecSpec>().unwrap(), 64);
        let mut stream = format::encode_stream(&config, Input::F32(&golden_input())).unwrap();
        let len = stream.len();
        for (at, bit) in flips {
            stream[at % len] ^= 1 << bit;
        }
        let _ = format::decode_stream(&stream);
        let _ = format::decode_stream(&stream[..cut % (len + 1)]);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), magic in any::<bool>()) {
        let mut bytes = bytes;
        if magic && bytes.len() >= 8 {
            bytes[..4].copy_from_slice(b"KVCB");
            bytes[4] = 1;
            bytes[5] = 0;
        }
        let _ = format::decode_stream(&bytes);
    }
}
