//! The planner: a codec and rate for every layer's K and V, chosen from a quick
//! rate–distortion probe of that layer, either to meet a minimum SNR at the fewest bytes or to
//! spend a byte budget for the best quality.
//!
//! Candidates per layer and kind: the default codec
//! ([`kv_codec::codecs::voronoi::default_for_rate`]) at each rate of a grid, and the
//! uncompressed f16 cache (`null` in the plan). The probe encodes a stride sample of the
//! layer's tokens (at most `probe_tokens` per head) with each candidate and measures its
//! rel-MSE; f16 storage is measured the same way (it is exact for f16 data). Whether a layer
//! stays uncompressed is decided by those numbers alone:
//! * **target SNR**: the cheapest candidate whose probe SNR reaches the target; a layer that no
//!   codec of the grid serves stays f16.
//! * **budget**: minimise the sum over layers and kinds of rel-MSE (every layer weighs the
//!   same, whatever its energy) under a total of bits; each layer's candidates are reduced to
//!   their lower convex hull in (bits, rel-MSE) and the budget is spent greedily on the
//!   steepest hull step that still fits (marginal return per bit), the classic optimal
//!   allocation for convex operational rate–distortion curves.
//!
//! * **budget weighted by the model's sensitivity** ([`Sensitivity`], measured on the model by
//!   `kv-eval sensitivity`): the same allocation, but each layer's rel-MSE is weighed by the
//!   KL divergence it costs the model's next-token distribution per unit of rel-MSE (KL of
//!   that layer's K or V coded alone with the probe codec ÷ the probe codec's rel-MSE on
//!   the layer's data). For small errors the KL of a whole plan is about the sum of these
//!   terms, so the allocation minimises the predicted KL: bits go where the model notices
//!   them, which is not where the rel-MSE is (one layer's keys can matter far more than
//!   another's). Every layer stays coded (no f16 candidate), and the plan carries the
//!   protection the sensitivity was measured under; keys are probed centred when it
//!   centres them.
//!
//! The plan ([`CachePlan`], kv-codec's type) is the JSON the cache consumes, `{"layers":[{"k":…,"v":…},…]}` with
//! [`CodecSpec`] strings or `null`; the prediction ([`Prediction`]) is written beside it, and
//! [`verify`] re-measures it with a real encode of every token.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use half::f16;
use kv_codec::CodecSpec;
use kv_codec::cache::{CachePlan, LayerPlan, Protection};
use kv_codec::codecs::voronoi::default_for_rate;
use serde::{Deserialize, Serialize};

use crate::audit::Kind;
use crate::error::{Error, Result};
use crate::metrics::{ErrorEnergy, snr_db};
use crate::rd::{progress, round_trip};
use crate::source::{KvSource, Segment};

/// Rates (bits per value) of the probe grid.
pub const DEFAULT_PROBE_RATES: [f64; 13] = [
    2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 8.0, 10.0,
];

/// Tokens per head the probe encodes by default.
pub const DEFAULT_PROBE_TOKENS: usize = 64;

/// Bits of an uncompressed (f16) value.
const F16_BITS: u32 = 16;

/// What the plan aims for.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Every layer's K and V at least this SNR (dB), at the fewest bytes.
    TargetSnrDb(f64),
    /// At most this many bits per value over the whole cache, at the least summed rel-MSE
    /// (each weighed by its [`Probe::weight`]).
    BudgetBpv(f64),
}

/// One candidate of one layer and kind, as probed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Candidate {
    /// The codec, or `None` for f16.
    pub codec: Option<CodecSpec>,
    /// Bits per vector.
    pub bits_per_vector: u32,
    /// rel-MSE on the probe tokens.
    pub rel_mse: f64,
}

/// The probe of one layer's K or V.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Probe {
    /// Layer key.
    pub layer: String,
    /// K or V.
    pub kind: Kind,
    /// Vectors of the full tensor (what the plan will store).
    pub vectors: usize,
    /// Vectors the probe encoded.
    pub probe_vectors: usize,
    /// Candidates by increasing bits (f16 last, unless the plan keeps every layer coded).
    pub candidates: Vec<Candidate>,
    /// What one unit of rel-MSE of this tensor costs the budget objective: 1, or under a
    /// [`Sensitivity`] the KL (nats per token) per unit of rel-MSE.
    pub weight: f64,
}

/// How much a model's next-token distribution moves when one layer's K or V is coded: what
/// `kv-eval sensitivity` measures and [`plan`] weighs a budget by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sensitivity {
    /// The codec each layer's K or V was coded with, alone (every other tensor exact).
    pub probe: CodecSpec,
    /// The protection of the probed layer, which the plan carries to every layer.
    pub protection: Protection,
    /// Per layer, in order.
    pub layers: Vec<LayerSensitivity>,
}

/// The mean KL divergence (nats per token, exact ‖ probed) of one layer's keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSensitivity {
    /// With only this layer's keys coded.
    pub k: f64,
    /// With only this layer's values coded.
    pub v: f64,
}

impl Sensitivity {
    /// Reads the `sensitivity` object of a `kv-eval sensitivity --json` report.
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable file; [`Error::BadSensitivity`] for one that is not
    /// such a report or holds a KL that is negative or not finite.
    pub fn load(path: &Path) -> Result<Self> {
        #[derive(Deserialize)]
        struct Report {
            sensitivity: Sensitivity,
        }
        let bad = |source| Error::BadSensitivity {
            path: path.to_owned(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            action: "cannot read",
            path: path.to_owned(),
            source,
        })?;
        let s = serde_json::from_str::<Report>(&text)
            .map_err(bad)?
            .sensitivity;
        let valid = |kl: f64| kl.is_finite() && kl >= 0.0;
        if !s.layers.iter().all(|l| valid(l.k) && valid(l.v)) {
            return Err(bad(serde::de::Error::custom(
                "every KL must be finite and non-negative",
            )));
        }
        Ok(s)
    }
}

/// The predicted (or measured) outcome of one layer's K or V.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// The codec, or `None` for f16.
    pub codec: Option<CodecSpec>,
    /// Bits per value stored.
    pub bits_per_value: f64,
    /// Bytes of the whole tensor: ⌈vectors · bits_per_vector / 8⌉.
    pub bytes: usize,
    /// rel-MSE.
    pub rel_mse: f64,
    /// SNR (dB); `null` in JSON for an exact reconstruction.
    pub snr_db: f64,
}

/// The outcome of one layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerOutcome {
    /// Layer key.
    pub layer: String,
    /// Keys.
    pub k: Outcome,
    /// Values.
    pub v: Outcome,
}

/// A plan's predicted (from the probe) or measured (from a real encode) outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// What the plan was made for.
    pub objective: Objective,
    /// Tokens per head of the probe.
    pub probe_tokens: usize,
    /// Values per vector.
    pub head_dim: usize,
    /// Per layer.
    pub layers: Vec<LayerOutcome>,
    /// Bytes of the whole cache.
    pub total_bytes: usize,
    /// Bytes the same cache takes in f16.
    pub f16_bytes: usize,
    /// 8 · total_bytes / values.
    pub bits_per_value: f64,
    /// The worst layer's SNR (dB), K and V together.
    pub min_snr_db: f64,
    /// Layers (K or V counted apart) left uncompressed.
    pub uncompressed: usize,
    /// Under a [`Sensitivity`], the KL (nats per token) the plan's errors are predicted to
    /// cost: the sum over layers and kinds of weight times rel-MSE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_kl: Option<f64>,
}

/// The planner's result: the plan, what it predicts, and the probes it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// The plan.
    pub plan: CachePlan,
    /// Its prediction.
    pub prediction: Prediction,
    /// The probes, per layer, K then V.
    pub probes: Vec<Probe>,
    /// Seconds the probes took.
    pub probe_seconds: f64,
}

/// A layer's K and V segments, paired by layer key in the order of the K tensors (then any
/// layer that has only V).
fn layers(source: &KvSource) -> Vec<(String, Option<&Segment>, Option<&Segment>)> {
    let mut out: Vec<(String, Option<&Segment>, Option<&Segment>)> = Vec::new();
    for s in &source.k {
        out.push((s.layer_key().to_owned(), Some(s), None));
    }
    for s in &source.v {
        match out.iter_mut().find(|(key, _, _)| key == s.layer_key()) {
            Some(entry) => entry.2 = Some(s),
            None => out.push((s.layer_key().to_owned(), None, Some(s))),
        }
    }
    out
}

/// Every `stride`-th token of every head of a segment (`values`, `heads` heads of `t`
/// tokens back to back), at most `probe_tokens` per head.
fn probe_values(values: &[f32], heads: usize, d: usize, probe_tokens: usize) -> Vec<f32> {
    let t = values.len() / (heads * d);
    let stride = t.div_ceil(probe_tokens.max(1)).max(1);
    let mut out = Vec::new();
    for h in 0..heads {
        for tok in (0..t).step_by(stride) {
            let i = (h * t + tok) * d;
            out.extend_from_slice(&values[i..i + d]);
        }
    }
    out
}

/// A segment's keys as a protected cache codes them: each head's minus the mean of its keys
/// at positions `sink_tokens .. sink_tokens + key_centre_tokens` (those that exist).
fn centred_keys(values: &[f32], heads: usize, d: usize, protection: &Protection) -> Vec<f32> {
    let t = values.len() / (heads * d);
    let from = usize::from(protection.sink_tokens).min(t);
    let to = (from + usize::from(protection.key_centre_tokens)).min(t);
    let mut out = values.to_vec();
    if to == from {
        return out;
    }
    for head in out.chunks_exact_mut(t * d) {
        let mut mean = vec![0f64; d];
        for tok in head[from * d..to * d].chunks_exact(d) {
            for (m, &x) in mean.iter_mut().zip(tok) {
                *m += f64::from(x);
            }
        }
        let n = (to - from) as f64;
        for tok in head.chunks_exact_mut(d) {
            for (x, m) in tok.iter_mut().zip(&mean) {
                *x = (f64::from(*x) - m / n) as f32;
            }
        }
    }
    out
}

/// Squared error of storing `x` as f16 (round to nearest even, as every engine does).
fn f16_error(x: &[f32]) -> ErrorEnergy {
    let y: Vec<f32> = x.iter().map(|&a| f16::from_f32(a).to_f32()).collect();
    ErrorEnergy::of(x, &y)
}

/// The distinct codecs of the grid at `head_dim`, by increasing bits (rates no codec
/// reaches are skipped).
///
/// # Errors
/// [`Error::Codec`] for a head_dim no codec supports.
pub fn candidate_codecs(rates: &[f64], head_dim: usize) -> Result<Vec<CodecSpec>> {
    let mut out: Vec<CodecSpec> = Vec::new();
    for &r in rates {
        match default_for_rate(r, head_dim) {
            Ok(spec) if !out.contains(&spec) => out.push(spec),
            Ok(_) | Err(kv_codec::Error::RateUnreachable { .. }) => {}
            Err(source) => {
                return Err(Error::Codec {
                    spec: format!("bpv {r}"),
                    source,
                });
            }
        }
    }
    Ok(out)
}

/// Probes one segment with every codec, and f16 unless `model` is given: then the segment
/// is probed as `model`'s protection codes it (keys centred), without f16, and weighed by
/// its KL there (`kl`) per unit of the probe codec's rel-MSE.
fn probe(
    source: &KvSource,
    layer: &str,
    kind: Kind,
    seg: &Segment,
    codecs: &[CodecSpec],
    probe_tokens: usize,
    model: Option<(&Sensitivity, f64)>,
) -> Result<Probe> {
    let d = source.head_dim;
    let rel_mse = |spec: CodecSpec, x: &[f32]| -> Result<(u32, f64)> {
        let rt = round_trip(spec, d, x)?;
        Ok((
            rt.bits_per_vector,
            ErrorEnergy::of(x, &rt.decoded).rel_mse(),
        ))
    };
    let all = source.segment_values(seg);
    let x = match model {
        Some((s, _)) if kind == Kind::K && s.protection.key_centre_tokens > 0 => probe_values(
            &centred_keys(all, seg.heads, d, &s.protection),
            seg.heads,
            d,
            probe_tokens,
        ),
        _ => probe_values(all, seg.heads, d, probe_tokens),
    };
    let mut candidates = Vec::with_capacity(codecs.len() + 1);
    for &spec in codecs {
        let (bits_per_vector, rel_mse) = rel_mse(spec, &x)?;
        candidates.push(Candidate {
            codec: Some(spec),
            bits_per_vector,
            rel_mse,
        });
    }
    let weight = match model {
        Some((s, kl)) => kl / rel_mse(s.probe, &x)?.1.max(f64::MIN_POSITIVE),
        None => {
            candidates.push(Candidate {
                codec: None,
                bits_per_vector: F16_BITS * d as u32,
                rel_mse: f16_error(&x).rel_mse(),
            });
            1.0
        }
    };
    candidates.sort_by_key(|c| c.bits_per_vector);
    Ok(Probe {
        layer: layer.to_owned(),
        kind,
        vectors: seg.vectors.len(),
        probe_vectors: x.len() / d,
        candidates,
        weight,
    })
}

/// Indices of the lower convex hull of `(bits, rel_mse)` points sorted by bits, starting at
/// the cheapest: the only points a marginal-return allocation should stop at.
fn lower_hull(c: &[Candidate]) -> Vec<usize> {
    let mut hull: Vec<usize> = Vec::new();
    for i in 0..c.len() {
        // A point no better than the hull's last is dominated.
        if hull.last().is_some_and(|&j| c[i].rel_mse >= c[j].rel_mse) {
            continue;
        }
        while hull.len() >= 2 {
            let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            let slope = |p: usize, q: usize| {
                (c[q].rel_mse - c[p].rel_mse)
                    / (f64::from(c[q].bits_per_vector) - f64::from(c[p].bits_per_vector))
            };
            // b lies on or above the chord from a to i: drop it.
            if slope(a, b) >= slope(a, i) {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(i);
    }
    hull
}

/// Chooses, for every probe, an index into its candidates.
fn choose(probes: &[Probe], objective: Objective, values: usize) -> Result<Vec<usize>> {
    match objective {
        Objective::TargetSnrDb(target) => Ok(probes
            .iter()
            .map(|p| {
                p.candidates
                    .iter()
                    .position(|c| snr_db(c.rel_mse) >= target)
                    // Nothing reaches the target: keep the best there is (f16 for f16 data).
                    .unwrap_or_else(|| {
                        p.candidates
                            .iter()
                            .enumerate()
                            .min_by(|a, b| a.1.rel_mse.total_cmp(&b.1.rel_mse))
                            .map_or(0, |(i, _)| i)
                    })
            })
            .collect()),
        Objective::BudgetBpv(budget) => {
            let hulls: Vec<Vec<usize>> = probes.iter().map(|p| lower_hull(&p.candidates)).collect();
            let bits =
                |p: &Probe, i: usize| p.vectors as f64 * f64::from(p.candidates[i].bits_per_vector);
            let mut at: Vec<usize> = vec![0; probes.len()];
            let mut spent: f64 = probes.iter().zip(&hulls).map(|(p, h)| bits(p, h[0])).sum();
            let limit = budget * values as f64;
            if spent > limit {
                return Err(Error::BudgetTooSmall {
                    budget_bpv: budget,
                    cheapest_bpv: spent / values as f64,
                });
            }
            loop {
                // The affordable next hull step with the largest error drop per bit.
                let mut best: Option<(f64, usize)> = None;
                for (j, (p, h)) in probes.iter().zip(&hulls).enumerate() {
                    let Some(&next) = h.get(at[j] + 1) else {
                        continue;
                    };
                    let cur = h[at[j]];
                    let extra = bits(p, next) - bits(p, cur);
                    if spent + extra > limit {
                        continue;
                    }
                    let gain =
                        p.weight * (p.candidates[cur].rel_mse - p.candidates[next].rel_mse) / extra;
                    if best.is_none_or(|(g, _)| gain > g) {
                        best = Some((gain, j));
                    }
                }
                let Some((_, j)) = best else { break };
                let (cur, next) = (hulls[j][at[j]], hulls[j][at[j] + 1]);
                spent += bits(&probes[j], next) - bits(&probes[j], cur);
                at[j] += 1;
            }
            Ok(at.iter().zip(&hulls).map(|(&a, h)| h[a]).collect())
        }
    }
}

/// An outcome from bits, vectors and error sums.
fn outcome(
    codec: Option<CodecSpec>,
    bits_per_vector: u32,
    vectors: usize,
    d: usize,
    rel_mse: f64,
) -> Outcome {
    Outcome {
        codec,
        bits_per_value: f64::from(bits_per_vector) / d as f64,
        bytes: (vectors * bits_per_vector as usize).div_ceil(8),
        rel_mse,
        snr_db: snr_db(rel_mse),
    }
}

/// Totals over per-layer outcomes.
fn summarise(
    objective: Objective,
    probe_tokens: usize,
    d: usize,
    layers: Vec<LayerOutcome>,
    values: usize,
) -> Prediction {
    let all = || layers.iter().flat_map(|l| [&l.k, &l.v]);
    let total_bytes: usize = all().map(|o| o.bytes).sum();
    Prediction {
        objective,
        probe_tokens,
        head_dim: d,
        total_bytes,
        f16_bytes: 2 * values,
        bits_per_value: 8.0 * total_bytes as f64 / values as f64,
        min_snr_db: all().map(|o| o.snr_db).fold(f64::INFINITY, f64::min),
        uncompressed: all().filter(|o| o.codec.is_none()).count(),
        predicted_kl: None,
        layers,
    }
}

/// Plans the cache of `source` with candidate `codecs` (say [`candidate_codecs`] of a grid
/// of rates); under a `sensitivity` (measured on the model whose cache
/// `source` is), a budget is spent to the least predicted KL, every layer is coded, and
/// every layer gets the sensitivity's protection (see the module documentation).
///
/// # Errors
/// [`Error::Codec`] if the head_dim has no codec; [`Error::BudgetTooSmall`];
/// [`Error::SensitivityMismatch`] for a sensitivity of another number of layers.
pub fn plan(
    source: &KvSource,
    objective: Objective,
    codecs: &[CodecSpec],
    probe_tokens: usize,
    sensitivity: Option<&Sensitivity>,
) -> Result<Planned> {
    let d = source.head_dim;
    let t0 = Instant::now();
    let pairs = layers(source);
    if let Some(s) = sensitivity
        && s.layers.len() != pairs.len()
    {
        return Err(Error::SensitivityMismatch {
            sensitivity: s.layers.len(),
            source_layers: pairs.len(),
        });
    }
    let mut probes = Vec::new();
    let bar = progress(2 * pairs.len()).with_prefix("probe");
    for (l, (key, k, v)) in pairs.iter().enumerate() {
        for (kind, seg) in [(Kind::K, k), (Kind::V, v)] {
            if let Some(seg) = seg {
                bar.set_message(format!("{} {key}", kind.name()));
                let model = sensitivity.map(|s| {
                    let kl = match kind {
                        Kind::K => s.layers[l].k,
                        Kind::V => s.layers[l].v,
                    };
                    (s, kl)
                });
                probes.push(probe(source, key, kind, seg, codecs, probe_tokens, model)?);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let probe_seconds = t0.elapsed().as_secs_f64();
    let values = source.values.len();
    let chosen = choose(&probes, objective, values)?;

    let mut plan = CachePlan { layers: Vec::new() };
    let mut outcomes = Vec::new();
    let empty = |c| outcome(c, 0, 0, d, 0.0);
    for (key, _, _) in &pairs {
        let mut entry = LayerPlan {
            k: None,
            v: None,
            protection: sensitivity.map_or(Protection::NONE, |s| s.protection),
        };
        let mut lo = LayerOutcome {
            layer: key.clone(),
            k: empty(None),
            v: empty(None),
        };
        for (p, &i) in probes.iter().zip(&chosen).filter(|(p, _)| &p.layer == key) {
            let c = p.candidates[i];
            let o = outcome(c.codec, c.bits_per_vector, p.vectors, d, c.rel_mse);
            match p.kind {
                Kind::K => (entry.k, lo.k) = (c.codec, o),
                Kind::V => (entry.v, lo.v) = (c.codec, o),
            }
        }
        plan.layers.push(entry);
        outcomes.push(lo);
    }
    let mut prediction = summarise(objective, probe_tokens, d, outcomes, values);
    prediction.predicted_kl = sensitivity.map(|_| {
        probes
            .iter()
            .zip(&chosen)
            .map(|(p, &i)| p.weight * p.candidates[i].rel_mse)
            .sum()
    });
    Ok(Planned {
        plan,
        prediction,
        probes,
        probe_seconds,
    })
}

/// Encodes every token of every layer with the plan's codecs and measures what it predicted:
/// real bytes and rel-MSE.
///
/// # Errors
/// [`Error::PlanMismatch`] if the plan's layer count is not the source's; [`Error::Codec`].
pub fn verify(
    source: &KvSource,
    plan: &CachePlan,
    objective: Objective,
    probe_tokens: usize,
) -> Result<Prediction> {
    let d = source.head_dim;
    let pairs = layers(source);
    if pairs.len() != plan.layers.len() {
        return Err(Error::PlanMismatch {
            plan: plan.layers.len(),
            source_layers: pairs.len(),
        });
    }
    let measure = |codec: Option<CodecSpec>, seg: Option<&Segment>| -> Result<Outcome> {
        let Some(seg) = seg else {
            return Ok(outcome(codec, 0, 0, d, 0.0));
        };
        let x = source.segment_values(seg);
        let n = seg.vectors.len();
        Ok(match codec {
            Some(spec) => {
                let rt = round_trip(spec, d, x)?;
                let mut o = outcome(
                    codec,
                    rt.bits_per_vector,
                    n,
                    d,
                    ErrorEnergy::of(x, &rt.decoded).rel_mse(),
                );
                // The real byte count, not the formula.
                o.bytes = rt.bytes.len();
                o
            }
            None => outcome(None, F16_BITS * d as u32, n, d, f16_error(x).rel_mse()),
        })
    };
    let mut layers_out = Vec::new();
    for ((key, k, v), lp) in pairs.iter().zip(&plan.layers) {
        layers_out.push(LayerOutcome {
            layer: key.clone(),
            k: measure(lp.k, *k)?,
            v: measure(lp.v, *v)?,
        });
    }
    Ok(summarise(
        objective,
        probe_tokens,
        d,
        layers_out,
        source.values.len(),
    ))
}

/// The plan as a text table: per layer, each kind's codec, bits per value and predicted SNR
/// (and the measured SNR when `measured` is given), then the totals.
pub fn table(predicted: &Prediction, measured: Option<&Prediction>) -> String {
    let codec = |o: &Outcome| o.codec.map_or_else(|| "f16".to_owned(), |c| c.to_string());
    let width = predicted
        .layers
        .iter()
        .flat_map(|l| [codec(&l.k).len(), codec(&l.v).len()])
        .chain([5])
        .max()
        .unwrap_or(5);
    let mut out = String::new();
    let snr_head = if measured.is_some() {
        "  SNR dB (meas.)"
    } else {
        "  SNR dB"
    };
    let _ = writeln!(
        out,
        "layer  {:<width$}  bits/v{snr_head}  {:<width$}  bits/v{snr_head}",
        "K", "V"
    );
    let cell = |o: &Outcome, m: Option<&Outcome>| {
        let snr = match m {
            Some(m) => format!("{:>6.2} ({:>6.2})", o.snr_db, m.snr_db),
            None => format!("{:>6.2}", o.snr_db),
        };
        format!(
            "{:<width$}  {:>6.3}  {snr:>w$}",
            codec(o),
            o.bits_per_value,
            w = snr_head.len() - 2
        )
    };
    for (i, l) in predicted.layers.iter().enumerate() {
        let m = measured.and_then(|m| m.layers.get(i));
        let _ = writeln!(
            out,
            "{:<5}  {}  {}",
            l.layer,
            cell(&l.k, m.map(|m| &m.k)),
            cell(&l.v, m.map(|m| &m.v))
        );
    }
    let _ = writeln!(
        out,
        "\npredicted: {} bytes ({:.3} bits/value, {:.2}x smaller than f16), worst layer {:.2} dB, {} of {} K/V tensors uncompressed",
        predicted.total_bytes,
        predicted.bits_per_value,
        predicted.f16_bytes as f64 / predicted.total_bytes as f64,
        predicted.min_snr_db,
        predicted.uncompressed,
        2 * predicted.layers.len()
    );
    if let Some(kl) = predicted.predicted_kl {
        let _ = writeln!(
            out,
            "predicted KL of the model's next-token distribution: {kl:.5} nats per token"
        );
    }
    if let Some(m) = measured {
        let _ = writeln!(
            out,
            "measured:  {} bytes ({:.3} bits/value), worst layer {:.2} dB (every token encoded)",
            m.total_bytes, m.bits_per_value, m.min_snr_db
        );
    }
    out
}
