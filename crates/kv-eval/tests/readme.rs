//! The README's iso-quality block (settings, family table, savings) is the one
//! `kv-eval table` derives from the committed results file, verbatim, so a new run (or a
//! change to the table's rules) cannot leave the README behind.

use std::path::Path;

use kv_eval::eval::EvalReport;
use kv_eval::iso::{iso_table, summary};

#[test]
fn readme_shows_the_table_of_the_committed_results() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let json = std::fs::read_to_string(root.join("bench/results/eval-smollm2-iso.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let report: EvalReport = serde_json::from_value(value["eval"].clone()).unwrap();
    let block = summary(&report, &iso_table(&report));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        block.lines().filter(|l| l.contains(" setting")).count() >= 5,
        "{block}"
    );
    assert!(
        readme.contains(&block),
        "README.md lacks the block\n{block}\n(regenerate with `kv-eval table bench/results/eval-smollm2-iso.json`)"
    );
}
