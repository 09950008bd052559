//! How much the model notices each layer's coding error: the input of kv-audit's
//! sensitivity-weighted planner (`kvc plan --budget-bpv R --sensitivity FILE`).
//!
//! For every layer and kind (K or V), one plan codes only that tensor with a probe codec
//! under a protection, every other tensor exact; all 2 × layers plans run as rows of one
//! [`evaluate`] (teacher-forced continuations decoded token by token through each cache),
//! and each tensor's sensitivity is the mean KL(exact ‖ probed) per scored token. For
//! errors small enough that their effects add up, the KL of a whole plan is about the sum
//! over tensors of sensitivity × (the tensor's rel-MSE under the plan ÷ its rel-MSE under
//! the probe), which is what the planner minimises for a byte budget.
//!
//! On SmolLM2-135M the tensors differ by well over an order of magnitude, and keys mostly
//! matter more than values (`bench/results/eval-smollm2-sensitivity.json`), which a uniform
//! rate, or one rate for K and one for V, cannot follow.
//!
//! The calibration passages should not be the ones a plan is then judged on: by default
//! they start 2000 tokens into the text ([`DEFAULT_SKIP`]), so they are not the passages of
//! an `eval` or `iso` run with its default settings (which start at token 0). Both spread
//! evenly to the end of the text, so their last passages overlap (in the committed run, one
//! calibration passage of 8 shares tokens with one of the iso table's 32); the report lists
//! the passages' first tokens.

use kv_audit::plan::{LayerSensitivity, Sensitivity};
use kv_codec::CodecSpec;
use kv_codec::cache::{LayerPlan, Protection};
use serde::Serialize;

use crate::error::Result;
use crate::eval::{EvalSettings, evaluate};
use crate::model::Llama;
use crate::plan::{CachePlan, LayerChoice};
use crate::stats::MeanCi;
use crate::text::Corpus;

/// The probe codec by default: the default codec at about 3.5 bits per value at d = 64,
/// coarse enough that one tensor's KL stands clear of zero, fine enough to stay in the
/// regime where errors add up.
pub const DEFAULT_PROBE: &str = "voronoi-e8-q9-s2";

/// Tokens of the text skipped before the first calibration passage by default.
pub const DEFAULT_SKIP: usize = 2000;

/// The KL of one layer's K and V, with its interval over passages.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LayerKl {
    /// Only the keys coded.
    pub k: MeanCi,
    /// Only the values coded.
    pub v: MeanCi,
}

/// What `kv-eval sensitivity` reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SensitivityReport {
    /// The evaluation's shape.
    pub settings: EvalSettings,
    /// First token of each calibration passage.
    pub passage_starts: Vec<usize>,
    /// Perplexity of the exact cache over the scored tokens.
    pub exact_ppl: f64,
    /// What the planner reads: the probe, the protection and each tensor's mean KL.
    pub sensitivity: Sensitivity,
    /// Each tensor's KL with its 95% interval over passages.
    pub kl: Vec<LayerKl>,
    /// Seconds the evaluation took.
    pub seconds: f64,
}

/// The plan that codes only the keys (`keys`) or only the values of layer `layer` with
/// `probe`, every other tensor exact (f16).
fn single(layers: usize, layer: usize, keys: bool, probe: CodecSpec, p: Protection) -> CachePlan {
    let mut plan = CachePlan {
        layers: vec![LayerChoice::RAW; layers],
        name: None,
    };
    let (k, v) = if keys {
        (Some(probe), None)
    } else {
        (None, Some(probe))
    };
    plan.layers[layer] = LayerChoice::PerVector(LayerPlan {
        k,
        v,
        protection: p,
    });
    plan
}

/// Measures every layer's sensitivity (see the module documentation).
///
/// # Errors
/// Those of [`evaluate`].
pub fn sensitivity(
    model: &Llama,
    corpus: &Corpus,
    probe: CodecSpec,
    protection: Protection,
    settings: &EvalSettings,
    quiet: bool,
) -> Result<SensitivityReport> {
    let layers = model.config().layers;
    let plans: Vec<CachePlan> = (0..layers)
        .flat_map(|l| [true, false].map(|keys| single(layers, l, keys, probe, protection)))
        .collect();
    let report = evaluate(model, corpus, &plans, settings, quiet)?;
    let kl: Vec<LayerKl> = report
        .plans
        .chunks_exact(2)
        .map(|kv| LayerKl {
            k: kv[0].kl,
            v: kv[1].kl,
        })
        .collect();
    Ok(SensitivityReport {
        settings: *settings,
        passage_starts: report.passage_starts,
        exact_ppl: report.exact.ppl,
        sensitivity: Sensitivity {
            probe,
            protection,
            layers: kl
                .iter()
                .map(|l| LayerSensitivity {
                    k: l.k.mean,
                    v: l.v.mean,
                })
                .collect(),
        },
        kl,
        seconds: report.seconds,
    })
}

/// A text table of a report: each layer's KL for K and V, and their sums.
pub fn table(report: &SensitivityReport) -> String {
    let s = &report.sensitivity;
    let mut out = format!(
        "KL(exact ‖ one tensor coded with {}) in nats per token, {} passages × {} tokens \
         (exact ppl {:.4})\nlayer          K          V\n",
        s.probe, report.settings.passages, report.settings.cont, report.exact_ppl
    );
    for (l, x) in s.layers.iter().enumerate() {
        out.push_str(&format!("{l:>5}  {:>9.3e}  {:>9.3e}\n", x.k, x.v));
    }
    let (k, v): (f64, f64) = s
        .layers
        .iter()
        .fold((0.0, 0.0), |(k, v), x| (k + x.k, v + x.v));
    out.push_str(&format!("  sum  {k:>9.3e}  {v:>9.3e}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_plans_code_one_tensor_of_one_layer() {
        let probe: CodecSpec = DEFAULT_PROBE.parse().unwrap();
        let p = Protection {
            sink_tokens: 4,
            recent_tokens: 16,
            key_centre_tokens: 64,
            ..Protection::NONE
        };
        let plan = single(3, 1, false, probe, p);
        assert_eq!(plan.layers[0], LayerChoice::RAW);
        assert_eq!(plan.layers[2], LayerChoice::RAW);
        assert_eq!(
            plan.layers[1],
            LayerChoice::PerVector(LayerPlan {
                k: None,
                v: Some(probe),
                protection: p
            })
        );
        assert_eq!(plan.label(), "v=voronoi-e8-q9-s2,protect=4:16:64,raw=0:2");
        assert_eq!(plan.family(), None);
    }
}
