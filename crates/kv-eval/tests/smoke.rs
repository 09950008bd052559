//! Smoke test on the real model, run only when its file is present (`cargo xtask
//! fetch-model`, or `KV_EVAL_MODEL`); otherwise it prints why it did nothing, straight to
//! standard error so that the test harness's output capture does not hide the reason.
//!
//! On the first 32 tokens of the shared text: the token ids match the reference, the
//! prefill path and the token-by-token path give the same perplexity, every layer's K and V
//! match the reference tensors, and compressed stores (kv-codec's cache) decoded as rows of one
//! batch stay close to the exact row (closer at a higher rate) while holding the bytes their
//! codecs promise; the cache's attention on its pages and the reference attention over a
//! decoded copy give the same next-token distributions up to f32 rounding.

use std::io::Write;
use std::path::Path;

use candle_core::Tensor;
use kv_codec::{Input, Output};
use kv_eval::metrics::{Tally, log_softmax, mean_nll};
use kv_eval::model::{Llama, Logits, WeightMode, default_model_path};
use kv_eval::plan::CachePlan;
use kv_eval::reference::{Reference, default_reference_path, verify};
use kv_eval::store::{AttentionPath, CacheStore, ExactStore, KvStore, StoreShape};
use kv_eval::text::default_text_path;
use kv_eval::tokenizer::GgufTokenizer;

const TOKENS: usize = 32;
/// Decode steps over which the two attention paths are compared (two 16-token pages).
const PATH_STEPS: usize = 20;

/// Prints a skip reason past the harness's capture.
fn skip(reason: String) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED kv-eval smoke test: {reason}"
    );
}

/// Perplexity of `ids` decoded token by token through `store`.
fn decode_ppl(model: &Llama, ids: &[u32], store: &mut dyn KvStore) -> f64 {
    let vocab = model.config().vocab;
    let mut nll = 0.0;
    for i in 0..ids.len() - 1 {
        let logits = model
            .forward(&[&ids[i..=i]], &mut [&mut *store], Logits::Last)
            .unwrap();
        let logits = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        nll += mean_nll(&logits, vocab, &ids[i + 1..=i + 1]);
    }
    (nll / (ids.len() - 1) as f64).exp()
}

#[test]
fn first_tokens_through_exact_and_compressed_stores() {
    let model_path = default_model_path();
    let (text_path, reference_path) = (default_text_path(), default_reference_path());
    for (path, what) in [
        (
            model_path.as_path(),
            "model (run `cargo xtask fetch-model`)",
        ),
        (text_path.as_path(), "text (../shared/data)"),
        (reference_path.as_path(), "reference K/V (../shared/data)"),
    ] {
        if !Path::new(path).is_file() {
            skip(format!("{what} not found at {}", path.display()));
            return;
        }
    }
    let model = Llama::load(&model_path, WeightMode::Dequantized).unwrap();
    let tokenizer = GgufTokenizer::load(&model_path).unwrap();
    let text = std::fs::read_to_string(&text_path).unwrap();
    // A prefix of the text long enough for the tokens, so the ids match a whole-text run.
    let ids = tokenizer.encode(&text[..text.len().min(4096)]).unwrap();
    let ids = &ids[..TOKENS];
    let reference = Reference::load(&reference_path).unwrap();

    // Prefill path, tokens and K/V against the reference.
    let r = verify(&model, ids, &reference, TOKENS, false, true).unwrap();
    assert_eq!(r.token_mismatches, 0);
    assert!(r.k_max_rel_err < 2e-3, "K max rel err {}", r.k_max_rel_err);
    assert!(r.v_max_rel_err < 2e-3, "V max rel err {}", r.v_max_rel_err);

    // Token-by-token path with the exact store: the same perplexity.
    let shape = model.config().store_shape();
    let exact = decode_ppl(&model, ids, &mut ExactStore::new(shape));
    assert!(
        (exact / r.ppl_prefill - 1.0).abs() < 1e-4,
        "decode {exact} vs prefill {}",
        r.ppl_prefill
    );

    // The batched path the evaluation uses: exact, int8 and the default codec at 3 bpv as
    // three rows, token by token, attending on the compressed pages.
    let layers = shape.layers;
    let plans = ["int8", "voronoi-e8-q6-s3"].map(|p| CachePlan::parse(p, layers).unwrap());
    let mut rows: Vec<Box<dyn KvStore>> = vec![Box::new(ExactStore::new(shape))];
    for plan in plans {
        rows.push(Box::new(
            CacheStore::new(shape, plan, AttentionPath::Pages).unwrap(),
        ));
    }
    let mut tallies = [Tally::default(); 3];
    for i in 0..TOKENS - 1 {
        let input = [ids[i]];
        let batch: Vec<&[u32]> = vec![&input; 3];
        let mut refs: Vec<&mut dyn KvStore> = rows
            .iter_mut()
            .map(|s| s.as_mut() as &mut dyn KvStore)
            .collect();
        let logits = model.forward(&batch, &mut refs, Logits::Last).unwrap();
        let flat = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let lp: Vec<Vec<f64>> = flat
            .chunks_exact(model.config().vocab)
            .map(log_softmax)
            .collect();
        for (t, row) in tallies.iter_mut().zip(&lp) {
            t.add(row, &lp[0], ids[i + 1]);
        }
    }
    assert!(
        (tallies[0].ppl() / exact - 1.0).abs() < 1e-4,
        "batched exact row"
    );
    let (int8, v3) = (&tallies[1], &tallies[2]);
    assert!(int8.mean_kl() < 1e-2, "int8 KL {}", int8.mean_kl());
    assert!(int8.top1() > 0.9, "int8 top-1 {}", int8.top1());
    // At 3 bpv the first tokens of the text move a lot (KL ≈ 0.7 nats), but far less than
    // a store that returned garbage would (several nats).
    assert!(
        v3.mean_kl() > 10.0 * int8.mean_kl() && v3.mean_kl() < 2.0,
        "3 bpv KL {} vs int8 {}",
        v3.mean_kl(),
        int8.mean_kl()
    );
    // Bytes held: 31 tokens in each of 30 layers × 3 heads × (K, V) streams, in two pages of
    // 16 tokens packed at the codec's exact bits per vector (int8: 64 values + a 16-bit
    // scale).
    let streams = layers * shape.kv_heads * 2;
    assert_eq!(rows[1].held_bytes(), streams * 2 * (16 * 528) / 8);
    assert!(rows[2].held_bytes() < rows[1].held_bytes() / 2);

    // The two attention paths from the same cache, step by step: each token is decoded
    // attending on the pages, then rolled back and decoded again attending over the decoded
    // copy (which leaves the cache as that path writes it).
    let plan = CachePlan::parse("voronoi-e8-q6-s3", layers).unwrap();
    let mut both = Both {
        store: CacheStore::new(shape, plan, AttentionPath::DecodedCopy).unwrap(),
        pages: true,
    };
    let (mut max_dlogp, mut max_kl) = (0f64, 0f64);
    for i in 0..PATH_STEPS {
        let step = |both: &mut Both, pages: bool| {
            both.pages = pages;
            let logits = model
                .forward(&[&ids[i..=i]], &mut [both], Logits::Last)
                .unwrap();
            log_softmax(&logits.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        };
        let on_pages = step(&mut both, true);
        both.truncate(i).unwrap();
        let on_copy = step(&mut both, false);
        let mut kl = 0.0;
        for (a, b) in on_pages.iter().zip(&on_copy) {
            max_dlogp = max_dlogp.max((a - b).abs());
            kl += a.exp() * (a - b);
        }
        max_kl = max_kl.max(kl.abs());
    }
    let _ = writeln!(
        std::io::stderr().lock(),
        "kv-eval smoke: pages vs decoded copy from the same 3-bpv cache, {} steps: \
         max |Δ log p| {max_dlogp:.2e}, max KL {max_kl:.2e} nats",
        PATH_STEPS
    );
    assert!(max_dlogp < 5e-4, "|Δ log p| {max_dlogp}");
    assert!(max_kl < 1e-9, "KL {max_kl}");
    assert_eq!(both.held_bytes(), rows[2].held_bytes());
}

/// A [`CacheStore`] with a decoded copy whose attention can be switched to the cache's own
/// attention on its pages, to compare the two paths from the same cache.
#[derive(Debug)]
struct Both {
    store: CacheStore,
    pages: bool,
}

impl KvStore for Both {
    fn shape(&self) -> StoreShape {
        self.store.shape()
    }

    fn tokens(&self, layer: usize) -> usize {
        self.store.tokens(layer)
    }

    fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) -> kv_eval::Result<()> {
        self.store.append(layer, k, v)
    }

    fn read(&self, layer: usize, k: &mut Vec<f32>, v: &mut Vec<f32>) -> kv_eval::Result<()> {
        self.store.read(layer, k, v)
    }

    fn attend(&self, layer: usize, q: &Tensor) -> kv_eval::Result<Tensor> {
        if !self.pages {
            return self.store.attend(layer, q);
        }
        let (q_heads, n, d) = q.dims3()?;
        let queries = q.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; queries.len()];
        self.store
            .cache()
            .attend(layer, Input::F32(&queries), q_heads, Output::F32(&mut out))
            .unwrap();
        Ok(Tensor::from_vec(out, (q_heads, n, d), q.device())?)
    }

    fn truncate(&mut self, tokens: usize) -> kv_eval::Result<()> {
        self.store.truncate(tokens)
    }

    fn held_bytes(&self) -> usize {
        self.store.held_bytes()
    }
}
