//! Data in and out: the safetensors reader on the committed sample (names, shapes, known
//! values), writer/reader round trips, malformed files, slicing, and the Gaussian source.

use std::collections::BTreeMap;

use half::{bf16, f16};
use kv_audit::Error;
use kv_audit::gaussian::{Gaussian, SplitMix64, gaussian_vectors};
use kv_audit::safetensors::{Dtype, SafeTensors, TensorView, serialize};
use kv_audit::slice::slice_tokens;
use kv_audit::source::{KvSource, default_sample_path};

fn sample() -> SafeTensors {
    SafeTensors::read(default_sample_path()).expect("the committed sample reads")
}

/// The f16 at `[head, token, channel]` of a `[3, T, 64]` tensor.
fn value_at(file: &SafeTensors, name: &str, head: usize, token: usize, channel: usize) -> f16 {
    let t = file.get(name).unwrap();
    let i = (head * t.shape[1] + token) * t.shape[2] + channel;
    let b = file.bytes(t);
    f16::from_le_bytes([b[2 * i], b[2 * i + 1]])
}

#[test]
fn committed_sample_has_the_documented_tensors() {
    let file = sample();
    let names: Vec<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
    let want: Vec<String> = ["k", "v"]
        .iter()
        .flat_map(|kv| (0..30).map(move |l| format!("{kv}.{l:02}")))
        .collect();
    assert_eq!(names, want);
    for t in file.tensors() {
        assert_eq!(t.dtype, Dtype::F16, "{}", t.name);
        assert_eq!(t.shape, [3, 128, 64], "{}", t.name);
    }
    assert_eq!(file.metadata()["n_tokens"], "128");
    assert_eq!(file.metadata()["head_dim"], "64");
    // Known values, checked with numpy against ../shared/data/smollm2-pp512/kv.safetensors.
    assert_eq!(value_at(&file, "k.00", 0, 0, 0).to_bits(), 0xC053);
    assert_eq!(value_at(&file, "k.00", 0, 0, 0).to_f32(), -2.162_109_4);
    assert_eq!(value_at(&file, "v.29", 2, 127, 63).to_f32(), 2.742_187_5);
}

#[test]
fn the_sample_loads_as_a_kv_source() {
    let s = KvSource::from_safetensors(default_sample_path()).unwrap();
    assert_eq!(s.head_dim, 64);
    assert_eq!(s.vectors(), 60 * 3 * 128);
    assert_eq!((s.k.len(), s.v.len()), (30, 30));
    assert_eq!(s.k[0].name, "k.00");
    assert_eq!(s.v[29].name, "v.29");
    assert_eq!(s.values[0], -2.162_109_4);
    assert_eq!(*s.segment_values(&s.v[29]).last().unwrap(), 2.742_187_5);
    assert_eq!(s.info.k_tensors.len(), 30);
}

fn tiny_image() -> Vec<u8> {
    let f32s: Vec<u8> = [1.5f32, -2.0, 0.25, 8.0, 1e-3, 0.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let f16s: Vec<u8> = [0.5f32, -1.0, 3.0, 65504.0]
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect();
    let bf16s: Vec<u8> = [1.0f32, -0.5, 256.0, 3.0]
        .iter()
        .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
        .collect();
    let meta = BTreeMap::from([("note".to_owned(), "tiny".to_owned())]);
    serialize(
        &meta,
        &[
            TensorView {
                name: "k.00",
                dtype: Dtype::F32,
                shape: &[1, 2, 3],
                data: &f32s,
            },
            TensorView {
                name: "v.00",
                dtype: Dtype::F16,
                shape: &[1, 1, 4],
                data: &f16s,
            },
            TensorView {
                name: "w",
                dtype: Dtype::BF16,
                shape: &[4],
                data: &bf16s,
            },
        ],
    )
}

#[test]
fn written_files_read_back() {
    let image = tiny_image();
    let header_len = u64::from_le_bytes(image[..8].try_into().unwrap());
    assert_eq!(header_len % 8, 0, "the header is padded to 8 bytes");
    let file = SafeTensors::parse("tiny", image).unwrap();
    assert_eq!(file.metadata()["note"], "tiny");
    let k = file.get("k.00").unwrap();
    assert_eq!(
        (k.dtype, k.shape.as_slice(), k.len()),
        (Dtype::F32, &[1usize, 2, 3][..], 6)
    );
    assert_eq!(file.to_f32(k).unwrap(), [1.5, -2.0, 0.25, 8.0, 1e-3, 0.0]);
    assert_eq!(
        file.to_f32(file.get("v.00").unwrap()).unwrap(),
        [0.5, -1.0, 3.0, 65504.0]
    );
    assert_eq!(
        file.to_f32(file.get("w").unwrap()).unwrap(),
        [1.0, -0.5, 256.0, 3.0]
    );
}

#[test]
fn malformed_files_give_errors_not_panics() {
    let image = tiny_image();
    // Every truncation of a valid file is an error.
    for len in 0..image.len() {
        assert!(
            SafeTensors::parse("cut", image[..len].to_vec()).is_err(),
            "prefix of {len} bytes"
        );
    }
    assert!(matches!(
        SafeTensors::parse("e", Vec::new()),
        Err(Error::Truncated { needed: 8, .. })
    ));
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    assert!(matches!(
        SafeTensors::parse("h", huge),
        Err(Error::Truncated { .. })
    ));

    let with_header = |json: &str, data: &[u8]| {
        let mut v = (json.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(json.as_bytes());
        v.extend_from_slice(data);
        SafeTensors::parse("x", v)
    };
    assert!(matches!(
        with_header("{not json", &[]),
        Err(Error::HeaderJson { .. })
    ));
    assert!(matches!(
        with_header("[1, 2]", &[]),
        Err(Error::HeaderJson { .. })
    ));
    let entry = |dtype: &str, shape: &str, offsets: &str| {
        format!(r#"{{"t": {{"dtype": "{dtype}", "shape": {shape}, "data_offsets": {offsets}}}}}"#)
    };
    assert!(with_header(&entry("F32", "[2]", "[0, 8]"), &[0; 8]).is_ok());
    assert!(matches!(
        with_header(&entry("F33", "[2]", "[0, 8]"), &[0; 8]),
        Err(Error::BadTensorEntry { field: "dtype", .. })
    ));
    assert!(matches!(
        with_header(&entry("F32", "[-2]", "[0, 8]"), &[0; 8]),
        Err(Error::BadTensorEntry { field: "shape", .. })
    ));
    assert!(matches!(
        with_header(&entry("F32", "[2]", "[0]"), &[0; 8]),
        Err(Error::BadTensorEntry {
            field: "data_offsets",
            ..
        })
    ));
    assert!(matches!(
        with_header(&entry("F32", "[2]", "[0, 16]"), &[0; 8]),
        Err(Error::TensorBounds {
            end: 16,
            data_len: 8,
            ..
        })
    ));
    assert!(matches!(
        with_header(&entry("F32", "[3]", "[0, 8]"), &[0; 8]),
        Err(Error::TensorBounds { expected: 12, .. })
    ));
    assert!(matches!(
        with_header(&entry("F32", "[2]", "[8, 0]"), &[0; 8]),
        Err(Error::TensorBounds { .. })
    ));
    assert!(matches!(
        with_header(
            &entry("F32", "[4294967296, 4294967296, 4294967296]", "[0, 8]"),
            &[0; 8]
        ),
        Err(Error::TensorBounds { .. })
    ));
}

#[test]
fn kv_sources_reject_what_codecs_cannot_take() {
    let dir = std::env::temp_dir();
    let write = |name: &str, views: &[TensorView<'_>]| {
        let path = dir.join(format!(
            "kvc-test-{}-{name}.safetensors",
            std::process::id()
        ));
        std::fs::write(&path, serialize(&BTreeMap::new(), views)).unwrap();
        let result = KvSource::from_safetensors(&path);
        std::fs::remove_file(&path).unwrap();
        result
    };
    let zeros = [0u8; 64];
    let ints = [0u8; 16];
    let r = write(
        "2d",
        &[TensorView {
            name: "k.00",
            dtype: Dtype::F32,
            shape: &[2, 8],
            data: &zeros,
        }],
    );
    assert!(matches!(r, Err(Error::BadShape { .. })));
    let r = write(
        "int",
        &[TensorView {
            name: "v.00",
            dtype: Dtype::I64,
            shape: &[1, 1, 2],
            data: &ints,
        }],
    );
    assert!(matches!(r, Err(Error::UnsupportedDtype { .. })));
    let r = write(
        "dims",
        &[
            TensorView {
                name: "k.00",
                dtype: Dtype::F32,
                shape: &[1, 2, 8],
                data: &zeros,
            },
            TensorView {
                name: "v.00",
                dtype: Dtype::F32,
                shape: &[1, 4, 4],
                data: &zeros,
            },
        ],
    );
    assert!(matches!(
        r,
        Err(Error::HeadDimMismatch {
            expected: 8,
            actual: 4,
            ..
        })
    ));
    let r = write(
        "none",
        &[TensorView {
            name: "q.00",
            dtype: Dtype::F32,
            shape: &[1, 2, 8],
            data: &zeros,
        }],
    );
    assert!(matches!(r, Err(Error::NoKvTensors { .. })));
    let nan: Vec<u8> = [f32::NAN, 0.0, 0.0, 0.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let r = write(
        "nan",
        &[TensorView {
            name: "k.00",
            dtype: Dtype::F32,
            shape: &[1, 1, 4],
            data: &nan,
        }],
    );
    assert!(matches!(r, Err(Error::NonFinite { .. })));
}

#[test]
fn slicing_keeps_the_first_tokens_of_every_head() {
    let file = sample();
    let small = SafeTensors::parse("small", slice_tokens(&file, 16).unwrap()).unwrap();
    assert_eq!(small.tensors().len(), 60);
    assert_eq!(small.metadata()["n_tokens"], "16");
    assert!(small.metadata()["sliced"].starts_with("first 16 of 128 tokens"));
    for name in ["k.00", "v.17", "v.29"] {
        assert_eq!(small.get(name).unwrap().shape, [3, 16, 64]);
        for head in 0..3 {
            for token in [0, 7, 15] {
                for channel in [0, 31, 63] {
                    assert_eq!(
                        value_at(&small, name, head, token, channel).to_bits(),
                        value_at(&file, name, head, token, channel).to_bits()
                    );
                }
            }
        }
    }
    // Slicing to the full length reproduces the sample byte for byte (names, order, padding).
    let full = slice_tokens(&file, 128).unwrap();
    let committed = std::fs::read(default_sample_path()).unwrap();
    let strip = |b: &[u8]| SafeTensors::parse("x", b.to_vec()).unwrap();
    assert_eq!(strip(&full).tensors(), strip(&committed).tensors());
    assert!(matches!(
        slice_tokens(&file, 129),
        Err(Error::TooFewTokens {
            requested: 129,
            available: 128,
            ..
        })
    ));
}

#[test]
fn splitmix64_known_answers() {
    let mut r = SplitMix64::new(1_234_567);
    assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
    assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
    assert_eq!(r.next_u64(), 9_817_491_932_198_370_423);
}

#[test]
fn the_gaussian_source_is_deterministic_and_standard() {
    let a = gaussian_vectors(1000, 64, 42);
    assert_eq!(a.len(), 64_000);
    assert_eq!(a, gaussian_vectors(1000, 64, 42));
    assert_ne!(a, gaussian_vectors(1000, 64, 43));
    // A prefix does not depend on how many vectors are asked for.
    assert_eq!(a[..640], gaussian_vectors(10, 64, 42)[..]);

    let mut g = Gaussian::new(7);
    let n = 200_000;
    let (mut sum, mut sq) = (0f64, 0f64);
    for _ in 0..n {
        let z = g.next_f64();
        sum += z;
        sq += z * z;
    }
    let mean = sum / n as f64;
    let var = sq / n as f64 - mean * mean;
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!((var - 1.0).abs() < 0.02, "variance {var}");

    let s = KvSource::gaussian(100, 8, 42).unwrap();
    assert_eq!(s.values, gaussian_vectors(100, 8, 42));
    assert_eq!(s.k, s.v);
    assert!(matches!(
        KvSource::gaussian(1 << 20, 1 << 20, 0),
        Err(Error::SourceTooLarge { .. })
    ));
}
