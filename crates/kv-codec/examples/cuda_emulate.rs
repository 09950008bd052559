//! Runs the CUDA kernels without a GPU and compares them with the CPU codecs (feature
//! `cuda`; needs a host C++ compiler, `g++` by default or `$CXX`).
//!
//! The kernels' source (`kv_cuda::kernel_source()`) is compiled with the emulation header
//! and driver in `crates/kv-cuda/emu/`, which run each thread block's threads as coroutines,
//! bit for bit as the device runs them. Every launch goes through the same plan (parameter
//! block, tables, geometry) as on the GPU. For each codec, head_dim and input dtype, it
//! compares the encoded bytes, the decoded values of the CPU's bytes, and the first fault
//! reported for random bytes. It is slow (thousands of vectors a second): use it to check a
//! kernel change before spending GPU time, then confirm on the GPU (`cargo xtask gpu-bundle`).
//!
//! ```text
//! cargo run --release -p kv-codec --features cuda --example cuda_emulate -- \
//!     voronoi-e8-q16-s4,int4 64,128 [vectors]
//! ```
//! Exits with status 1 on any difference.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use kv_codec::cuda::{self, Dtype, Launch, Op, Plan};
use kv_codec::{
    CodecConfig, CodecSpec, Input, Output, Par, VectorCodec, decode_batch, encode_batch,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The emulator's folder in the source tree.
const EMU: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../kv-cuda/emu");

/// Gaussian vectors at varied scales (1e-30 to 1e30 for f32), with zero, one-hot, constant,
/// outlier and half-integer vectors mixed in.
fn vectors(n: usize, d: usize, wide: bool) -> Vec<f32> {
    let mut s = 0x1234_5678_9abc_def1u64 ^ d as u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut x = Vec::with_capacity(n * d);
    for v in 0..n {
        let span = if wide { 60.0 } else { 4.0 };
        let scale = 10f64.powf(next() * span - span / 2.0);
        for i in 0..d {
            let g = (-2.0 * next().ln()).sqrt() * (std::f64::consts::TAU * next()).cos();
            let value = match v % 16 {
                0 => 0.0,
                1 => f64::from(u8::from(i == 3)) * scale,
                2 => scale,
                3 if i % 7 == 0 => 50.0 * scale,
                4 => (2.0 * g).round() * 0.5,
                _ => g * scale,
            };
            x.push(value as f32);
        }
    }
    x
}

/// Builds the emulator for the current kernel source into `dir`.
fn build_emulator(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("kernels_gen.cu"), cuda::kernel_source())?;
    let exe = dir.join("emu");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".to_owned());
    let status = Command::new(&cxx)
        .args(["-O2", "-std=c++17", "-ffp-contract=off", "-I"])
        .arg(dir)
        .arg("-I")
        .arg(EMU)
        .arg("-o")
        .arg(&exe)
        .arg(Path::new(EMU).join("emu.cpp"))
        .status()
        .map_err(|e| format!("cannot run {cxx}: {e}"))?;
    if !status.success() {
        return Err(format!("{cxx} could not build the emulator").into());
    }
    Ok(exe)
}

/// Runs one launch in the emulator: the output bytes and the fault word.
fn launch(
    emu: &Path,
    dir: &Path,
    l: &Launch,
    tables: &[u32],
    src: &[u8],
    out_bytes: usize,
) -> Result<(Vec<u8>, u64)> {
    let words = |w: &[u32]| w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(
        dir.join("job.txt"),
        format!(
            "{} {} {} {} {out_bytes}\n",
            l.kernel, l.grid, l.block, l.shared_bytes
        ),
    )?;
    std::fs::write(dir.join("params.bin"), words(l.params.words()))?;
    std::fs::write(dir.join("tab.bin"), words(tables))?;
    std::fs::write(dir.join("src.bin"), src)?;
    let out = Command::new(emu).arg(dir).output()?;
    if !out.status.success() {
        return Err(format!("emulator: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let status = std::fs::read_to_string(dir.join("status.txt"))?
        .trim()
        .parse()?;
    Ok((std::fs::read(dir.join("dst.bin"))?, status))
}

/// The CPU's decoded values of `bytes` in `dtype`, as raw little-endian bytes.
fn cpu_decode(cpu: &dyn VectorCodec, bytes: &[u8], n: usize, dtype: Dtype) -> Result<Vec<u8>> {
    let d = cpu.head_dim();
    Ok(match dtype {
        Dtype::F32 => {
            let mut y = vec![0f32; n * d];
            decode_batch(cpu, bytes, Output::F32(&mut y), Par::Rayon)?;
            y.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        Dtype::F16 => {
            let mut y = vec![f16::ZERO; n * d];
            decode_batch(cpu, bytes, Output::F16(&mut y), Par::Rayon)?;
            y.reinterpret_cast()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        }
        _ => {
            let mut y = vec![bf16::ZERO; n * d];
            decode_batch(cpu, bytes, Output::Bf16(&mut y), Par::Rayon)?;
            y.reinterpret_cast()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        }
    })
}

/// Compares one codec at one head_dim in every dtype; returns the number of differences.
fn check(emu: &Path, dir: &Path, spec: &str, d: usize, n: usize) -> Result<usize> {
    let config = CodecConfig::new(spec.parse::<CodecSpec>()?, d);
    let Ok(cpu) = config.build() else {
        println!("{spec:>22} d={d:<4} skipped: the CPU codec refuses this head_dim");
        return Ok(0);
    };
    let plan = Plan::new(cuda::kernel_codec(&config)?)?;
    let mut differences = 0;
    for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
        let x = vectors(n, d, dtype == Dtype::F32);
        let mut want = vec![0u8; cpu.encoded_len(n)];
        let raw: Vec<u8> = match dtype {
            Dtype::F32 => {
                encode_batch(cpu.as_ref(), Input::F32(&x), &mut want, Par::Rayon)?;
                x.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            Dtype::F16 => {
                let h: Vec<f16> = x
                    .iter()
                    .map(|&v| f16::from_f32(v.clamp(-6e4, 6e4)))
                    .collect();
                encode_batch(cpu.as_ref(), Input::F16(&h), &mut want, Par::Rayon)?;
                h.reinterpret_cast()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
            _ => {
                let h: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
                encode_batch(cpu.as_ref(), Input::Bf16(&h), &mut want, Par::Rayon)?;
                h.reinterpret_cast()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
        };
        let l = plan.launch(Op::Encode, n, dtype)?.ok_or("empty batch")?;
        let (got, status) = launch(emu, dir, &l, plan.tables(), &raw, want.len())?;
        let encode_ok = got == want && status == u64::MAX;

        let l = plan.launch(Op::Decode, n, dtype)?.ok_or("empty batch")?;
        let size = if dtype == Dtype::F32 { 4 } else { 2 };
        let (got, status) = launch(emu, dir, &l, plan.tables(), &want, n * d * size)?;
        let decode_ok = got == cpu_decode(cpu.as_ref(), &want, n, dtype)? && status == u64::MAX;

        // Random bytes: the first fault must be the CPU's (vector; the reason by its code).
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let junk: Vec<u8> = (0..want.len())
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (s >> 56) as u8
            })
            .collect();
        let mut y = vec![0f32; n * d];
        let cpu_fault = match decode_batch(cpu.as_ref(), &junk, Output::F32(&mut y), Par::Rayon) {
            Err(kv_codec::Error::CorruptPayload { vector, .. }) => Some(vector as u64),
            _ => None,
        };
        let l = plan
            .launch(Op::Decode, n, Dtype::F32)?
            .ok_or("empty batch")?;
        let (_, status) = launch(emu, dir, &l, plan.tables(), &junk, n * d * 4)?;
        let gpu_fault = (status != u64::MAX).then_some(status >> 32);
        let fault_ok = cpu_fault == gpu_fault;

        let verdict = |ok: bool| if ok { "same" } else { "DIFFERENT" };
        println!(
            "{spec:>22} d={d:<4} {dtype:?}: encode {}, decode {}, first fault {} ({cpu_fault:?})",
            verdict(encode_ok),
            verdict(decode_ok),
            verdict(fault_ok)
        );
        differences += usize::from(!encode_ok) + usize::from(!decode_ok) + usize::from(!fault_ok);
    }
    Ok(differences)
}

fn run() -> Result<usize> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(specs), Some(dims)) = (args.first(), args.get(1)) else {
        return Err("usage: cuda_emulate SPEC[,SPEC...] HEAD_DIM[,HEAD_DIM...] [VECTORS]".into());
    };
    let n: usize = args.get(2).map_or(Ok(100), |a| a.parse())?;
    let dir = std::env::temp_dir().join(format!("kv-cuda-emulate-{}", std::process::id()));
    let emu = build_emulator(&dir)?;
    let mut differences = 0;
    for spec in specs.split(',') {
        for d in dims.split(',') {
            differences += check(&emu, &dir, spec, d.parse()?, n)?;
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(differences)
}

fn main() -> ExitCode {
    match run() {
        Ok(0) => {
            println!("no differences");
            ExitCode::SUCCESS
        }
        Ok(k) => {
            println!("{k} differences");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("cuda_emulate: {e}");
            ExitCode::from(1)
        }
    }
}
