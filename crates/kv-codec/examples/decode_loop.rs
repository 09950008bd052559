//! An inference engine's decode loop with the paged cache: a toy two-layer model whose
//! keys, values and queries come from fixed random projections of a hidden state.
//!
//! It configures the cache from a plan (the JSON the audit writes), prefills a prompt in
//! one chunk, then decodes token by token: per layer, append the new token's K and V and
//! attend with its queries on the compressed pages. Midway it drafts four speculative
//! tokens and rolls two of them back with `crop`. At the end it prints the bytes held
//! against a bf16 cache and how far the outputs are from the same loop run on f32 pages.
//!
//! Run with `cargo run --release -p kv-codec --example decode_loop`.

use kv_codec::cache::{CacheConfig, CachePlan, KvCache, LayerPolicy};
use kv_codec::format::Dtype;
use kv_codec::{Error, Input, Output};

const BATCH: usize = 1;
const KV_HEADS: usize = 4;
const Q_HEADS: usize = 8;
const D: usize = 64;
const HIDDEN: usize = 128;
const LAYERS: usize = 2;
const PROMPT: usize = 96;
const STEPS: usize = 32;

/// A fixed pseudo-random matrix of `rows × cols` values in about ±1/√cols.
fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let scale = 1.7 / (cols as f32).sqrt();
    (0..(rows * cols) as u64)
        .map(|i| {
            let mut x = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
            x ^= x >> 31;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 29;
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
        })
        .collect()
}

/// `y = W·x` for each of `n` vectors.
fn project(w: &[f32], x: &[f32], cols: usize) -> Vec<f32> {
    x.chunks_exact(cols)
        .flat_map(|v| {
            w.chunks_exact(cols)
                .map(move |row| row.iter().zip(v).map(|(a, b)| a * b).sum::<f32>())
        })
        .collect()
}

/// Rearranges `[n, heads · D]` (token-major projections) into `[heads, n, D]`.
fn heads_first(x: &[f32], n: usize, heads: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for t in 0..n {
        for h in 0..heads {
            out[(h * n + t) * D..][..D].copy_from_slice(&x[(t * heads + h) * D..][..D]);
        }
    }
    out
}

/// The toy model: per layer, projections to K, V and Q, and one back to the hidden size.
struct Model {
    wk: Vec<Vec<f32>>,
    wv: Vec<Vec<f32>>,
    wq: Vec<Vec<f32>>,
    wo: Vec<Vec<f32>>,
}

impl Model {
    fn new() -> Self {
        let m = |rows, cols, s: u64| {
            (0..LAYERS as u64)
                .map(|l| matrix(rows, cols, s + 16 * l))
                .collect()
        };
        Self {
            wk: m(KV_HEADS * D, HIDDEN, 1),
            wv: m(KV_HEADS * D, HIDDEN, 2),
            wq: m(Q_HEADS * D, HIDDEN, 3),
            wo: m(HIDDEN, Q_HEADS * D, 4),
        }
    }

    /// Runs `n` new tokens (hidden states `[n, HIDDEN]`) through every layer, appending
    /// their K and V to the cache; returns the last layer's output `[n, HIDDEN]`.
    fn forward(&self, cache: &KvCache, mut x: Vec<f32>, n: usize) -> Result<Vec<f32>, Error> {
        for l in 0..LAYERS {
            let k = heads_first(&project(&self.wk[l], &x, HIDDEN), n, KV_HEADS);
            let v = heads_first(&project(&self.wv[l], &x, HIDDEN), n, KV_HEADS);
            let q = heads_first(&project(&self.wq[l], &x, HIDDEN), n, Q_HEADS);
            cache.append(l, Input::F32(&k), Input::F32(&v))?;
            let mut attn = vec![0f32; q.len()];
            cache.attend(l, Input::F32(&q), Q_HEADS, Output::F32(&mut attn))?;
            // Back to token-major [n, Q_HEADS · D], then the output projection, residual.
            let mut tokens = vec![0f32; attn.len()];
            for h in 0..Q_HEADS {
                for t in 0..n {
                    tokens[(t * Q_HEADS + h) * D..][..D]
                        .copy_from_slice(&attn[(h * n + t) * D..][..D]);
                }
            }
            let o = project(&self.wo[l], &tokens, Q_HEADS * D);
            x.iter_mut().zip(o).for_each(|(a, b)| *a += b);
        }
        Ok(x)
    }
}

/// The next token's hidden state: a deterministic function of the last output.
fn next_input(out: &[f32]) -> Vec<f32> {
    let last = &out[out.len() - HIDDEN..];
    let norm = last.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
    last.iter()
        .map(|v| v / norm * (HIDDEN as f32).sqrt())
        .collect()
}

/// The whole loop on one cache; returns every decode step's output.
fn run(cache: &KvCache, model: &Model) -> Result<Vec<f32>, Error> {
    let prompt = matrix(PROMPT, HIDDEN, 77);
    let mut out = model.forward(cache, prompt, PROMPT)?;
    let mut outputs = Vec::new();
    for step in 0..STEPS {
        if step == STEPS / 2 {
            // Speculative decoding: draft four tokens, keep two, roll the others back.
            let len = cache.len(0)?;
            let drafts = matrix(4, HIDDEN, 1000 + step as u64);
            model.forward(cache, drafts, 4)?;
            cache.crop(len + 2)?;
        }
        out = model.forward(cache, next_input(&out), 1)?;
        outputs.extend_from_slice(&out);
    }
    Ok(outputs)
}

fn main() -> Result<(), Error> {
    // What the audit's planner writes: the first layer kept in f16, the other compressed.
    let plan = CachePlan::from_json(
        r#"{"layers":[{"k":null,"v":null},{"k":"voronoi-e8-q16-s4","v":"voronoi-e8-q8-s4"}]}"#,
    )?;
    let config = CacheConfig::from_plan(&plan, BATCH, KV_HEADS, D).with_page_tokens(32);
    let cache = KvCache::new(config.clone())?;
    let model = Model::new();
    let outputs = run(&cache, &model)?;

    let exact_config = CacheConfig {
        layers: vec![LayerPolicy::uncompressed(Dtype::F32); LAYERS],
        ..config
    };
    let exact = KvCache::new(exact_config)?;
    let reference = run(&exact, &model)?;

    let tokens = cache.len(0)?;
    let bf16_bytes = LAYERS * 2 * BATCH * KV_HEADS * tokens * D * 2;
    let err: f32 = outputs
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>()
        / reference.iter().map(|b| b * b).sum::<f32>();
    println!("{tokens} tokens in the cache (prompt {PROMPT}, {STEPS} decoded, 2 drafts kept)");
    let name =
        |spec: Option<kv_codec::CodecSpec>| spec.map_or("f16".to_string(), |s| s.to_string());
    for (l, p) in plan.layers.iter().enumerate() {
        println!(
            "layer {l}: K {}, V {}: {} bytes held",
            name(p.k),
            name(p.v),
            cache.layer_bytes_held(l)?
        );
    }
    println!(
        "total {} bytes held, {:.2}x smaller than a bf16 cache of {} bytes",
        cache.bytes_held(),
        bf16_bytes as f64 / cache.bytes_held() as f64,
        bf16_bytes
    );
    println!(
        "decode outputs vs the same loop on f32 pages: relative error {:.2e} ({:.1} dB)",
        err,
        -10.0 * err.log10()
    );
    Ok(())
}
