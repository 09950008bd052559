//! CPU↔GPU parity at scale (feature `cuda`, run on a GPU machine): every codec with kernels
//! encodes the same vectors on both backends, and the bytes must be identical; the GPU
//! decodes the CPU's bytes, and the values (f32 and f16) must be identical bit for bit.
//! Device outputs are poisoned before every run, so an element a kernel fails to write is
//! caught. Mismatches are counted per vector, not just found.
//!
//! Sources: seeded random vectors (Gaussian at scales from 1e-30 to 1e30, with zero,
//! one-hot, constant and outlier vectors mixed in), 10^7 of them for the default codec and a
//! tenth of that for each other codec; and every K and V vector of a safetensors file (by
//! default ../shared/data/smollm2-pp512/kv.safetensors), fed as f16 as stored.
//!
//! ```text
//! cargo run --release -p kv-audit --features cuda --example gpu_parity -- \
//!     [--data PATH] [--random N] [--json PATH]
//! ```
//! Exits with status 1 on any mismatch, 2 when no GPU is usable.

use std::process::ExitCode;
use std::sync::Arc;

use half::f16;
use half::slice::HalfFloatSliceExt;
use kv_audit::safetensors::{Dtype as StDtype, SafeTensors};
use kv_codec::cuda::{self, Device, DevicePlan, Plan, Values, ValuesMut};
use kv_codec::{
    CodecConfig, CodecSpec, Input, Output, Par, VectorCodec, decode_batch, encode_batch,
};
use rayon::prelude::*;
use serde::Serialize;

/// The codecs checked, the default first.
const CODECS: [&str; 11] = [
    "voronoi-e8-q16-s4",
    "voronoi-e8-q8-s2",
    "voronoi-e8-q6-s3",
    "compat-d4-q38",
    "compat-e8-q38",
    "compat-e8-q10-joint",
    "turboquant-b3",
    "fp8-e4m3",
    "int8",
    "int4",
    "bf16",
];

/// Vectors per batch sent to the device.
const BATCH: usize = 1 << 20;

#[derive(Debug, Default, Serialize)]
struct Row {
    codec: String,
    source: String,
    head_dim: usize,
    vectors: usize,
    encode_mismatches: usize,
    decode_f32_mismatches: usize,
    decode_f16_mismatches: usize,
}

/// Seeded random vectors `first..first + n` (each vector's values depend only on its index).
fn random_vectors(first: usize, n: usize, d: usize) -> Vec<f32> {
    let mut x = vec![0f32; n * d];
    x.par_chunks_mut(d).enumerate().for_each(|(j, v)| {
        let index = (first + j) as u64;
        let mut s = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let scale = 10f64.powf(next() * 60.0 - 30.0);
        for (i, o) in v.iter_mut().enumerate() {
            let g = (-2.0 * next().ln()).sqrt() * (std::f64::consts::TAU * next()).cos();
            let value = match index % 16 {
                0 => 0.0,
                1 => f64::from(u8::from(i == 5)) * scale,
                2 => scale,
                3 if i % 7 == 0 => 50.0 * scale,
                4 => (2.0 * g).round() * 0.5,
                5..=9 => g,
                _ => g * scale,
            };
            *o = value as f32;
        }
    });
    x
}

/// Vectors (of `d` values) whose bits differ between `a` and `b`.
fn mismatched<T: PartialEq + Sync>(a: &[T], b: &[T], d: usize) -> usize {
    a.par_chunks(d)
        .zip(b.par_chunks(d))
        .filter(|(p, q)| p != q)
        .count()
}

/// Vectors whose encoded bytes differ (vector `i` holds bits `i·bits .. (i+1)·bits`), plus
/// one if the zero padding after the last vector differs.
fn mismatched_bytes(a: &[u8], b: &[u8], bits: usize, n: usize) -> usize {
    if a == b {
        return 0;
    }
    let bit = |s: &[u8], k: usize| (s[k / 8] >> (k % 8)) & 1;
    let differ = |range: std::ops::Range<usize>| range.into_iter().any(|k| bit(a, k) != bit(b, k));
    let vectors = (0..n)
        .into_par_iter()
        .filter(|&i| differ(i * bits..(i + 1) * bits))
        .count();
    vectors + usize::from(differ(n * bits..a.len() * 8))
}

enum Batch<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

/// Runs one batch through both backends and adds its mismatches to `row`.
fn compare(
    device: &Arc<Device>,
    cpu: &dyn VectorCodec,
    plan: &DevicePlan,
    batch: Batch<'_>,
    row: &mut Row,
) -> Result<(), Box<dyn std::error::Error>> {
    let d = cpu.head_dim();
    let n = match batch {
        Batch::F32(x) => x.len(),
        Batch::F16(x) => x.len(),
    } / d;
    let mut want = vec![0u8; cpu.encoded_len(n)];
    let mut bytes = device.zeros::<u8>(want.len())?;
    device.fill_bytes(&mut bytes, 0xCD)?;
    match batch {
        Batch::F32(x) => {
            encode_batch(cpu, Input::F32(x), &mut want, Par::Rayon)?;
            plan.encode(Values::F32(&device.upload(x)?), &mut bytes)?;
        }
        Batch::F16(x) => {
            encode_batch(cpu, Input::F16(x), &mut want, Par::Rayon)?;
            plan.encode(
                Values::F16(&device.upload(x.reinterpret_cast())?),
                &mut bytes,
            )?;
        }
    }
    let mut got = vec![0u8; want.len()];
    device.download(&bytes, &mut got)?;
    row.encode_mismatches += mismatched_bytes(&want, &got, cpu.bits_per_vector() as usize, n);

    let src = device.upload(&want)?;
    let mut y = vec![0f32; n * d];
    decode_batch(cpu, &want, Output::F32(&mut y), Par::Rayon)?;
    let mut gy = device.zeros::<f32>(n * d)?;
    device.fill_bytes(&mut gy, 0xCD)?;
    plan.decode(&src, ValuesMut::F32(&mut gy))?;
    let mut got_y = vec![0f32; n * d];
    device.download(&gy, &mut got_y)?;
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    row.decode_f32_mismatches += mismatched(&bits(&y), &bits(&got_y), d);

    let mut y16 = vec![f16::ZERO; n * d];
    decode_batch(cpu, &want, Output::F16(&mut y16), Par::Rayon)?;
    let mut g16 = device.zeros::<u16>(n * d)?;
    device.fill_bytes(&mut g16, 0xCD)?;
    plan.decode(&src, ValuesMut::F16(&mut g16))?;
    let mut got16 = vec![0u16; n * d];
    device.download(&g16, &mut got16)?;
    row.decode_f16_mismatches += mismatched(y16.reinterpret_cast(), &got16, d);
    row.vectors += n;
    Ok(())
}

fn load(
    device: &Arc<Device>,
    config: &CodecConfig,
) -> Result<DevicePlan, Box<dyn std::error::Error>> {
    Ok(device.load(Plan::new(cuda::kernel_codec(config)?)?)?)
}

/// Every `k.*` and `v.*` tensor of the file, as f16 vectors of the last dimension.
fn kv_vectors(path: &str) -> Result<(usize, Vec<f16>), Box<dyn std::error::Error>> {
    let file = SafeTensors::read(path)?;
    let mut d = 0;
    let mut out = Vec::new();
    for t in file.tensors() {
        if !(t.name.starts_with("k.") || t.name.starts_with("v.")) {
            continue;
        }
        if t.dtype != StDtype::F16 {
            return Err(format!("{}: expected f16, found {:?}", t.name, t.dtype).into());
        }
        d = *t.shape.last().ok_or("scalar tensor")?;
        out.extend(
            file.bytes(t)
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]])),
        );
    }
    Ok((d, out))
}

fn run(args: &[String]) -> Result<bool, Box<dyn std::error::Error>> {
    let mut data = "../shared/data/smollm2-pp512/kv.safetensors".to_owned();
    let mut random = 10_000_000usize;
    let mut json = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--data" => data = value()?,
            "--random" => random = value()?.parse()?,
            "--json" => json = Some(value()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let device = Arc::new(Device::new(0)?);
    println!("device: {} ({})", device.name(), device.arch());
    let mut rows = Vec::new();

    let (dd, kv) = kv_vectors(&data)?;
    for (c, spec) in CODECS.iter().enumerate() {
        // The default codec gets all `random` vectors, the others a tenth each.
        let count = if c == 0 { random } else { random / 10 };
        for (source, d, count) in [("random", 128, count), ("kv", dd, 0)] {
            let config = CodecConfig::new(spec.parse::<CodecSpec>()?, d);
            let cpu = config.build()?;
            let plan = load(&device, &config)?;
            let mut row = Row {
                codec: spec.to_string(),
                source: if source == "kv" {
                    data.clone()
                } else {
                    "random".to_owned()
                },
                head_dim: d,
                ..Row::default()
            };
            if source == "random" {
                let mut first = 0;
                while first < count {
                    let n = BATCH.min(count - first);
                    let x = random_vectors(first, n, d);
                    compare(&device, cpu.as_ref(), &plan, Batch::F32(&x), &mut row)?;
                    first += n;
                }
            } else {
                compare(&device, cpu.as_ref(), &plan, Batch::F16(&kv), &mut row)?;
            }
            println!(
                "{:<22} {:<8} d={:<4} vectors {:>9}  encode mismatches {}  decode f32 {}  f16 {}",
                row.codec,
                source,
                row.head_dim,
                row.vectors,
                row.encode_mismatches,
                row.decode_f32_mismatches,
                row.decode_f16_mismatches
            );
            rows.push(row);
        }
    }
    let total: usize = rows.iter().map(|r| r.vectors).sum();
    let bad: usize = rows
        .iter()
        .map(|r| r.encode_mismatches + r.decode_f32_mismatches + r.decode_f16_mismatches)
        .sum();
    println!("\n| codec | source | d | vectors | encode ≠ | decode f32 ≠ | decode f16 ≠ |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        let source = if r.source == "random" {
            "random"
        } else {
            "kv file"
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.codec,
            source,
            r.head_dim,
            r.vectors,
            r.encode_mismatches,
            r.decode_f32_mismatches,
            r.decode_f16_mismatches
        );
    }
    println!("\ntotal: {total} vectors compared, {bad} mismatches");
    if let Some(path) = json {
        let doc = serde_json::json!({
            "device": device.name(),
            "arch": device.arch(),
            "vectors_compared": total,
            "mismatches": bad,
            "rows": rows,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
    }
    Ok(bad == 0)
}

fn main() -> ExitCode {
    if !cuda::is_available() {
        eprintln!("gpu_parity: no usable GPU (kv_cuda::is_available() is false)");
        return ExitCode::from(2);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("gpu_parity: {e}");
            ExitCode::from(1)
        }
    }
}
