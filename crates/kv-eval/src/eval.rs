//! End-to-end quality of cache plans on real text, by teacher forcing.
//!
//! For each passage (prefix P, continuation C): the prefix is prefilled once with the
//! exact store, and its K/V are copied into one [`CacheStore`](crate::store::CacheStore)
//! per plan (kv-codec's cache codes them, as an engine writes its prefill into a compressed
//! cache). Then the continuation is
//! decoded token by token through every store at once — one batch row per store, row 0
//! exact — so each of the C next-token distributions of a compressed row comes from
//! attention over its own cache (on its compressed pages, or over a decoded copy of them:
//! [`AttentionPath`]), its own earlier continuation tokens included.
//! Row `r` is scored against row 0 at the same step: perplexity of the true next tokens,
//! KL(exact ‖ compressed) and top-1 agreement. Δppl % is computed per passage and averaged
//! with a Student-t 95% interval over passages (passages are the independent samples).
//!
//! Sizes are reported twice: the plan's nominal bits per value (the codecs' rates) and the
//! bits per value its cache really held at the end of a passage (pages, their rounding and
//! any window and sinks included), which is the iso-quality table's rate.
//!
//! All rows see the same input tokens, so one forward pass of the batch shares one pass
//! over the weights; each row attends over its own store.

use std::time::Instant;

use candle_core::Tensor;
use kv_codec::CodecSpec;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::metrics::{Tally, log_softmax};
use crate::model::{Llama, Logits};
use crate::plan::CachePlan;
use crate::progress::Progress;
use crate::stats::MeanCi;
use crate::store::{AttentionPath, ExactStore, KvStore, rows_from};
use crate::text::Corpus;

/// The shape of an evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalSettings {
    /// Prefix tokens prefilled exactly and then stored by each plan.
    pub prefix: usize,
    /// Continuation tokens scored, each predicted by a token-by-token decode step.
    pub cont: usize,
    /// Passages, spread evenly over the text.
    pub passages: usize,
    /// Tokens of the text skipped before the first passage.
    pub skip: usize,
    /// Prefill chunk (tokens per forward pass).
    pub chunk: usize,
    /// How the compressed stores attend (results written before this field existed used a
    /// decoded copy of a store of this crate's own).
    #[serde(default)]
    pub attention: AttentionPath,
}

impl Default for EvalSettings {
    fn default() -> Self {
        Self {
            prefix: 512,
            cont: 64,
            passages: 8,
            skip: 0,
            chunk: 512,
            attention: AttentionPath::Pages,
        }
    }
}

/// The codec family of a spec, as the iso-quality table groups them.
pub fn family(spec: CodecSpec) -> &'static str {
    match spec {
        CodecSpec::Voronoi { .. } => "voronoi",
        CodecSpec::TurboQuant { .. } => "turboquant",
        CodecSpec::Compat {
            lattice: kv_codec::CompatLattice::D4,
            ..
        } => "compat-d4",
        CodecSpec::Compat { .. } => "compat-e8",
        CodecSpec::Int { .. } => "int",
        CodecSpec::Fp8E4m3 { .. } => "fp8-e4m3",
        CodecSpec::Bf16 => "bf16",
        CodecSpec::LlamaCpp { .. } => "llama.cpp",
        CodecSpec::Strawman { .. } => "strawman",
        _ => "other",
    }
}

/// The measurements of one plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanResult {
    /// The plan's text form.
    pub plan: String,
    /// The family when every layer uses one codec for K and V.
    pub family: Option<String>,
    /// The plan's nominal bits per value: the mean of its codecs' rates over all K and V
    /// (uncompressed kinds at 16, KIVI at `b + 32/G`; see
    /// [`CachePlan::bits_per_value`]).
    pub bits_per_value: f64,
    /// Bits per value the cache actually held at the end of a passage: held bytes · 8 /
    /// (tokens · layers · 2 · kv_heads · head_dim), pages (whole pages), their rounding and
    /// windows and sinks included. `None` in results written before it was measured.
    #[serde(default)]
    pub held_bits_per_value: Option<f64>,
    /// 16 / the rate ([`PlanResult::rate`]).
    pub compression_vs_bf16: f64,
    /// Bytes the store held per token at the end of a passage (all layers, K and V).
    pub held_bytes_per_token: f64,
    /// exp(mean nll) over all scored tokens of all passages.
    pub ppl: f64,
    /// Perplexity of each passage.
    pub ppl_passages: Vec<f64>,
    /// 100·(ppl / ppl_exact − 1) per passage: mean and 95% interval.
    pub delta_ppl_pct: MeanCi,
    /// Δppl % of each passage.
    pub delta_ppl_pct_passages: Vec<f64>,
    /// Mean KL(exact ‖ this) per step of each passage (nats): mean and 95% interval.
    pub kl: MeanCi,
    /// Fraction of steps whose argmax agrees with the exact row's, over all passages.
    pub top1_agreement: f64,
}

impl PlanResult {
    /// The rate the plan is compared at: the bits per value held, or the nominal rate for
    /// results written before the held rate was measured.
    pub fn rate(&self) -> f64 {
        self.held_bits_per_value.unwrap_or(self.bits_per_value)
    }
}

/// The exact cache's own numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExactResult {
    /// exp(mean nll) over all scored tokens.
    pub ppl: f64,
    /// Perplexity of each passage.
    pub ppl_passages: Vec<f64>,
    /// Bytes the f32 store held per token.
    pub held_bytes_per_token: f64,
}

/// A whole evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The settings.
    pub settings: EvalSettings,
    /// First token of each passage.
    pub passage_starts: Vec<usize>,
    /// The exact cache.
    pub exact: ExactResult,
    /// One entry per plan, in the order given.
    pub plans: Vec<PlanResult>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Mean wall-clock seconds of one decode step: one token through every row (the exact
    /// one and one per plan), scoring excluded. 0 in results written before it was timed.
    #[serde(default)]
    pub decode_step_seconds: f64,
}

impl EvalReport {
    /// This report's plans after those of `earlier`, a report of the same evaluation (same
    /// settings, passages and exact-cache perplexities, which the model computes the same
    /// way each run), so that a sweep can grow without running its plans again. A plan of
    /// both keeps this report's result; `seconds` add up; `decode_step_seconds` stays the
    /// earlier run's.
    ///
    /// # Errors
    /// What differs (`"settings"`, `"passages"`, `"exact-cache perplexities"`), when the two
    /// are not the same evaluation.
    pub fn after(self, earlier: Self) -> std::result::Result<Self, &'static str> {
        if self.settings != earlier.settings {
            return Err("settings");
        }
        if self.passage_starts != earlier.passage_starts {
            return Err("passages");
        }
        let same = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
        let exact = |r: &Self| r.exact.ppl_passages.clone();
        if exact(&self).len() != exact(&earlier).len()
            || !exact(&self)
                .iter()
                .zip(&exact(&earlier))
                .all(|(&a, &b)| same(a, b))
        {
            return Err("exact-cache perplexities");
        }
        let mut plans: Vec<PlanResult> = earlier
            .plans
            .into_iter()
            .filter(|e| self.plans.iter().all(|p| p.plan != e.plan))
            .collect();
        plans.extend(self.plans);
        Ok(Self {
            plans,
            seconds: earlier.seconds + self.seconds,
            decode_step_seconds: earlier.decode_step_seconds,
            ..earlier
        })
    }
}

/// Evaluates `plans` on `corpus` (see the module documentation).
///
/// # Errors
/// Text too short for the passages; model, store and codec errors.
pub fn evaluate(
    model: &Llama,
    corpus: &Corpus,
    plans: &[CachePlan],
    settings: &EvalSettings,
    quiet: bool,
) -> Result<EvalReport> {
    let (p, c) = (settings.prefix, settings.cont);
    let starts = corpus.passages(p + c + 1, settings.passages, settings.skip)?;
    let shape = model.config().store_shape();
    let vocab = model.config().vocab;
    let rows = plans.len() + 1;
    let mut progress = Progress::new("eval", starts.len() * (c + 1), quiet);
    // [passage][row]
    let mut tallies: Vec<Vec<Tally>> = Vec::new();
    let mut held = vec![0usize; rows];
    let mut decoding = 0.0;
    for (i, &start) in starts.iter().enumerate() {
        let toks = &corpus.tokens[start..start + p + c + 1];
        let mut exact = ExactStore::new(shape);
        model.prefill(&toks[..p], &mut exact, settings.chunk, Logits::Last)?;
        progress.advance(1, &format!("passage {}/{}: prefilled", i + 1, starts.len()));
        let mut stores = rows_from(&exact, plans, settings.attention)?;
        let mut passage = vec![Tally::default(); rows];
        for step in 0..c {
            let input = [toks[p + step]];
            let batch: Vec<&[u32]> = vec![&input; rows];
            let mut refs: Vec<&mut dyn KvStore> = stores
                .iter_mut()
                .map(|s| s.as_mut() as &mut dyn KvStore)
                .collect();
            let started = Instant::now();
            let logits = model.forward(&batch, &mut refs, Logits::Last)?;
            decoding += started.elapsed().as_secs_f64();
            let lp = log_probs(&logits, vocab)?;
            let target = toks[p + step + 1];
            for (tally, row) in passage.iter_mut().zip(&lp) {
                tally.add(row, &lp[0], target);
            }
            progress.advance(1, &format!("passage {}/{}", i + 1, starts.len()));
        }
        for (h, s) in held.iter_mut().zip(&stores) {
            *h = s.held_bytes();
        }
        tallies.push(passage);
    }
    let tokens_held = (p + c) as f64;
    let decode_step_seconds = decoding / (starts.len() * c) as f64;
    let exact_ppl: Vec<f64> = tallies.iter().map(|t| t[0].ppl()).collect();
    let pooled = |r: usize| {
        let mut all = Tally::default();
        for t in &tallies {
            all.merge(&t[r]);
        }
        all
    };
    let head_dim = shape.head_dim;
    let values_held = tokens_held * (shape.layers * 2 * shape.token_len()) as f64;
    let mut results = Vec::with_capacity(plans.len());
    for (k, plan) in plans.iter().enumerate() {
        let r = k + 1;
        let ppl_passages: Vec<f64> = tallies.iter().map(|t| t[r].ppl()).collect();
        let delta: Vec<f64> = ppl_passages
            .iter()
            .zip(&exact_ppl)
            .map(|(q, e)| 100.0 * (q / e - 1.0))
            .collect();
        let kl: Vec<f64> = tallies.iter().map(|t| t[r].mean_kl()).collect();
        let bpv = plan.bits_per_value(head_dim)?;
        let held_bpv = held[r] as f64 * 8.0 / values_held;
        let all = pooled(r);
        results.push(PlanResult {
            plan: plan.label(),
            family: plan.family(),
            bits_per_value: bpv,
            held_bits_per_value: Some(held_bpv),
            compression_vs_bf16: 16.0 / held_bpv,
            held_bytes_per_token: held[r] as f64 / tokens_held,
            ppl: all.ppl(),
            ppl_passages,
            delta_ppl_pct: MeanCi::of(&delta),
            delta_ppl_pct_passages: delta,
            kl: MeanCi::of(&kl),
            top1_agreement: all.top1(),
        });
    }
    Ok(EvalReport {
        settings: *settings,
        passage_starts: starts,
        exact: ExactResult {
            ppl: pooled(0).ppl(),
            ppl_passages: exact_ppl,
            held_bytes_per_token: held[0] as f64 / tokens_held,
        },
        plans: results,
        seconds: progress.elapsed_s(),
        decode_step_seconds,
    })
}

/// Log-probabilities of each row of logits `[rows, 1, vocab]`, rows in parallel.
pub(crate) fn log_probs(logits: &Tensor, vocab: usize) -> Result<Vec<Vec<f64>>> {
    let flat = logits.flatten_all()?.to_vec1::<f32>()?;
    Ok(flat.par_chunks_exact(vocab).map(log_softmax).collect())
}

/// A text table of a report: one row per plan.
pub fn table(report: &EvalReport) -> String {
    let mut out = format!(
        "exact cache: ppl {:.4} over {} passages × {} tokens (prefix {}); attention {:?}, \
         {:.3} s per decode step\n",
        report.exact.ppl,
        report.settings.passages,
        report.settings.cont,
        report.settings.prefix,
        report.settings.attention,
        report.decode_step_seconds
    );
    out.push_str(&format!(
        "{:<34} {:>6} {:>6} {:>6} {:>9} {:>17} {:>10} {:>6}\n",
        "plan", "bpv", "held", "x bf16", "ppl", "Δppl % (95% CI)", "KL nats", "top-1"
    ));
    for r in &report.plans {
        let ci = r
            .delta_ppl_pct
            .ci95
            .map_or_else(|| "n/a".to_owned(), |h| format!("{h:.2}"));
        out.push_str(&format!(
            "{:<34} {:>6.3} {:>6.3} {:>6.2} {:>9.4} {:>+8.2} ± {:<6} {:>10.5} {:>6.3}\n",
            r.plan,
            r.bits_per_value,
            r.rate(),
            r.compression_vs_bf16,
            r.ppl,
            r.delta_ppl_pct.mean,
            ci,
            r.kl.mean,
            r.top1_agreement
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(plan: &str, kl: f64) -> PlanResult {
        PlanResult {
            plan: plan.to_owned(),
            family: None,
            bits_per_value: 4.0,
            held_bits_per_value: Some(4.5),
            compression_vs_bf16: 16.0 / 4.5,
            held_bytes_per_token: 100.0,
            ppl: 10.0,
            ppl_passages: vec![10.0, 10.0],
            delta_ppl_pct: MeanCi::of(&[0.1, 0.2]),
            delta_ppl_pct_passages: vec![0.1, 0.2],
            kl: MeanCi::of(&[kl, kl]),
            top1_agreement: 0.9,
        }
    }

    fn report(plans: Vec<PlanResult>) -> EvalReport {
        EvalReport {
            settings: EvalSettings::default(),
            passage_starts: vec![0, 100],
            exact: ExactResult {
                ppl: 10.0,
                ppl_passages: vec![9.0, 11.0],
                held_bytes_per_token: 200.0,
            },
            plans,
            seconds: 2.0,
            decode_step_seconds: 0.5,
        }
    }

    #[test]
    fn a_later_report_follows_an_earlier_one_of_the_same_evaluation() {
        let earlier = report(vec![result("a", 1.0), result("b", 2.0)]);
        let later = report(vec![result("b", 3.0), result("c", 4.0)]);
        let merged = later.clone().after(earlier.clone()).unwrap();
        let names: Vec<&str> = merged.plans.iter().map(|p| p.plan.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        // The plan in both keeps the later result.
        assert_eq!(merged.plans[1].kl.mean, 3.0);
        assert_eq!(merged.seconds, 4.0);
        assert_eq!(merged.exact, earlier.exact);

        let mut other = later.clone();
        other.settings.cont += 1;
        assert_eq!(other.after(earlier.clone()), Err("settings"));
        let mut other = later.clone();
        other.passage_starts[1] += 1;
        assert_eq!(other.after(earlier.clone()), Err("passages"));
        let mut other = later;
        other.exact.ppl_passages[0] *= 1.0 + 1e-6;
        assert_eq!(other.after(earlier), Err("exact-cache perplexities"));
    }
}
