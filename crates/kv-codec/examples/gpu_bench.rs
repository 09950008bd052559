//! GPU throughput of the codecs with kernels (feature `cuda`, run on a GPU machine), against
//! the memory roofline measured in the same run.
//!
//! For each head_dim (64, 128, 256) and batch (2^20 and 2^24 vectors of bf16, as engines hold
//! K/V), it times encode (bf16 → packed bytes) and decode (packed bytes → bf16) of each codec
//! with CUDA events (the median of several runs, after a warm-up), and the device-to-device
//! copy of the bf16 batch. The roofline of a kernel is the time the copy engine's bandwidth
//! (bytes read + written per second) needs for the kernel's own bytes read + written; the
//! table reports G vectors/s and that time as a percentage of the kernel's.
//!
//! ```text
//! cargo run --release -p kv-codec --features cuda --example gpu_bench -- \
//!     [--json PATH] [--markdown PATH] [--date YYYY-MM-DD] [--quick]
//! ```
//! `--quick` runs 2^20 vectors only. Exits with status 2 when no GPU is usable.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use half::bf16;
use half::slice::HalfFloatSliceExt;
use kv_codec::cuda::{self, Device, DeviceBuffer, Plan, Values, ValuesMut};
use kv_codec::{CodecConfig, CodecSpec};

const CODECS: [&str; 7] = [
    "voronoi-e8-q16-s4",
    "compat-d4-q38",
    "compat-e8-q38",
    "turboquant-b4",
    "fp8-e4m3",
    "int8",
    "int4",
];

/// Timed runs per measurement (after one warm-up); the median is reported.
const RUNS: usize = 5;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Row {
    codec: String,
    head_dim: usize,
    vectors: usize,
    op: &'static str,
    ms: f64,
    bytes_read: u64,
    bytes_written: u64,
    copy_gbs: f64,
}

impl Row {
    fn gvps(&self) -> f64 {
        self.vectors as f64 / self.ms / 1e6
    }

    /// The copy-bandwidth time of this kernel's bytes, as a percentage of its time.
    fn roofline_pct(&self) -> f64 {
        let floor_ms = (self.bytes_read + self.bytes_written) as f64 / (self.copy_gbs * 1e9) * 1e3;
        100.0 * floor_ms / self.ms
    }
}

/// Median device time (ms) of `RUNS` runs of `work`, after one untimed run.
fn median_ms(device: &Device, mut work: impl FnMut() -> Result<()>) -> Result<f64> {
    work()?;
    device.synchronize()?;
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (r, ms) = device.timed(|| Ok(work()))?;
        r?;
        times.push(f64::from(ms));
    }
    times.sort_by(f64::total_cmp);
    Ok(times[RUNS / 2])
}

/// `n` bf16 vectors of `d` values: 2^20 distinct seeded Gaussian vectors, repeated.
fn bf16_batch(n: usize, d: usize) -> Vec<u16> {
    let distinct = n.min(1 << 20);
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let block: Vec<bf16> = (0..distinct * d)
        .map(|_| {
            let g = (-2.0 * next().ln()).sqrt() * (std::f64::consts::TAU * next()).cos();
            bf16::from_f64(g)
        })
        .collect();
    let block: &[u16] = block.reinterpret_cast();
    let mut out = Vec::with_capacity(n * d);
    while out.len() < n * d {
        let take = (n * d - out.len()).min(block.len());
        out.extend_from_slice(&block[..take]);
    }
    out
}

fn bench(device: &Arc<Device>, quick: bool) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let sizes: &[usize] = if quick {
        &[1 << 20]
    } else {
        &[1 << 20, 1 << 24]
    };
    for &d in &[64usize, 128, 256] {
        for &n in sizes {
            let host = bf16_batch(n, d);
            let input = device.upload(&host)?;
            drop(host);
            let mut output: DeviceBuffer<u16> = device.zeros(n * d)?;
            let value_bytes = (n * d * 2) as u64;
            let copy_ms = median_ms(device, || Ok(device.copy(&input, &mut output)?))?;
            let copy_gbs = 2.0 * value_bytes as f64 / (copy_ms * 1e-3) / 1e9;
            println!("d={d} n={n}: device-to-device copy {copy_gbs:.0} GB/s (read + write)");
            for spec in CODECS {
                let config = CodecConfig::new(spec.parse::<CodecSpec>()?, d);
                let cpu = config.build()?;
                let plan = device.load(Plan::new(cuda::kernel_codec(&config)?)?)?;
                let encoded = cpu.encoded_len(n) as u64;
                let mut bytes = device.zeros::<u8>(encoded as usize)?;
                let enc = median_ms(device, || {
                    Ok(plan.enqueue_encode(Values::Bf16(&input), &mut bytes)?)
                })?;
                plan.finish()?;
                let dec = median_ms(device, || {
                    Ok(plan.enqueue_decode(&bytes, ValuesMut::Bf16(&mut output))?)
                })?;
                plan.finish()?;
                for (op, ms, read, written) in [
                    ("encode", enc, value_bytes, encoded),
                    ("decode", dec, encoded, value_bytes),
                ] {
                    let row = Row {
                        codec: spec.to_owned(),
                        head_dim: d,
                        vectors: n,
                        op,
                        ms,
                        bytes_read: read,
                        bytes_written: written,
                        copy_gbs,
                    };
                    println!(
                        "  {spec:<20} {op}: {ms:8.3} ms  {:7.3} G vectors/s  {:5.1}% of roofline",
                        row.gvps(),
                        row.roofline_pct()
                    );
                    rows.push(row);
                }
            }
        }
    }
    Ok(rows)
}

fn json(device: &Device, date: &str, command: &str, rows: &[Row]) -> String {
    let mut s = String::from("{\n");
    let _ = writeln!(s, "  \"card\": {:?},", device.name());
    let _ = writeln!(s, "  \"arch\": {:?},", device.arch());
    let _ = writeln!(s, "  \"date\": {date:?},");
    let _ = writeln!(s, "  \"command\": {command:?},");
    let _ = writeln!(s, "  \"input_dtype\": \"bf16\",");
    let _ = writeln!(
        s,
        "  \"roofline\": \"(bytes read + bytes written) / device-to-device copy bandwidth (read + write) measured in the same run\","
    );
    s.push_str("  \"results\": [\n");
    for (i, r) in rows.iter().enumerate() {
        let _ = write!(
            s,
            "    {{\"codec\": {:?}, \"head_dim\": {}, \"vectors\": {}, \"op\": {:?}, \"ms\": {:.4}, \"g_vectors_per_s\": {:.4}, \"bytes_read\": {}, \"bytes_written\": {}, \"copy_gb_per_s\": {:.1}, \"roofline_pct\": {:.2}}}",
            r.codec,
            r.head_dim,
            r.vectors,
            r.op,
            r.ms,
            r.gvps(),
            r.bytes_read,
            r.bytes_written,
            r.copy_gbs,
            r.roofline_pct()
        );
        s.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    s.push_str("  ]\n}\n");
    s
}

fn markdown(device: &Device, date: &str, command: &str, rows: &[Row]) -> String {
    let mut s = format!(
        "GPU throughput on {} ({}), {date}: bf16 in/out, median of {RUNS} runs. Roofline % = \
         time the measured device-to-device copy bandwidth needs for the kernel's bytes read + \
         written, over the kernel's time. Command: `{command}`.\n\n",
        device.name(),
        device.arch()
    );
    s.push_str("| codec | d | vectors | encode G vec/s | encode % roofline | decode G vec/s | decode % roofline |\n");
    s.push_str("|---|---|---|---|---|---|---|\n");
    for pair in rows.chunks(2) {
        let (e, dcd) = (&pair[0], &pair[1]);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.3} | {:.1} | {:.3} | {:.1} |",
            e.codec,
            e.head_dim,
            if e.vectors == 1 << 20 {
                "1M".to_owned()
            } else {
                format!("{}M", e.vectors >> 20)
            },
            e.gvps(),
            e.roofline_pct(),
            dcd.gvps(),
            dcd.roofline_pct()
        );
    }
    s
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut json_path, mut md_path, mut date, mut quick) =
        (None, None, "unknown".to_owned(), false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--json" => json_path = Some(value()?),
            "--markdown" => md_path = Some(value()?),
            "--date" => date = value()?,
            "--quick" => quick = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let command = format!("gpu_bench {}", args.join(" "));
    let device = Arc::new(Device::new(0)?);
    println!("device: {} ({})", device.name(), device.arch());
    let rows = bench(&device, quick)?;
    let table = markdown(&device, &date, &command, &rows);
    println!("\n{table}");
    if let Some(p) = json_path {
        std::fs::write(p, json(&device, &date, &command, &rows))?;
    }
    if let Some(p) = md_path {
        std::fs::write(p, table)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    if !cuda::is_available() {
        eprintln!("gpu_bench: no usable GPU (kv_cuda::is_available() is false)");
        return ExitCode::from(2);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
