//! Fuzzes every codec's batch decoder with arbitrary payloads: the first byte picks the codec,
//! the second the head_dim, the rest is decoded as whole vectors. Decoding must give values
//! or a typed error, never a panic.
#![no_main]

use kv_codec::{CodecConfig, CodecSpec, Output, Par, decode_batch};
use libfuzzer_sys::fuzz_target;

const SPECS: [&str; 12] = [
    "voronoi-e8-q16-s4",
    "voronoi-e8-q13-s3",
    "voronoi-e8-q6-s1",
    "compat-d4-q10",
    "compat-e8-q10-joint",
    "turboquant-b4",
    "fp8-e4m3-g64",
    "int4-g32",
    "q4_0",
    "q8_0",
    "bf16",
    "strawman-b3",
];
const HEAD_DIMS: [usize; 4] = [64, 96, 128, 256];

fuzz_target!(|bytes: &[u8]| {
    let [pick, dim, payload @ ..] = bytes else {
        return;
    };
    let spec: CodecSpec = SPECS[usize::from(*pick) % SPECS.len()].parse().unwrap();
    let head_dim = HEAD_DIMS[usize::from(*dim) % HEAD_DIMS.len()];
    let Ok(codec) = CodecConfig::new(spec, head_dim).build() else {
        return;
    };
    let vectors = payload.len() * 8 / codec.bits_per_vector() as usize;
    let payload = &payload[..codec.encoded_len(vectors)];
    let mut out = vec![0f32; vectors * head_dim];
    let _ = decode_batch(&*codec, payload, Output::F32(&mut out), Par::Seq);
});
