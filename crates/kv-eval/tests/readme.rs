//! The README's iso-quality blocks (settings, family table, savings) are the ones
//! `kv-eval table` derives from the committed results files, verbatim, so a new run (or a
//! change to the table's rules) cannot leave the README behind.

use std::path::Path;

use kv_eval::eval::EvalReport;
use kv_eval::iso::{iso_table, summary};

/// The block `kv-eval table FILE` derives from a committed results file, and at least
/// `families` family rows in it.
fn block_of(file: &str, families: usize) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let json = std::fs::read_to_string(root.join("bench/results").join(file)).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let report: EvalReport = serde_json::from_value(value["eval"].clone()).unwrap();
    let block = summary(&report, &iso_table(&report));
    assert!(
        block.lines().filter(|l| l.contains(" setting")).count() >= families,
        "{block}"
    );
    block
}

#[test]
fn readme_shows_the_tables_of_the_committed_results() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for (file, families) in [
        ("eval-smollm2-iso.json", 5),
        ("eval-smollm2-iso-1536.json", 2),
    ] {
        let block = block_of(file, families);
        assert!(
            readme.contains(&block),
            "README.md lacks the block\n{block}\n(regenerate with `kv-eval table bench/results/{file}`)"
        );
    }
}
