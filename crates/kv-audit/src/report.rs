//! Reports of a sweep: the plain-text table `kvc rd` prints and the JSON document it writes.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};
use crate::rd::{RdReport, RdResult};

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
