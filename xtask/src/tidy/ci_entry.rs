//! Rule g: `.ci/run` is an executable script that runs `cargo xtask ci`, and the README gives
//! that same command, so the documented test command and the CI entry point never drift apart.

use super::Violation;

/// The command both files must name.
pub(crate) const CI_COMMAND: &str = "cargo xtask ci";

/// Whether one line of a shell script runs `cargo xtask ci` (optionally through `exec`, and
/// optionally with further arguments).
fn runs_ci(line: &str) -> bool {
    let line = line.trim();
    let line = line.strip_prefix("exec ").map_or(line, str::trim_start);
    line.strip_prefix(CI_COMMAND)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
}

/// Checks `.ci/run`. `script` is `None` if the file is missing; `executable` is its mode check.
pub(crate) fn check_script(path: &str, script: Option<&str>, executable: bool) -> Vec<Violation> {
    let Some(script) = script else {
        return vec![Violation::new(
            path,
            1,
            "ci-entry",
            format!("missing; it must run `{CI_COMMAND}`"),
        )];
    };
    let mut out = Vec::new();
    if !executable {
        out.push(Violation::new(
            path,
            1,
            "ci-entry",
            "must be executable (chmod +x)",
        ));
    }
    if !script.lines().any(runs_ci) {
        out.push(Violation::new(
            path,
            1,
            "ci-entry",
            format!("must contain the line `{CI_COMMAND}`"),
        ));
    }
    out
}

/// Checks the README text (the caller skips this, with a warning, if there is no README yet).
pub(crate) fn check_readme(path: &str, readme: &str) -> Vec<Violation> {
    if readme.contains(CI_COMMAND) {
        Vec::new()
    } else {
        vec![Violation::new(
            path,
            1,
            "ci-entry",
            format!("must give the test command `{CI_COMMAND}`"),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str =
        "#!/usr/bin/env bash\nset -euo pipefail\ncd \"$(dirname \"$0\")/..\"\ncargo xtask ci\n";

    #[test]
    fn a_good_script_passes() {
        assert!(check_script(".ci/run", Some(SCRIPT), true).is_empty());
        assert!(
            check_script(
                ".ci/run",
                Some("#!/bin/sh\n  exec cargo xtask ci \"$@\"\n"),
                true
            )
            .is_empty()
        );
    }

    #[test]
    fn script_problems_are_flagged() {
        assert_eq!(check_script(".ci/run", None, false).len(), 1);
        let v = check_script(".ci/run", Some(SCRIPT), false);
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].to_string(),
            ".ci/run:1: ci-entry: must be executable (chmod +x)"
        );
        for bad in [
            "#!/bin/sh\ncargo test --workspace\n",
            "# cargo xtask ci\n",
            "cargo xtask cin\n",
            "echo cargo xtask ci\n",
        ] {
            assert_eq!(check_script(".ci/run", Some(bad), true).len(), 1, "{bad:?}");
        }
    }

    #[test]
    fn readme_must_name_the_command() {
        assert!(
            check_readme(
                "README.md",
                "Run `cargo xtask ci` before sending a change.\n"
            )
            .is_empty()
        );
        assert_eq!(check_readme("README.md", "Run `cargo test`.\n").len(), 1);
    }
}
