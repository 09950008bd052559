//! Rule h: the README's generated results block is exactly what `cargo xtask report` makes
//! from `bench/results/*.json`, so no published number can drift from its JSON or be typed
//! by hand.

use super::Violation;
use crate::report::{BEGIN, RESULTS_DIR, current_block};

/// Compares the README's block with `expected` (the block built from the JSON, or why it
/// could not be built). `has_results` says whether any result file is committed: without
/// one, a README without a block is fine.
pub(crate) fn check(
    path: &str,
    readme: &str,
    expected: Result<String, String>,
    has_results: bool,
) -> Vec<Violation> {
    let rule = "readme-report";
    let expected = match expected {
        Ok(block) => block,
        Err(e) => {
            return vec![Violation::new(
                path,
                1,
                rule,
                format!("cannot build the block: {e}"),
            )];
        }
    };
    match current_block(readme) {
        None if !has_results => Vec::new(),
        None => vec![Violation::new(
            path,
            1,
            rule,
            format!("has no `{BEGIN}` block for {RESULTS_DIR}/*.json; run `cargo xtask report`"),
        )],
        Some((line, block)) if block != expected => vec![Violation::new(
            path,
            line,
            rule,
            format!(
                "the generated block differs from {RESULTS_DIR}/*.json; run `cargo xtask report`"
            ),
        )],
        Some(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::END;

    #[test]
    fn a_matching_block_passes_and_a_drifted_one_fails() {
        let block = format!("{BEGIN}\n| a | 1 |\n{END}");
        let readme = format!("# R\n\n{block}\n");
        assert!(check("README.md", &readme, Ok(block.clone()), true).is_empty());
        let edited = readme.replace("| a | 1 |", "| a | 2 |");
        let v = check("README.md", &edited, Ok(block.clone()), true);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].line, 3);
        assert!(v[0].to_string().contains("readme-report"), "{}", v[0]);
    }

    #[test]
    fn a_missing_block_fails_only_when_results_exist() {
        assert!(check("README.md", "# R\n", Ok(String::new()), false).is_empty());
        assert_eq!(
            check("README.md", "# R\n", Ok(String::new()), true).len(),
            1
        );
        assert_eq!(
            check("README.md", "# R\n", Err("bad json".into()), true).len(),
            1
        );
    }
}
