//! The iso-quality table: for each codec family, the smallest rate whose Δppl stays within
//! 0.5%, 1% and 2% of the exact cache, and the compression that buys against bf16.
//!
//! A setting qualifies at a threshold when its whole 95% interval of Δppl % lies within
//! ±threshold (`|mean| + half-width ≤ threshold`); the rate where the mean alone does is
//! reported beside it, since a handful of passages gives wide intervals. Settings come in
//! steps of about one bit, so the table also gives the rate where the mean Δppl crosses the
//! threshold, interpolated between the two settings around the crossing (linearly in
//! log Δppl, which falls roughly exponentially with the rate): the fairer basis for
//! comparing two families at equal quality.
//!
//! The rate axis is the bits per value each plan's cache actually held at the end of a
//! passage ([`PlanResult::rate`]: kv-codec's pages, their rounding to whole pages and any
//! window and sinks included), not the codecs' nominal rates; compression against bf16 is 16
//! divided by it. Results written before the held rate was measured fall back to the
//! nominal rate. The per-plan table lists both.

use serde::Serialize;

use crate::eval::{EvalReport, PlanResult, family};
use crate::plan::CachePlan;
use crate::stats::MeanCi;
use crate::store::AttentionPath;

/// The Δppl thresholds of the table, in percent.
pub const THRESHOLDS: [f64; 3] = [0.5, 1.0, 2.0];

/// The protection of every setting of the default sweep (kv-codec's `Protection` as a
/// `protect=S:R:C` plan item): 4 f16 sink tokens, the last 16 tokens in f16, keys coded
/// around the mean of positions 4..68. The default codec also runs bare, for reference.
pub const PROTECTION: &str = "protect=4:16:64";

/// The default sweep: each family's settings from about 2.5 to 8 bits per value.
pub fn default_specs() -> Vec<&'static str> {
    vec![
        // The default codec at 2.5, 3, 3.5, 4, 4.5, 5.5, 6.5 and 8 bits per value (d = 64).
        "voronoi-e8-q4-s4",
        "voronoi-e8-q6-s3",
        "voronoi-e8-q9-s2",
        "voronoi-e8-q13-s2",
        "voronoi-e8-q17-s3",
        "voronoi-e8-q33-s4",
        "voronoi-e8-q67-s4",
        "voronoi-e8-q190-s4",
        "turboquant-b2",
        "turboquant-b3",
        "turboquant-b4",
        "turboquant-b5",
        "turboquant-b6",
        "turboquant-b8",
        "compat-d4-q4",
        "compat-d4-q6",
        "compat-d4-q8",
        "compat-d4-q16",
        "compat-d4-q32",
        "compat-d4-q64",
        "int4",
        "int5",
        "int6",
        "int8",
        "fp8-e4m3",
    ]
}

/// One family at one threshold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IsoCell {
    /// Δppl bound, percent.
    pub threshold_pct: f64,
    /// The smallest-rate plan whose interval lies within the bound.
    pub plan: Option<String>,
    /// Its bits per value held ([`PlanResult::rate`]).
    pub bits_per_value: Option<f64>,
    /// 16 / bits per value.
    pub compression_vs_bf16: Option<f64>,
    /// Its Δppl %.
    pub delta_ppl_pct: Option<MeanCi>,
    /// The smallest rate whose mean Δppl alone is within the bound.
    pub mean_only_bits_per_value: Option<f64>,
    /// The rate where the mean Δppl reaches the bound, interpolated between the settings
    /// around the crossing (`None` when the lowest setting is already within it).
    pub interpolated_bits_per_value: Option<f64>,
}

/// One family's row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IsoRow {
    /// Codec family.
    pub family: String,
    /// Settings of the family that were measured.
    pub settings: usize,
    /// One cell per threshold of [`THRESHOLDS`].
    pub cells: Vec<IsoCell>,
}

/// Bytes saved by the default codec against TurboQuant-MSE at equal Δppl.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Saving {
    /// What both families' rows add to the family name (empty: none): `k≠v` for split
    /// settings, the `protect=S:R:C` item of their protection.
    pub variant: String,
    /// Δppl bound, percent.
    pub threshold_pct: f64,
    /// 100·(1 − bpv_voronoi / bpv_turboquant), both by the interval criterion.
    pub fewer_bytes_pct: Option<f64>,
    /// The same by the mean-only criterion.
    pub fewer_bytes_pct_mean_only: Option<f64>,
    /// The same at the interpolated rates.
    pub fewer_bytes_pct_interpolated: Option<f64>,
}

/// The table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IsoTable {
    /// One row per family, in the order the report first lists them.
    pub rows: Vec<IsoRow>,
    /// The default codec against TurboQuant-MSE.
    pub voronoi_vs_turboquant: Vec<Saving>,
}

/// The split settings of the default sweep, `(K, V)`: the keys about one bit finer than the
/// values, at mean rates between the uniform settings. Keys weigh more: an error in a key
/// moves every attention weight of the query through the softmax, an error in a value only
/// its share of the output (at 4 bits per value, coding K alone costs the model about ten
/// times the next-token KL of coding V alone). TurboQuant-MSE gets the same split, so the
/// two codecs are compared under one policy.
pub fn default_splits() -> Vec<(&'static str, &'static str)> {
    vec![
        ("voronoi-e8-q9-s2", "voronoi-e8-q4-s4"),
        ("voronoi-e8-q13-s2", "voronoi-e8-q6-s3"),
        ("voronoi-e8-q17-s3", "voronoi-e8-q9-s2"),
        ("voronoi-e8-q28-s4", "voronoi-e8-q13-s2"),
        ("voronoi-e8-q33-s4", "voronoi-e8-q17-s3"),
        ("voronoi-e8-q67-s4", "voronoi-e8-q33-s4"),
        ("turboquant-b3", "turboquant-b2"),
        ("turboquant-b4", "turboquant-b3"),
        ("turboquant-b5", "turboquant-b4"),
        ("turboquant-b6", "turboquant-b5"),
    ]
}

/// The default sweep as plans for a model of `layers` layers: every setting of
/// [`default_specs`] under [`PROTECTION`], each family's split settings
/// ([`default_splits`]) after its own, then the default codec bare.
///
/// # Panics
/// Never for the built-in lists (checked by a test).
pub fn default_plans(layers: usize) -> Vec<CachePlan> {
    let specs = default_specs();
    let splits = default_splits();
    let family_of = |s: &str| s.parse().map(family).expect("valid built-in spec");
    let mut plans = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        plans.push(format!("{spec},{PROTECTION}"));
        let last_of_family = specs.get(i + 1).map(|s| family_of(s)) != Some(family_of(spec));
        if last_of_family {
            plans.extend(
                splits
                    .iter()
                    .filter(|(k, _)| family_of(k) == family_of(spec))
                    .map(|(k, v)| format!("k={k},v={v},{PROTECTION}")),
            );
        }
    }
    plans.extend(
        specs
            .iter()
            .filter(|s| s.starts_with("voronoi"))
            .map(|s| (*s).to_owned()),
    );
    plans
        .iter()
        .map(|s| CachePlan::parse(s, layers).expect("valid built-in plan"))
        .collect()
}

/// Builds the table from an evaluation's uniform plans.
pub fn iso_table(report: &EvalReport) -> IsoTable {
    let mut families: Vec<&str> = Vec::new();
    for f in report.plans.iter().filter_map(|r| r.family.as_deref()) {
        if !families.contains(&f) {
            families.push(f);
        }
    }
    let mut rows = Vec::new();
    for fam in families {
        let mut members: Vec<&PlanResult> = report
            .plans
            .iter()
            .filter(|r| r.family.as_deref() == Some(fam))
            .collect();
        if members.is_empty() {
            continue;
        }
        members.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        let cells = THRESHOLDS
            .iter()
            .map(|&t| {
                let best = members.iter().find(|r| r.delta_ppl_pct.within(t));
                let first = members.iter().position(|r| r.delta_ppl_pct.mean.abs() <= t);
                let mean_only = first.map(|j| members[j].rate());
                let interpolated = first
                    .filter(|&j| j > 0)
                    .map(|j| crossing(members[j - 1], members[j], t));
                IsoCell {
                    threshold_pct: t,
                    plan: best.map(|r| r.plan.clone()),
                    bits_per_value: best.map(|r| r.rate()),
                    compression_vs_bf16: best.map(|r| 16.0 / r.rate()),
                    delta_ppl_pct: best.map(|r| r.delta_ppl_pct),
                    mean_only_bits_per_value: mean_only,
                    interpolated_bits_per_value: interpolated,
                }
            })
            .collect();
        rows.push(IsoRow {
            family: fam.to_owned(),
            settings: members.len(),
            cells,
        });
    }
    let cell = |fam: &str, i: usize| {
        rows.iter()
            .find(|r| r.family == fam)
            .map(|r| r.cells[i].clone())
    };
    let saving = |v: Option<f64>, t: Option<f64>| match (v, t) {
        (Some(v), Some(t)) => Some(100.0 * (1.0 - v / t)),
        _ => None,
    };
    // Compared under the same policy: the rows "voronoi…" and "turboquant…" with the same
    // suffix (split settings, protection).
    let suffixes: Vec<String> = rows
        .iter()
        .filter_map(|r| r.family.strip_prefix("voronoi"))
        .filter(|suffix| {
            rows.iter()
                .any(|r| r.family == format!("turboquant{suffix}"))
        })
        .map(str::to_owned)
        .collect();
    let voronoi_vs_turboquant = suffixes
        .iter()
        .flat_map(|suffix| {
            THRESHOLDS
                .iter()
                .enumerate()
                .map(move |(i, &t)| (suffix, i, t))
        })
        .map(|(suffix, i, t)| {
            let (v, q) = (
                cell(&format!("voronoi{suffix}"), i),
                cell(&format!("turboquant{suffix}"), i),
            );
            Saving {
                variant: suffix.trim().to_owned(),
                threshold_pct: t,
                fewer_bytes_pct: saving(
                    v.as_ref().and_then(|c| c.bits_per_value),
                    q.as_ref().and_then(|c| c.bits_per_value),
                ),
                fewer_bytes_pct_mean_only: saving(
                    v.as_ref().and_then(|c| c.mean_only_bits_per_value),
                    q.as_ref().and_then(|c| c.mean_only_bits_per_value),
                ),
                fewer_bytes_pct_interpolated: saving(
                    v.as_ref().and_then(|c| c.interpolated_bits_per_value),
                    q.as_ref().and_then(|c| c.interpolated_bits_per_value),
                ),
            }
        })
        .collect();
    IsoTable {
        rows,
        voronoi_vs_turboquant,
    }
}

/// The rate between settings `a` (mean Δppl above `t`) and `b` (within `t`) where the mean
/// Δppl equals `t`: linear in log Δppl when both are positive, linear in Δppl otherwise.
fn crossing(a: &PlanResult, b: &PlanResult, t: f64) -> f64 {
    let (da, db) = (a.delta_ppl_pct.mean, b.delta_ppl_pct.mean);
    let f = if da > 0.0 && db > 0.0 {
        (da.ln() - t.ln()) / (da.ln() - db.ln())
    } else {
        (da.abs() - t) / (da.abs() - db.abs()).max(f64::MIN_POSITIVE)
    };
    a.rate() + f.clamp(0.0, 1.0) * (b.rate() - a.rate())
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "—".to_owned(), |x| format!("{x:.digits$}"))
}

/// The table as Markdown ([`summary`], what the README shows), followed by every measured
/// plan.
pub fn markdown(report: &EvalReport, table: &IsoTable) -> String {
    let mut out = summary(report, table);
    out.push_str(
        "\n\n| codec | bpv (nominal) | bpv (held) | × bf16 | ppl | Δppl % (95% CI) | KL (nats) | \
         top-1 |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    for r in &report.plans {
        out.push_str(&format!(
            "| {} | {:.3} | {} | {:.2} | {:.3} | {:+.2} ± {} | {:.5} | {:.3} |\n",
            r.plan,
            r.bits_per_value,
            opt(r.held_bits_per_value, 3),
            16.0 / r.rate(),
            r.ppl,
            r.delta_ppl_pct.mean,
            opt(r.delta_ppl_pct.ci95, 2),
            r.kl.mean,
            r.top1_agreement
        ));
    }
    out
}

/// The settings, the family table and the savings against TurboQuant-MSE, as Markdown:
/// the README's block, verbatim.
pub fn summary(report: &EvalReport, table: &IsoTable) -> String {
    let s = &report.settings;
    let mut out = format!(
        "Smallest bits per value held with |Δppl| within the bound (whole 95% interval), its \
         compression vs bf16, and in brackets the smallest with the mean alone within it / the \
         rate where the mean crosses the bound, interpolated between settings. {} passages × \
         {} scored tokens after a {}-token prefix, every layer's K and V compressed, \
         attention {}; exact-cache ppl {:.3}.\n\n",
        s.passages,
        s.cont,
        s.prefix,
        match s.attention {
            AttentionPath::Pages => "on the compressed pages",
            AttentionPath::DecodedCopy => "over a copy decoded from the cache",
        },
        report.exact.ppl
    );
    out.push_str("| codec family |");
    for t in THRESHOLDS {
        out.push_str(&format!(" Δppl ≤ {t}% |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(THRESHOLDS.len()));
    out.push('\n');
    for row in &table.rows {
        let plural = if row.settings == 1 { "" } else { "s" };
        out.push_str(&format!(
            "| {} ({} setting{plural}) |",
            row.family, row.settings
        ));
        for c in &row.cells {
            let main = match (c.bits_per_value, c.compression_vs_bf16) {
                (Some(b), Some(x)) => format!("{b:.2} bpv, {x:.2}×"),
                _ => "none".to_owned(),
            };
            out.push_str(&format!(
                " {main} [{} / {}] |",
                opt(c.mean_only_bits_per_value, 2),
                opt(c.interpolated_bits_per_value, 2)
            ));
        }
        out.push('\n');
    }
    let mut last = None;
    for sv in &table.voronoi_vs_turboquant {
        let first = last != Some(&sv.variant);
        if first {
            if last.is_some() {
                out.push('.');
            }
            let under = if sv.variant.is_empty() {
                "bare".to_owned()
            } else {
                sv.variant.clone()
            };
            out.push_str(&format!(
                "\nDefault codec vs TurboQuant-MSE at equal Δppl ({under}), fewer bytes \
                 (interval / mean only / interpolated):"
            ));
            last = Some(&sv.variant);
        }
        let pct = |x: Option<f64>| x.map_or_else(|| "—".to_owned(), |x| format!("{x:.1}%"));
        out.push_str(&format!(
            "{} ≤ {}%: {} / {} / {}",
            if first { "" } else { ";" },
            sv.threshold_pct,
            pct(sv.fewer_bytes_pct),
            pct(sv.fewer_bytes_pct_mean_only),
            pct(sv.fewer_bytes_pct_interpolated)
        ));
    }
    if last.is_some() {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{EvalSettings, ExactResult, family};
    use kv_codec::CodecSpec;

    fn plan(spec: &str, bpv: f64, delta: &[f64]) -> PlanResult {
        let s: CodecSpec = spec.parse().unwrap();
        PlanResult {
            plan: spec.to_owned(),
            family: Some(family(s).to_owned()),
            bits_per_value: bpv,
            held_bits_per_value: None,
            compression_vs_bf16: 16.0 / bpv,
            held_bytes_per_token: 0.0,
            ppl: 10.0,
            ppl_passages: vec![],
            delta_ppl_pct: MeanCi::of(delta),
            delta_ppl_pct_passages: delta.to_vec(),
            kl: MeanCi::of(&[0.0]),
            top1_agreement: 1.0,
        }
    }

    #[test]
    fn smallest_rate_within_each_bound() {
        let report = EvalReport {
            settings: EvalSettings::default(),
            passage_starts: vec![],
            exact: ExactResult {
                ppl: 10.0,
                ppl_passages: vec![],
                held_bytes_per_token: 0.0,
            },
            plans: vec![
                plan("voronoi-e8-q13-s2", 4.0, &[0.3, 0.4, 0.35]),
                plan("voronoi-e8-q6-s3", 3.0, &[1.5, 1.6, 1.4]),
                plan("turboquant-b4", 4.25, &[0.6, 0.7, 0.65]),
                plan("turboquant-b5", 5.25, &[0.1, 0.2, 0.15]),
            ],
            seconds: 0.0,
            decode_step_seconds: 0.0,
        };
        let t = iso_table(&report);
        assert_eq!(t.rows.len(), 2);
        let v = &t.rows[0];
        assert_eq!(v.family, "voronoi");
        assert_eq!(v.cells[0].bits_per_value, Some(4.0));
        assert_eq!(v.cells[2].bits_per_value, Some(3.0));
        let q = &t.rows[1];
        assert_eq!(q.cells[0].bits_per_value, Some(5.25));
        assert_eq!(q.cells[1].bits_per_value, Some(4.25));
        let s = &t.voronoi_vs_turboquant[0];
        assert!((s.fewer_bytes_pct.unwrap() - 100.0 * (1.0 - 4.0 / 5.25)).abs() < 1e-9);
        // Mean Δppl 0.65 % at 4.25 bpv and 0.15 % at 5.25: 0.5 % is crossed at
        // 4.25 + ln(0.65/0.5)/ln(0.65/0.15) bits.
        let want = 4.25 + (0.65f64 / 0.5).ln() / (0.65f64 / 0.15).ln();
        assert!((q.cells[0].interpolated_bits_per_value.unwrap() - want).abs() < 1e-9);
        // The lowest voronoi setting is already within 2 %: nothing to interpolate from.
        assert_eq!(v.cells[2].interpolated_bits_per_value, None);
        let md = markdown(&report, &t);
        assert!(
            md.contains("| voronoi (2 settings) | 4.00 bpv, 4.00×"),
            "{md}"
        );

        // With held rates the table ranks and reports those: the 4.25-bpv setting held
        // 4.5 bits, the 5.25 one 5.5.
        let mut held = report.clone();
        held.plans[2].held_bits_per_value = Some(4.5);
        held.plans[3].held_bits_per_value = Some(5.5);
        let t = iso_table(&held);
        let q = &t.rows[1];
        assert_eq!(q.cells[0].bits_per_value, Some(5.5));
        assert_eq!(q.cells[1].bits_per_value, Some(4.5));
        assert_eq!(q.cells[1].compression_vs_bf16, Some(16.0 / 4.5));
        let want = 4.5 + (0.65f64 / 0.5).ln() / (0.65f64 / 0.15).ln();
        assert!((q.cells[0].interpolated_bits_per_value.unwrap() - want).abs() < 1e-9);
        let md = markdown(&held, &t);
        assert!(
            md.contains("| turboquant-b4 | 4.250 | 4.500 | 3.56 |"),
            "{md}"
        );
    }

    #[test]
    fn built_in_specs_parse_and_build() {
        for p in default_plans(2) {
            assert!(p.bits_per_value(64).is_ok(), "{}", p.label());
        }
        // The voronoi entries are the default codec at their rates.
        let voronoi: Vec<String> = [2.5, 3.0, 3.5, 4.0, 4.5, 5.5, 6.5, 8.0]
            .iter()
            .map(|&r| {
                kv_codec::codecs::voronoi::default_for_rate(r, 64)
                    .unwrap()
                    .to_string()
            })
            .collect();
        let listed: Vec<&str> = default_specs()
            .into_iter()
            .filter(|s| s.starts_with("voronoi"))
            .collect();
        assert_eq!(voronoi, listed);
        // Split settings: K about one bit finer than V.
        let rate = |s: &str| {
            kv_codec::CodecConfig::new(s.parse().unwrap(), 64)
                .build()
                .unwrap()
                .bits_per_value()
        };
        for (k, v) in default_splits() {
            let gap = rate(k) - rate(v);
            assert!((0.9..1.3).contains(&gap), "{k} / {v}: {gap}");
        }
    }
}
