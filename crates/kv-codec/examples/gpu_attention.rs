//! Decode attention per step on compressed pages in device memory (feature `cuda`, run on a
//! GPU machine), against PyTorch's bf16 `scaled_dot_product_attention` measured in the same
//! run by `bench/attention_torch.py` (whose JSON `--torch` reads).
//!
//! Shapes: one query position per batch row, 32 query heads over 8 KV heads, head_dim 128,
//! pages of 64 tokens, batch 1 and 8, contexts of 4k, 32k and 128k tokens. Per codec and
//! batch, one [`DeviceLayer`] is filled by device appends (seeded Gaussian bf16 tokens,
//! encoded on the GPU) up to each context in turn, and a step (query rotation, the partial
//! kernel over the pages, the combine with the inverse rotation) is timed with CUDA events:
//! the median of 20 steps after warm-up.
//!
//! ```text
//! cargo run --release -p kv-codec --features cuda --example gpu_attention -- \
//!     [--torch PATH] [--json PATH] [--markdown PATH] [--date YYYY-MM-DD] [--quick]
//! ```
//! `--quick` runs the 4k and 32k contexts only. `--from RESULTS.json [--markdown PATH]`
//! only writes the Markdown table of a results file (no GPU needed): the committed table is
//! made that way. Exits with status 2 when no GPU is usable.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use half::bf16;
use half::slice::HalfFloatSliceExt;
use kv_codec::CodecSpec;
use kv_codec::cache::{CacheConfig, LayerPolicy};
use kv_codec::cuda::{self, Device, DeviceLayer, PagePool, Values};

/// Codecs of the pages: the default codec (4.34 bits per value at d = 128), 4- and 8-bit
/// integers with one scale per vector (4.125 and 8.125 bits per value; the tensor-core
/// kernels), and bf16 pages (16) as a reference for the CUDA-core kernels themselves.
const CODECS: [&str; 4] = ["voronoi-e8-q16-s4", "int4", "int8", "bf16"];
const CONTEXTS: [usize; 3] = [4096, 32768, 131072];
const BATCHES: [usize; 2] = [1, 8];
const KV_HEADS: usize = 8;
const Q_HEADS: usize = 32;
const HEAD_DIM: usize = 128;
const PAGE_TOKENS: usize = 64;
/// Tokens per device append while filling.
const CHUNK: usize = 4096;
/// Timed steps per measurement (after warm-up); the median is reported.
const RUNS: usize = 20;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Row {
    codec: String,
    bits_per_value: f64,
    batch: usize,
    context: usize,
    ms: f64,
    page_bytes: u64,
    torch_ms: Option<f64>,
}

impl Row {
    /// Page bytes read per second, in GB/s.
    fn gbs(&self) -> f64 {
        self.page_bytes as f64 / (self.ms * 1e-3) / 1e9
    }

    fn ratio(&self) -> Option<f64> {
        self.torch_ms.map(|t| self.ms / t)
    }
}

/// Seeded Gaussian bf16 bits.
fn bf16_gaussian(n: usize, seed: u64) -> Vec<u16> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let v: Vec<bf16> = (0..n)
        .map(|_| {
            let g = (-2.0 * next().ln()).sqrt() * (std::f64::consts::TAU * next()).cos();
            bf16::from_f64(g)
        })
        .collect();
    let bits: &[u16] = v.reinterpret_cast();
    bits.to_vec()
}

/// A torch baseline row: batch, context, ms.
type TorchRow = (usize, usize, f64);

/// The torch baseline's file and rows.
fn torch_rows(path: &str) -> Result<(serde_json::Value, Vec<TorchRow>)> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let rows = v["rows"]
        .as_array()
        .ok_or("torch JSON has no rows")?
        .iter()
        .filter_map(|r| {
            Some((
                r["batch"].as_u64()? as usize,
                r["context"].as_u64()? as usize,
                r["ms"].as_f64()?,
            ))
        })
        .collect();
    Ok((v, rows))
}

fn median_ms(device: &Device, layer: &DeviceLayer, q: &cuda::DeviceBuffer<f32>) -> Result<f64> {
    let mut out = device.zeros::<f32>(q.len())?;
    for _ in 0..3 {
        layer.enqueue_attend(q, Q_HEADS, &mut out)?;
    }
    layer.attention().finish()?;
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (r, ms) = device.timed(|| Ok(layer.enqueue_attend(q, Q_HEADS, &mut out)))?;
        r?;
        times.push(f64::from(ms));
    }
    layer.attention().finish()?;
    times.sort_by(f64::total_cmp);
    Ok(times[RUNS / 2])
}

fn bench(
    device: &Arc<Device>,
    contexts: &[usize],
    torch: &[(usize, usize, f64)],
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let max = *contexts.iter().max().ok_or("no contexts")?;
    for &batch in &BATCHES {
        let streams = batch * KV_HEADS;
        let k = device.upload(&bf16_gaussian(streams * CHUNK * HEAD_DIM, 1))?;
        let v = device.upload(&bf16_gaussian(streams * CHUNK * HEAD_DIM, 2))?;
        let q: Vec<f32> = bf16_gaussian(batch * Q_HEADS * HEAD_DIM, 3)
            .into_iter()
            .map(|b| bf16::from_bits(b).to_f32())
            .collect();
        let q = device.upload(&q)?;
        for spec in CODECS {
            let spec: CodecSpec = spec.parse()?;
            let config = CacheConfig::new(
                batch,
                KV_HEADS,
                HEAD_DIM,
                vec![LayerPolicy::codecs(spec, spec)],
            )
            .with_page_tokens(PAGE_TOKENS);
            let bits = kv_codec::CodecConfig::new(spec, HEAD_DIM)
                .build()?
                .bits_per_vector();
            let mut layer = DeviceLayer::new(device, &config, 0, max)?;
            for &context in contexts {
                while layer.len() < context {
                    let n = CHUNK.min(context - layer.len());
                    if n == CHUNK {
                        layer.append(Values::Bf16(&k), Values::Bf16(&v))?;
                    } else {
                        let part =
                            |b: &cuda::DeviceBuffer<u16>| -> Result<cuda::DeviceBuffer<u16>> {
                                // The first n tokens of every stream of the chunk.
                                let mut host = vec![0u16; b.len()];
                                device.download(b, &mut host)?;
                                let mut sub = Vec::with_capacity(streams * n * HEAD_DIM);
                                for s in 0..streams {
                                    let at = s * CHUNK * HEAD_DIM;
                                    sub.extend_from_slice(&host[at..at + n * HEAD_DIM]);
                                }
                                Ok(device.upload(&sub)?)
                            };
                        let (kp, vp) = (part(&k)?, part(&v)?);
                        layer.append(Values::Bf16(&kp), Values::Bf16(&vp))?;
                    }
                }
                let ms = median_ms(device, &layer, &q)?;
                let pages = context.div_ceil(PAGE_TOKENS) as u64;
                let page_bytes = 2
                    * streams as u64
                    * pages
                    * layer.pages().layout(PagePool::K).page_bytes() as u64;
                let torch_ms = torch
                    .iter()
                    .find(|r| r.0 == batch && r.1 == context)
                    .map(|r| r.2);
                let row = Row {
                    codec: spec.to_string(),
                    bits_per_value: f64::from(bits) / HEAD_DIM as f64,
                    batch,
                    context,
                    ms,
                    page_bytes,
                    torch_ms,
                };
                println!(
                    "{:<20} batch {batch} context {context:>6}: {ms:8.4} ms  {:7.1} GB/s of pages{}",
                    row.codec,
                    row.gbs(),
                    row.ratio()
                        .map(|r| format!("  {r:.3}× torch bf16"))
                        .unwrap_or_default()
                );
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

fn json(
    device: &Device,
    date: &str,
    command: &str,
    torch: &serde_json::Value,
    rows: &[Row],
) -> String {
    let mut s = String::from("{\n");
    let _ = writeln!(s, "  \"card\": {:?},", device.name());
    let _ = writeln!(s, "  \"arch\": {:?},", device.arch());
    let _ = writeln!(s, "  \"date\": {date:?},");
    let _ = writeln!(s, "  \"command\": {command:?},");
    let _ = writeln!(
        s,
        "  \"shape\": {{\"q_heads\": {Q_HEADS}, \"kv_heads\": {KV_HEADS}, \"head_dim\": {HEAD_DIM}, \"page_tokens\": {PAGE_TOKENS}, \"query_positions\": 1}},"
    );
    let _ = writeln!(
        s,
        "  \"timing\": \"CUDA events around one decode step (query rotation, partial kernel, combine), median of {RUNS} after warm-up; torch: the same around one scaled_dot_product_attention call, median of its runs\","
    );
    let _ = writeln!(
        s,
        "  \"torch\": {},",
        serde_json::to_string(torch).unwrap_or_else(|_| "null".into())
    );
    s.push_str("  \"results\": [\n");
    for (i, r) in rows.iter().enumerate() {
        let opt = |v: Option<f64>| v.map_or("null".to_owned(), |x| format!("{x:.5}"));
        let _ = write!(
            s,
            "    {{\"codec\": {:?}, \"bits_per_value\": {:.4}, \"batch\": {}, \"context\": {}, \"ms\": {:.5}, \"page_bytes\": {}, \"page_gb_per_s\": {:.1}, \"torch_bf16_ms\": {}, \"ratio_to_torch_bf16\": {}}}",
            r.codec,
            r.bits_per_value,
            r.batch,
            r.context,
            r.ms,
            r.page_bytes,
            r.gbs(),
            opt(r.torch_ms),
            opt(r.ratio()),
        );
        s.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    s.push_str("  ]\n}\n");
    s
}

/// The Markdown table of a results file written by [`json`] (the committed table is made
/// from the committed JSON this way, never typed).
fn markdown(results: &serde_json::Value) -> Result<String> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned).ok_or("missing text field");
    let torch = &results["torch"];
    let shape = &results["shape"];
    let mut s = format!(
        "Decode attention per step on {} ({}), {}: one query position per batch row, {} query \
         heads over {} KV heads, d = {}, pages of {} tokens; CUDA events, median of the runs in \
         `timing`. Baseline: PyTorch {} `scaled_dot_product_attention` on bf16 K/V ({}), \
         measured in the same run. Ratio = ours / torch (target ≤ 0.35 at 32k). Command: \
         `{}`.\n\n",
        text(&results["card"])?,
        text(&results["arch"])?,
        text(&results["date"])?,
        shape["q_heads"],
        shape["kv_heads"],
        shape["head_dim"],
        shape["page_tokens"],
        torch["torch"].as_str().unwrap_or("(not measured)"),
        torch["gqa"].as_str().unwrap_or("-"),
        text(&results["command"])?,
    );
    s.push_str(
        "| pages | bits/value | batch | context | ours ms | page GB/s | torch bf16 ms | ratio |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|\n");
    for r in results["results"].as_array().ok_or("no results")? {
        let num = |k: &str| r[k].as_f64().ok_or(format!("missing {k}"));
        let opt = |k: &str, digits: usize| {
            r[k].as_f64()
                .map_or("-".to_owned(), |x| format!("{x:.digits$}"))
        };
        let _ = writeln!(
            s,
            "| {} | {:.3} | {} | {}k | {:.4} | {:.0} | {} | {} |",
            text(&r["codec"])?,
            num("bits_per_value")?,
            num("batch")?,
            num("context")? / 1024.0,
            num("ms")?,
            num("page_gb_per_s")?,
            opt("torch_bf16_ms", 4),
            opt("ratio_to_torch_bf16", 3),
        );
    }
    Ok(s)
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut json_path, mut md_path, mut torch_path, mut from) = (None, None, None, None);
    let (mut date, mut quick) = ("unknown".to_owned(), false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--json" => json_path = Some(value()?),
            "--markdown" => md_path = Some(value()?),
            "--torch" => torch_path = Some(value()?),
            "--from" => from = Some(value()?),
            "--date" => date = value()?,
            "--quick" => quick = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if let Some(p) = from {
        // Only the table, from a results file: no GPU needed.
        let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p)?)?;
        let table = markdown(&results)?;
        match md_path {
            Some(p) => std::fs::write(p, table)?,
            None => print!("{table}"),
        }
        return Ok(());
    }
    if !cuda::is_available() {
        return Err(NO_GPU.into());
    }
    let command = format!("gpu_attention {}", args.join(" "));
    let (torch, torch_rows) = match &torch_path {
        Some(p) => torch_rows(p)?,
        None => (serde_json::Value::Null, Vec::new()),
    };
    let device = Arc::new(Device::new(0)?);
    println!("device: {} ({})", device.name(), device.arch());
    let contexts: &[usize] = if quick { &CONTEXTS[..2] } else { &CONTEXTS };
    let rows = bench(&device, contexts, &torch_rows)?;
    let text = json(&device, &date, &command, &torch, &rows);
    let table = markdown(&serde_json::from_str(&text)?)?;
    println!("\n{table}");
    if let Some(p) = json_path {
        std::fs::write(p, text)?;
    }
    if let Some(p) = md_path {
        std::fs::write(p, table)?;
    }
    Ok(())
}

const NO_GPU: &str = "no usable GPU (kv_cuda::is_available() is false)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.to_string() == NO_GPU => {
            eprintln!("gpu_attention: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("gpu_attention: {e}");
            ExitCode::FAILURE
        }
    }
}
