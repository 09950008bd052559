//! The README's iso-quality table is the one `kv-eval table` derives from the committed
//! results file: every family row it prints must appear in the README verbatim, so a new
//! run (or a change to the table's rules) cannot leave the README behind.

use std::path::Path;

use kv_eval::eval::EvalReport;
use kv_eval::iso::{iso_table, markdown};

#[test]
fn readme_shows_the_table_of_the_committed_results() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let json = std::fs::read_to_string(root.join("bench/results/eval-smollm2-iso.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let report: EvalReport = serde_json::from_value(value["eval"].clone()).unwrap();
    let table = markdown(&report, &iso_table(&report));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains(" setting"))
        .collect();
    assert!(rows.len() >= 5, "{table}");
    for row in rows {
        assert!(
            readme.contains(row),
            "README.md lacks the row\n{row}\n(regenerate with `kv-eval table bench/results/eval-smollm2-iso.json`)"
        );
    }
}
