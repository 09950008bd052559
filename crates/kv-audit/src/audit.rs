//! The audit: statistics of every KV head (per layer, K and V apart) that say what a codec
//! will meet, each next to its value for iid Gaussian data of the same size, so that a
//! number can be read as "Gaussian" or "not" rather than on its own.
//!
//! Per head (all tokens of one head of one layer's K or V):
//! * **norms**: mean ‖x‖, coefficient of variation of ‖x‖, and the share of the energy in
//!   the mean vector (‖mean x‖² / mean ‖x‖²);
//! * **anisotropy**: largest over smallest channel variance, before and after the codecs'
//!   rotation (the random-sign Hadamard transform of `hadamard` with
//!   [`kv_codec::DEFAULT_SEED`]);
//! * **kurtosis**: per-channel excess kurtosis (largest and mean before rotation, mean after);
//! * **outliers**: the fraction of values beyond [`OUTLIER_SIGMAS`] standard deviations (raw:
//!   of the head's pooled RMS; rotated: of the per-vector normalised coordinates);
//! * **effective rank**: the participation ratio (Σλ)²/Σλ² of the channel covariance's
//!   eigenvalues, computed as (tr C)² / ‖C‖²_F;
//! * **distance to the Gaussian after rotation**: the Wasserstein-1 distance between the
//!   rotated, per-vector normalised coordinates z = √d·(Hx)ᵢ/‖x‖ (what the codec quantises)
//!   and N(0, 1), with its z-score against the same statistic of [`NULL_REPLICATES`] iid
//!   Gaussian samples of the same shape. A head reads as Gaussian when that z-score is at most
//!   [`GAUSSIAN_Z`].
//!
//! The published audit's "W2/σ" is a tail-quantile ratio that scores about 0.1 on perfect
//! Gaussian data; a distance with its noise level attached does not have that problem.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hadamard::Fwht;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::gaussian::gaussian_vectors;
use crate::source::{KvSource, Segment, SourceInfo};
use crate::stats::{Moments, NormalGrid, normal_cdf, wasserstein1_normal};

/// Outlier threshold in standard deviations.
pub const OUTLIER_SIGMAS: f64 = 4.0;

/// Gaussian samples per shape that give the reference values and the noise level.
pub const NULL_REPLICATES: u64 = 32;

/// A head reads as Gaussian after rotation when its W₁ z-score is at most this. Four
/// standard deviations keep the chance that one of a few hundred Gaussian heads is flagged
/// well below one percent.
pub const GAUSSIAN_Z: f64 = 4.0;

/// Seed of the first Gaussian reference sample (the others follow it).
const NULL_SEED: u64 = 0x4155_4449_5400_0000;

/// K or V.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    /// Keys.
    K,
    /// Values.
    V,
}

impl Kind {
    /// `"K"` or `"V"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::K => "K",
            Self::V => "V",
        }
    }
}

/// The statistics of one head (or of a Gaussian reference sample).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct HeadStats {
    /// Mean ‖x‖.
    pub mean_norm: f64,
    /// Standard deviation of ‖x‖ over its mean.
    pub norm_cv: f64,
    /// ‖mean x‖² / mean ‖x‖²: the share of the energy a constant offset carries.
    pub mean_energy_share: f64,
    /// Largest over smallest channel variance, before rotation.
    pub anisotropy: f64,
    /// Largest over smallest channel variance, after rotation.
    pub anisotropy_rotated: f64,
    /// Largest per-channel excess kurtosis, before rotation.
    pub kurtosis_max: f64,
    /// Mean per-channel excess kurtosis, before rotation.
    pub kurtosis_mean: f64,
    /// Mean per-channel excess kurtosis, after rotation.
    pub kurtosis_rotated_mean: f64,
    /// Fraction of values beyond [`OUTLIER_SIGMAS`] × the head's RMS, before rotation.
    pub outlier_fraction: f64,
    /// Fraction of normalised rotated coordinates beyond [`OUTLIER_SIGMAS`].
    pub outlier_fraction_rotated: f64,
    /// Participation ratio (Σλ)²/Σλ² of the channel covariance.
    pub effective_rank: f64,
    /// Wasserstein-1 distance of the normalised rotated coordinates to N(0, 1).
    pub w1_rotated: f64,
}

impl HeadStats {
    /// The field-wise mean of several samples' statistics.
    ///
    /// # Panics
    /// If `all` is empty.
    fn mean_of(all: &[HeadStats]) -> HeadStats {
        assert!(!all.is_empty(), "a mean needs samples");
        let mean = |f: fn(&HeadStats) -> f64| all.iter().map(f).sum::<f64>() / all.len() as f64;
        HeadStats {
            mean_norm: mean(|s| s.mean_norm),
            norm_cv: mean(|s| s.norm_cv),
            mean_energy_share: mean(|s| s.mean_energy_share),
            anisotropy: mean(|s| s.anisotropy),
            anisotropy_rotated: mean(|s| s.anisotropy_rotated),
            kurtosis_max: mean(|s| s.kurtosis_max),
            kurtosis_mean: mean(|s| s.kurtosis_mean),
            kurtosis_rotated_mean: mean(|s| s.kurtosis_rotated_mean),
            outlier_fraction: mean(|s| s.outlier_fraction),
            outlier_fraction_rotated: mean(|s| s.outlier_fraction_rotated),
            effective_rank: mean(|s| s.effective_rank),
            w1_rotated: mean(|s| s.w1_rotated),
        }
    }
}

/// What iid N(0, 1) data of one shape gives: the mean of each statistic over
/// [`NULL_REPLICATES`] samples, and the spread of W₁ (its sampling noise).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GaussianReference {
    /// Tokens per sample.
    pub tokens: usize,
    /// Samples drawn.
    pub replicates: u64,
    /// Mean of each statistic.
    pub mean: HeadStats,
    /// Standard deviation of W₁ over the samples.
    pub w1_sd: f64,
}

/// One audited head.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeadAudit {
    /// Layer key (`07`), shared by the layer's K and V.
    pub layer: String,
    /// The tensor (`k.07`).
    pub tensor: String,
    /// K or V.
    pub kind: Kind,
    /// Head index within the tensor.
    pub head: usize,
    /// Tokens of the head.
    pub tokens: usize,
    /// The statistics.
    pub stats: HeadStats,
    /// (W₁ − Gaussian mean) / Gaussian standard deviation, for the same shape.
    pub w1_z: f64,
    /// Whether `w1_z` ≤ [`GAUSSIAN_Z`]: after rotation, the head is indistinguishable from
    /// Gaussian at this sample size.
    pub gaussian: bool,
}

/// The audit of a whole source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditReport {
    /// The source.
    pub source: SourceInfo,
    /// The rotation's sign seed.
    pub rotation_seed: u64,
    /// [`OUTLIER_SIGMAS`].
    pub outlier_sigmas: f64,
    /// [`GAUSSIAN_Z`].
    pub gaussian_z: f64,
    /// The fraction of Gaussian values beyond [`OUTLIER_SIGMAS`] in theory, 2·(1 − Φ(4)).
    pub gaussian_outlier_fraction: f64,
    /// Gaussian references, one per token count present.
    pub references: Vec<GaussianReference>,
    /// Every head, K tensors first, in source order, heads in order.
    pub heads: Vec<HeadAudit>,
}

impl AuditReport {
    /// The reference of a token count.
    ///
    /// # Panics
    /// If the audit saw no head of that many tokens.
    pub fn reference(&self, tokens: usize) -> &GaussianReference {
        self.references
            .iter()
            .find(|r| r.tokens == tokens)
            .expect("every audited token count has a reference")
    }

    /// Layer keys in source order (K tensors first, then V tensors of layers without K).
    pub fn layers(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for h in &self.heads {
            if !out.contains(&h.layer.as_str()) {
                out.push(&h.layer);
            }
        }
        out
    }

    /// The heads of one layer and kind.
    pub fn heads_of<'a>(
        &'a self,
        layer: &'a str,
        kind: Kind,
    ) -> impl Iterator<Item = &'a HeadAudit> {
        self.heads
            .iter()
            .filter(move |h| h.layer == layer && h.kind == kind)
    }
}

/// Statistics of `tokens` vectors of `d` values, back to back.
fn head_stats(x: &[f32], d: usize, fwht: &Fwht, grid: &NormalGrid) -> HeadStats {
    let n = x.len() / d;
    let mut rotated = vec![0f32; x.len()];
    fwht.forward(x, &mut rotated);

    let mut raw = vec![Moments::default(); d];
    let mut rot = vec![Moments::default(); d];
    let mut norms = Moments::default();
    let mut energy = 0.0;
    let mut sum = vec![0f64; d];
    // Uncentred second moments; centred below with the mean.
    let mut second = vec![0f64; d * d];
    let mut z = Vec::with_capacity(x.len());
    for (v, y) in x.chunks_exact(d).zip(rotated.chunks_exact(d)) {
        let e: f64 = v.iter().map(|&a| f64::from(a) * f64::from(a)).sum();
        energy += e;
        norms.push(e.sqrt());
        for (i, &a) in v.iter().enumerate() {
            let a = f64::from(a);
            raw[i].push(a);
            sum[i] += a;
            for (j, &b) in v[..=i].iter().enumerate() {
                second[i * d + j] += a * f64::from(b);
            }
        }
        for (i, &b) in y.iter().enumerate() {
            rot[i].push(f64::from(b));
        }
        // The codec quantises y/‖x‖; scaled by √d its coordinates have unit variance.
        if e > 0.0 {
            let scale = (d as f64 / e).sqrt();
            z.extend(y.iter().map(|&b| f64::from(b) * scale));
        }
    }
    let nf = n as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / nf).collect();
    let (mut trace, mut frob) = (0.0, 0.0);
    for i in 0..d {
        for j in 0..=i {
            let c = second[i * d + j] / nf - mean[i] * mean[j];
            if i == j {
                trace += c;
                frob += c * c;
            } else {
                frob += 2.0 * c * c;
            }
        }
    }
    let ratio = |m: &[Moments]| {
        let (lo, hi) = m.iter().fold((f64::INFINITY, 0f64), |(lo, hi), c| {
            (lo.min(c.variance()), hi.max(c.variance()))
        });
        hi / lo
    };
    let rms = (energy / (nf * d as f64)).sqrt();
    let outliers = x
        .iter()
        .filter(|&&a| f64::from(a).abs() > OUTLIER_SIGMAS * rms)
        .count();
    let rotated_outliers = z.iter().filter(|a| a.abs() > OUTLIER_SIGMAS).count();
    let mean_sq: f64 = mean.iter().map(|m| m * m).sum();
    z.sort_by(f64::total_cmp);
    // Zero vectors have no direction; the grid is for the full count, so refit it if any
    // were skipped (real K/V has none).
    let w1_rotated = if z.len() == grid.len() {
        wasserstein1_normal(&z, grid)
    } else if z.is_empty() {
        f64::NAN
    } else {
        wasserstein1_normal(&z, &NormalGrid::new(z.len()))
    };
    HeadStats {
        mean_norm: norms.mean(),
        norm_cv: norms.variance().sqrt() / norms.mean(),
        mean_energy_share: mean_sq / (energy / nf),
        anisotropy: ratio(&raw),
        anisotropy_rotated: ratio(&rot),
        kurtosis_max: raw
            .iter()
            .map(Moments::excess_kurtosis)
            .fold(f64::NEG_INFINITY, f64::max),
        kurtosis_mean: raw.iter().map(Moments::excess_kurtosis).sum::<f64>() / d as f64,
        kurtosis_rotated_mean: rot.iter().map(Moments::excess_kurtosis).sum::<f64>() / d as f64,
        outlier_fraction: outliers as f64 / x.len() as f64,
        outlier_fraction_rotated: rotated_outliers as f64 / z.len().max(1) as f64,
        effective_rank: trace * trace / frob,
        w1_rotated,
    }
}

/// The Gaussian reference for heads of `tokens` vectors of `d` values.
fn reference(tokens: usize, d: usize, fwht: &Fwht, grid: &NormalGrid) -> GaussianReference {
    let samples: Vec<HeadStats> = (0..NULL_REPLICATES)
        .into_par_iter()
        .map(|r| {
            let x = gaussian_vectors(tokens, d, NULL_SEED + r);
            head_stats(&x, d, fwht, grid)
        })
        .collect();
    let mean = HeadStats::mean_of(&samples);
    let var = samples
        .iter()
        .map(|s| (s.w1_rotated - mean.w1_rotated).powi(2))
        .sum::<f64>()
        / (samples.len() - 1) as f64;
    GaussianReference {
        tokens,
        replicates: NULL_REPLICATES,
        mean,
        w1_sd: var.sqrt(),
    }
}

/// Audits every head of every K and V tensor of `source`.
///
/// # Errors
/// [`Error::Rotation`] when the head_dim has no Hadamard transform.
pub fn audit(source: &KvSource) -> Result<AuditReport> {
    let d = source.head_dim;
    let seed = kv_codec::DEFAULT_SEED;
    let fwht = Fwht::with_signs(d, seed).map_err(|e| Error::Rotation {
        head_dim: d,
        source: e,
    })?;
    let jobs: Vec<(Kind, &Segment, usize)> = [(Kind::K, &source.k), (Kind::V, &source.v)]
        .into_iter()
        .flat_map(|(kind, segs)| {
            segs.iter()
                .flat_map(move |s| (0..s.heads).map(move |h| (kind, s, h)))
        })
        .collect();

    let mut grids: BTreeMap<usize, NormalGrid> = BTreeMap::new();
    for &(_, s, _) in &jobs {
        grids
            .entry(s.tokens())
            .or_insert_with(|| NormalGrid::new(s.tokens() * d));
    }
    let references: Vec<GaussianReference> = grids
        .iter()
        .map(|(&tokens, grid)| reference(tokens, d, &fwht, grid))
        .collect();

    let heads = jobs
        .par_iter()
        .map(|&(kind, seg, head)| {
            let t = seg.tokens();
            let x = &source.segment_values(seg)[head * t * d..(head + 1) * t * d];
            let stats = head_stats(x, d, &fwht, &grids[&t]);
            let r = references
                .iter()
                .find(|r| r.tokens == t)
                .expect("a reference per token count");
            let w1_z = (stats.w1_rotated - r.mean.w1_rotated) / r.w1_sd;
            HeadAudit {
                layer: seg.layer_key().to_owned(),
                tensor: seg.name.clone(),
                kind,
                head,
                tokens: t,
                stats,
                w1_z,
                gaussian: w1_z <= GAUSSIAN_Z,
            }
        })
        .collect();
    Ok(AuditReport {
        source: source.info.clone(),
        rotation_seed: seed,
        outlier_sigmas: OUTLIER_SIGMAS,
        gaussian_z: GAUSSIAN_Z,
        gaussian_outlier_fraction: 2.0 * (1.0 - normal_cdf(OUTLIER_SIGMAS)),
        references,
        heads,
    })
}

/// The columns of [`table`]: header and width.
const COLUMNS: [(&str, usize); 12] = [
    ("layer", 8),
    ("kv", 2),
    ("norm", 7),
    ("offset", 6),
    ("aniso", 7),
    ("rot", 5),
    ("kurt", 6),
    ("outl %", 6),
    ("rot %", 6),
    ("rank", 5),
    ("W1 rot", 6),
    ("Gauss", 5),
];

fn push_row(out: &mut String, cells: &[String]) {
    for (i, (cell, (_, w))) in cells.iter().zip(COLUMNS).enumerate() {
        if i == 0 {
            let _ = write!(out, "{cell:<w$}");
        } else {
            let _ = write!(out, "  {cell:>w$}");
        }
    }
    out.push('\n');
}

fn cells(s: &HeadStats) -> [String; 9] {
    [
        format!("{:.2}", s.mean_norm),
        format!("{:.3}", s.mean_energy_share),
        format!("{:.1}", s.anisotropy),
        format!("{:.2}", s.anisotropy_rotated),
        format!("{:.2}", s.kurtosis_max),
        format!("{:.3}", 100.0 * s.outlier_fraction),
        format!("{:.3}", 100.0 * s.outlier_fraction_rotated),
        format!("{:.1}", s.effective_rank),
        format!("{:.4}", s.w1_rotated),
    ]
}

/// One row per layer and kind, each statistic the mean over the layer's heads (the Gauss
/// column counts the heads that read as Gaussian), then one row per Gaussian reference.
pub fn table(report: &AuditReport) -> String {
    let mut out = String::new();
    let header: Vec<String> = COLUMNS.iter().map(|(h, _)| (*h).to_owned()).collect();
    push_row(&mut out, &header);
    for kind in [Kind::K, Kind::V] {
        for layer in report.layers() {
            let heads: Vec<&HeadAudit> = report.heads_of(layer, kind).collect();
            if heads.is_empty() {
                continue;
            }
            let stats: Vec<HeadStats> = heads.iter().map(|h| h.stats).collect();
            let gaussian = heads.iter().filter(|h| h.gaussian).count();
            let mut row = vec![layer.to_owned(), kind.name().to_owned()];
            row.extend(cells(&HeadStats::mean_of(&stats)));
            row.push(format!("{gaussian}/{}", heads.len()));
            push_row(&mut out, &row);
        }
    }
    for r in &report.references {
        let mut row = vec!["N(0,1)".to_owned(), String::new()];
        row.extend(cells(&r.mean));
        row.push(format!("t={}", r.tokens));
        push_row(&mut out, &row);
    }
    out
}
