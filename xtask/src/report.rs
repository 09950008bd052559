//! `cargo xtask report`: the README's generated results block, from the committed benchmark
//! JSON in `bench/results/*.json` (the files `kvc rd --json` writes), and the charts beside it.
//!
//! The block between [`BEGIN`] and [`END`] is made here and only here, with xtask's own JSON
//! parser, so the tidy rule `readme-report` can recompute it in-process and fail when the
//! README and the JSON disagree. The charts need `plotters`, which xtask (std only) must not
//! depend on, so for them `cargo xtask report` runs `kvc report --from FILE` once per file,
//! writing `docs/report/<stem>/` (Markdown, JSON, SVG and PNG), which the block links.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::json::{self, Value};

/// First line of the generated block.
pub(crate) const BEGIN: &str = "<!-- report:begin -->";
/// Last line of the generated block.
pub(crate) const END: &str = "<!-- report:end -->";
/// Where the benchmark JSON lives, relative to the workspace root.
pub(crate) const RESULTS_DIR: &str = "bench/results";
/// Where `kvc report --from` writes each file's report, relative to the root.
const REPORT_DIR: &str = "docs/report";

/// The committed rate–distortion sweeps (`rd-*.json`, written by `kvc rd --json`), sorted
/// by name; other results (GPU throughput, evaluations) have their own formats and tables.
pub(crate) fn result_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(root.join(RESULTS_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("rd-"))
        })
        .collect();
    files.sort();
    files
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

/// Codecs the README's compact table shows (by spec prefix): the default family, the
/// strongest scalar baseline (TurboQuant) and what engines ship. Every codec of a sweep is in
/// its full report.
const HERO_PREFIXES: [&str; 6] = ["voronoi-", "turboquant-", "fp8-", "q4_0", "q8_0", "bf16"];

/// A number of the JSON, `∞`/`−∞` where `kvc` wrote `null` for an infinite SNR or gap.
fn number(v: Option<&Value>, infinite: &str, digits: usize) -> Result<String, String> {
    match v {
        Some(Value::Number(x)) => Ok(format!("{x:.digits$}")),
        Some(Value::Null) => Ok(infinite.to_owned()),
        _ => Err("a result lacks a number".to_owned()),
    }
}

/// The block's section for one result file: what was measured, the table, the chart.
fn section(name: &str, doc: &Value) -> Result<String, String> {
    let source = doc.get("source").ok_or("no `source`")?;
    let results = doc
        .get("results")
        .and_then(Value::as_array)
        .ok_or("no `results` array")?;
    let head_dim = source
        .get("head_dim")
        .and_then(Value::as_f64)
        .ok_or("no `source.head_dim`")?;
    let vectors = source
        .get("vectors")
        .and_then(Value::as_f64)
        .ok_or("no `source.vectors`")?;
    let what = match source.get("path").and_then(Value::as_str) {
        Some(path) => format!("K/V of `{path}`"),
        None => "iid Gaussian vectors".to_owned(),
    };
    let mut out = format!(
        "**{name}** ([`{RESULTS_DIR}/{name}.json`]({RESULTS_DIR}/{name}.json)): {what}, \
         head_dim {head_dim}, {vectors} vectors.\n\n\
         | codec | bits/value | vs bf16 | SNR K (dB) | SNR V (dB) | gap to bound (dB) |\n\
         |---|---:|---:|---:|---:|---:|\n"
    );
    let mut left_out = 0;
    for r in results {
        let codec = r
            .get("codec")
            .and_then(Value::as_str)
            .ok_or("a result has no `codec`")?;
        if !HERO_PREFIXES.iter().any(|p| codec.starts_with(p)) {
            left_out += 1;
            continue;
        }
        let bpv = r
            .get("bits_per_value")
            .and_then(Value::as_f64)
            .ok_or("a result has no `bits_per_value`")?;
        let _ = writeln!(
            out,
            "| `{codec}` | {bpv:.3} | {:.2}× | {} | {} | {} |",
            16.0 / bpv,
            number(r.get("snr_db_k"), "∞", 2)?,
            number(r.get("snr_db_v"), "∞", 2)?,
            number(r.get("shannon_gap_db"), "−∞", 2)?,
        );
    }
    let _ = write!(
        out,
        "\n![SNR against bits per value, {name}]({REPORT_DIR}/{name}/rd.svg)\n\n\
         Full report, with {left_out} more codecs (the published codec, integer and strawman \
         ladders), the gap to the bound and paired comparisons: \
         [{REPORT_DIR}/{name}/report.md]({REPORT_DIR}/{name}/report.md).\n"
    );
    Ok(out)
}

/// The whole generated block, markers included, from the result files of `root`.
pub(crate) fn block(root: &Path) -> Result<String, String> {
    let mut out = format!(
        "{BEGIN}\n<!-- Generated by `cargo xtask report` from {RESULTS_DIR}/*.json; edit those, not this. -->\n\n\
         bits/value counts every stored bit (indices, scales, norms) over head_dim; SNR = \
         −10·log10(Σ‖x − x̂‖² / Σ‖x‖²); gap = 6.02·bits/value − SNR, the distance to the \
         rate–distortion bound of an iid Gaussian source (mean of K and V).\n"
    );
    let files = result_files(root);
    if files.is_empty() {
        let _ = writeln!(out, "\nNo results committed in `{RESULTS_DIR}/` yet.");
    }
    for file in &files {
        let text =
            fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let doc = json::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        let section = section(&stem(file), &doc).map_err(|e| format!("{}: {e}", file.display()))?;
        out.push('\n');
        out.push_str(&section);
    }
    out.push_str(END);
    Ok(out)
}

/// The README's current block (markers included) and its first line number, if it has one.
pub(crate) fn current_block(readme: &str) -> Option<(usize, &str)> {
    let start = readme.find(BEGIN)?;
    let end = readme[start..].find(END)? + start + END.len();
    let line = readme[..start].lines().count() + 1;
    Some((line, &readme[start..end]))
}

/// `readme` with its block replaced by `block` (appended, if it has none).
pub(crate) fn replace_block(readme: &str, block: &str) -> String {
    match readme
        .find(BEGIN)
        .and_then(|s| readme[s..].find(END).map(|e| (s, s + e + END.len())))
    {
        Some((s, e)) => format!("{}{block}{}", &readme[..s], &readme[e..]),
        None => format!("{}\n{block}\n", readme.trim_end()),
    }
}

/// Entry point of `cargo xtask report`.
pub(crate) fn run(root: &Path) -> ExitCode {
    for file in result_files(root) {
        let out = root.join(REPORT_DIR).join(stem(&file));
        println!(
            "report: kvc report --from {} --out {}",
            file.display(),
            out.display()
        );
        let status = crate::cargo()
            .current_dir(root)
            .args([
                "run",
                "--release",
                "--quiet",
                "--bin",
                "kvc",
                "--",
                "report",
                "--from",
            ])
            .arg(&file)
            .arg("--out")
            .arg(&out)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("error: report: `kvc report` failed for {}", file.display());
            return ExitCode::FAILURE;
        }
    }
    let block = match block(root) {
        Ok(block) => block,
        Err(e) => {
            eprintln!("error: report: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = root.join("README.md");
    let readme = fs::read_to_string(&path).unwrap_or_default();
    let updated = replace_block(&readme, &block);
    if updated == readme {
        println!("report: README.md is up to date");
    } else if let Err(e) = fs::write(&path, updated) {
        eprintln!("error: report: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    } else {
        println!("report: README.md regenerated");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"source":{"kind":"safetensors","path":"kv.safetensors","head_dim":64,"vectors":10},
        "results":[{"codec":"voronoi-e8-q13-s2","bits_per_value":4.0,"snr_db_k":21.114,"snr_db_v":21.08,"shannon_gap_db":2.99},
                   {"codec":"int4","bits_per_value":4.25,"snr_db_k":13.8,"snr_db_v":18.6,"shannon_gap_db":9.35},
                   {"codec":"bf16","bits_per_value":16.0,"snr_db_k":52.1,"snr_db_v":null,"shannon_gap_db":null}]}"#;

    #[test]
    fn a_section_is_a_table_of_the_json() {
        let s = section("rd-x", &json::parse(DOC).unwrap()).unwrap();
        assert!(
            s.contains("K/V of `kv.safetensors`, head_dim 64, 10 vectors"),
            "{s}"
        );
        assert!(
            s.contains("| `voronoi-e8-q13-s2` | 4.000 | 4.00× | 21.11 | 21.08 | 2.99 |"),
            "{s}"
        );
        assert!(
            s.contains("| `bf16` | 16.000 | 1.00× | 52.10 | ∞ | −∞ |"),
            "{s}"
        );
        assert!(s.contains("(docs/report/rd-x/rd.svg)"), "{s}");
        // Ladders beyond the compact table are counted, not shown.
        assert!(
            !s.contains("int4") && s.contains("with 1 more codecs"),
            "{s}"
        );
        assert!(section("x", &json::parse(r#"{"source":{}}"#).unwrap()).is_err());
    }

    #[test]
    fn blocks_are_found_and_replaced() {
        let readme = format!("# T\n\nintro\n{BEGIN}\nold\n{END}\n\n## More\n");
        let (line, old) = current_block(&readme).unwrap();
        assert_eq!(line, 4);
        assert_eq!(old, format!("{BEGIN}\nold\n{END}"));
        let new = replace_block(&readme, &format!("{BEGIN}\nnew\n{END}"));
        assert_eq!(
            new,
            format!("# T\n\nintro\n{BEGIN}\nnew\n{END}\n\n## More\n")
        );
        assert!(current_block("no block").is_none());
        let appended = replace_block("# T\n", "B");
        assert_eq!(appended, "# T\nB\n");
    }
}
