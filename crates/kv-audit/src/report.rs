//! Reports: the plain-text table `kvc rd` prints and the JSON it writes (and reads back), and
//! the directory `kvc report` writes: JSON, Markdown with tables of the sweep, paired
//! comparisons with 95% confidence intervals and the audit, and the charts of [`crate::chart`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kv_codec::CodecSpec;
use serde::Serialize;

use crate::audit::AuditReport;
use crate::chart::{self, GapChart, HeatStat, Heatmap, RdChart};
use crate::error::{Error, Result};
use crate::metrics::snr_db;
use crate::rd::{RdReport, RdResult};
use crate::stats::MeanCi;

/// The column headers of [`table`], with their widths.
const COLUMNS: [(&str, usize); 8] = [
    ("bits/val", 8),
    ("rel-MSE K", 9),
    ("rel-MSE V", 9),
    ("SNR K dB", 8),
    ("SNR V dB", 8),
    ("gap dB", 6),
    ("enc Mvec/s", 10),
    ("dec Mvec/s", 10),
];

/// One row per codec: rate, rel-MSE and SNR of K and V, Shannon gap and throughput.
pub fn table(results: &[RdResult]) -> String {
    let codec_width = results
        .iter()
        .map(|r| r.codec.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    let mut out = String::new();
    let _ = write!(out, "{:<codec_width$}", "codec");
    for (name, width) in COLUMNS {
        let _ = write!(out, "  {name:>width$}");
    }
    out.push('\n');
    for r in results {
        let cells = [
            format!("{:.3}", r.bits_per_value),
            format!("{:.2e}", r.rel_mse_k),
            format!("{:.2e}", r.rel_mse_v),
            format!("{:.2}", r.snr_db_k),
            format!("{:.2}", r.snr_db_v),
            format!("{:.2}", r.shannon_gap_db),
            format!("{:.3}", r.encode_mvec_s),
            format!("{:.3}", r.decode_mvec_s),
        ];
        let _ = write!(out, "{:<codec_width$}", r.codec);
        for (cell, (_, width)) in cells.iter().zip(COLUMNS) {
            let _ = write!(out, "  {cell:>width$}");
        }
        out.push('\n');
    }
    out
}

/// The report as pretty-printed JSON (non-finite numbers, such as the SNR of an exact
/// reconstruction, become `null`).
///
/// # Errors
/// [`Error::Json`] if serialisation fails.
pub fn to_json(report: &RdReport) -> Result<String> {
    serde_json::to_string_pretty(report).map_err(Error::Json)
}

/// Writes [`to_json`] (with a final newline) to `path`.
///
/// # Errors
/// [`Error::Json`], or [`Error::Io`] if the file cannot be written.
pub fn write_json(path: impl AsRef<Path>, report: &RdReport) -> Result<()> {
    let path = path.as_ref();
    let mut text = to_json(report)?;
    text.push('\n');
    std::fs::write(path, text).map_err(|source| Error::Io {
        action: "cannot write",
        path: path.to_owned(),
        source,
    })
}

/// A paired comparison of two codecs over the layers of one sweep: the mean per-layer SNR
/// difference (a − b) with its 95% confidence interval (Student t over layers), K and V
/// apart.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// First codec.
    pub a: String,
    /// Second codec.
    pub b: String,
    /// Bits per value of `a`.
    pub a_bits_per_value: f64,
    /// Bits per value of `b`.
    pub b_bits_per_value: f64,
    /// SNR(a) − SNR(b) over K layers, dB.
    pub k_snr_diff_db: MeanCi,
    /// SNR(a) − SNR(b) over V layers, dB.
    pub v_snr_diff_db: MeanCi,
}

/// Per-layer SNR differences of two results, K and V apart, as means with 95% intervals.
///
/// # Panics
/// If the results have different layer counts (they come from one sweep).
pub fn compare(a: &RdResult, b: &RdResult) -> Comparison {
    let diff = |x: &[f64], y: &[f64]| {
        assert_eq!(x.len(), y.len(), "results of different sources");
        let d: Vec<f64> = x
            .iter()
            .zip(y)
            .map(|(&p, &q)| snr_db(p) - snr_db(q))
            .collect();
        MeanCi::of(&d)
    };
    Comparison {
        a: a.codec.clone(),
        b: b.codec.clone(),
        a_bits_per_value: a.bits_per_value,
        b_bits_per_value: b.bits_per_value,
        k_snr_diff_db: diff(&a.rel_mse_k_layers, &b.rel_mse_k_layers),
        v_snr_diff_db: diff(&a.rel_mse_v_layers, &b.rel_mse_v_layers),
    }
}

/// The default pairs to compare within `results`: every TurboQuant codec against the
/// E8 Voronoi code of the sweep with the most bits that do not exceed TurboQuant's.
pub fn default_pairs(results: &[RdResult]) -> Vec<(usize, usize)> {
    let is =
        |r: &RdResult, f: fn(&CodecSpec) -> bool| r.codec.parse::<CodecSpec>().is_ok_and(|s| f(&s));
    let mut pairs = Vec::new();
    for (j, b) in results.iter().enumerate() {
        if !is(b, |s| matches!(s, CodecSpec::TurboQuant { .. })) {
            continue;
        }
        let best = results
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                is(a, |s| matches!(s, CodecSpec::Voronoi { .. }))
                    && a.bits_per_value <= b.bits_per_value
            })
            .max_by(|x, y| x.1.bits_per_value.total_cmp(&y.1.bits_per_value));
        if let Some((i, _)) = best {
            pairs.push((i, j));
        }
    }
    pairs
}

/// Formats a number for a table, `∞` for an exact reconstruction.
fn num(x: f64, digits: usize) -> String {
    if x.is_infinite() {
        if x > 0.0 {
            "∞".to_owned()
        } else {
            "−∞".to_owned()
        }
    } else {
        format!("{x:.digits$}")
    }
}

/// The sweep as a Markdown table: codec, bits per value, compression against bf16, SNR of K
/// and V, and the gap to the Shannon bound.
pub fn markdown_table(results: &[RdResult]) -> String {
    let mut out = String::from(
        "| codec | bits/value | vs bf16 | SNR K (dB) | SNR V (dB) | gap to bound (dB) |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let _ = writeln!(
            out,
            "| `{}` | {:.3} | {:.2}× | {} | {} | {} |",
            r.codec,
            r.bits_per_value,
            16.0 / r.bits_per_value,
            num(r.snr_db_k, 2),
            num(r.snr_db_v, 2),
            num(r.shannon_gap_db, 2)
        );
    }
    out
}

/// The comparisons as a Markdown table of mean ± 95% half-width.
pub fn comparison_table(comparisons: &[Comparison]) -> String {
    let mut out = String::from(
        "| a | b | bits/value a, b | ΔSNR K (dB) | ΔSNR V (dB) | layers |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    // One layer (a Gaussian source) has no spread to estimate: say so rather than print NaN.
    let ci = |c: &MeanCi| {
        if c.half_width.is_nan() {
            format!("{:+.2} (one layer, no interval)", c.mean)
        } else {
            format!("{:+.2} ± {:.2}", c.mean, c.half_width)
        }
    };
    for c in comparisons {
        let _ = writeln!(
            out,
            "| `{}` | `{}` | {:.3}, {:.3} | {} | {} | {} |",
            c.a,
            c.b,
            c.a_bits_per_value,
            c.b_bits_per_value,
            ci(&c.k_snr_diff_db),
            ci(&c.v_snr_diff_db),
            c.k_snr_diff_db.n
        );
    }
    out
}

/// Reads a report written by [`write_json`].
///
/// # Errors
/// [`Error::Io`], or [`Error::BadReport`] if it is not one.
pub fn read_json(path: impl AsRef<Path>) -> Result<RdReport> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "cannot read",
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| Error::BadReport {
        path: path.to_owned(),
        source,
    })
}

/// Everything `kvc report` writes into its JSON file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FullReport {
    /// The sweep.
    pub rd: RdReport,
    /// Paired comparisons within the sweep.
    pub comparisons: Vec<Comparison>,
    /// The audit of the same source, when the source was read (not for `--from`).
    pub audit: Option<AuditReport>,
}

/// File names of the charts `kvc report` writes, without extension.
pub const RD_CHART: &str = "rd";
/// See [`RD_CHART`].
pub const GAP_CHART: &str = "gap";

/// The Markdown document of a full report, linking the SVG charts beside it.
pub fn markdown(report: &FullReport) -> String {
    let rd = &report.rd;
    let mut out = String::from("# kv-codec report\n\n");
    let source = match &rd.source.path {
        Some(p) => format!("`{p}`"),
        None => format!(
            "{} iid N(0,1) vectors (seed {})",
            rd.source.vectors,
            rd.source.seed.unwrap_or_default()
        ),
    };
    let _ = writeln!(
        out,
        "Source: {source}; head_dim {}; {} vectors ({} K and {} V tensors).\n",
        rd.source.head_dim,
        rd.source.vectors,
        rd.source.k_tensors.len(),
        rd.source.v_tensors.len()
    );
    out.push_str(
        "Metrics (one definition everywhere): bits/value counts every stored bit; rel-MSE = \
         Σ‖x − x̂‖² / Σ‖x‖² over all vectors; SNR = −10·log10 rel-MSE; gap = 6.02·bits/value − \
         SNR, the distance to the rate–distortion bound of an iid Gaussian source, averaged \
         over K and V.\n\n## Rate and distortion\n\n",
    );
    out.push_str(&markdown_table(&rd.results));
    let _ = write!(
        out,
        "\n![SNR against bits per value]({RD_CHART}.svg)\n\n![Gap to the bound]({GAP_CHART}.svg)\n"
    );
    if !report.comparisons.is_empty() {
        out.push_str(
            "\n## Paired comparisons\n\nMean per-layer SNR difference (a − b) ± the \
             half-width of its 95% confidence interval (Student t over layers).\n\n",
        );
        out.push_str(&comparison_table(&report.comparisons));
    }
    if let Some(audit) = &report.audit {
        let _ = write!(
            out,
            "\n## Audit\n\nPer layer and kind, the mean over heads; `Gauss` counts the heads \
             whose distance to the Gaussian after rotation is within {} standard deviations \
             of that of Gaussian samples of the same size (rows `N(0,1)`). Columns: mean \
             norm; offset = ‖mean‖²/mean ‖x‖²; channel variance max/min before (`aniso`) and \
             after (`rot`) rotation; largest channel excess kurtosis; values beyond {} σ \
             before and after rotation (%); effective rank (participation ratio); W1 of the \
             rotated normalised coordinates to N(0,1).\n\n```text\n{}```\n",
            audit.gaussian_z,
            audit.outlier_sigmas,
            crate::audit::table(audit)
        );
        for stat in HeatStat::ALL {
            let (stem, title) = stat.name();
            let _ = write!(out, "\n![{title}]({stem}.svg)\n");
        }
    }
    out
}

/// Writes `report.json`, `report.md` and every chart as SVG and PNG into `dir` (created if
/// missing); returns the paths written.
///
/// # Errors
/// [`Error::Io`], [`Error::Json`], [`Error::Chart`].
pub fn write_dir(dir: &Path, report: &FullReport) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "cannot create",
        path: dir.to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    let mut write_text = |name: &str, text: String| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| Error::Io {
            action: "cannot write",
            path: path.clone(),
            source,
        })?;
        written.push(path);
        Ok(())
    };
    let mut json = serde_json::to_string_pretty(report).map_err(Error::Json)?;
    json.push('\n');
    write_text("report.json", json)?;
    write_text("report.md", markdown(report))?;
    let title = match &report.rd.source.path {
        Some(p) => {
            // The file and its folder (`smollm2-pp512/kv.safetensors`): file names alone are
            // often as generic as `kv.safetensors`.
            let parts: Vec<_> = Path::new(p).components().rev().take(2).collect();
            let short: Vec<String> = parts
                .iter()
                .rev()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            format!(
                "{} (head_dim {})",
                short.join("/"),
                report.rd.source.head_dim
            )
        }
        None => format!("Gaussian source (head_dim {})", report.rd.source.head_dim),
    };
    for ext in ["svg", "png"] {
        let path = dir.join(format!("{RD_CHART}.{ext}"));
        chart::save(
            &RdChart {
                title: format!("SNR vs bits per value: {title}"),
                results: &report.rd.results,
            },
            &path,
        )?;
        written.push(path);
        let path = dir.join(format!("{GAP_CHART}.{ext}"));
        chart::save(
            &GapChart {
                title: format!("Gap to the Shannon bound: {title}"),
                results: &report.rd.results,
            },
            &path,
        )?;
        written.push(path);
        if let Some(audit) = &report.audit {
            for stat in HeatStat::ALL {
                let path = dir.join(format!("{}.{ext}", stat.name().0));
                chart::save(&Heatmap { audit, stat }, &path)?;
                written.push(path);
            }
        }
    }
    Ok(written)
}
