//! Rule i: one license everywhere. The root manifest's `[workspace.package]` says
//! [`LICENSE`], every member takes it with `license.workspace = true`, and both license
//! texts are in the repository root.

use super::Violation;
use crate::manifest;

/// The project's license expression.
pub(crate) const LICENSE: &str = "MIT OR Apache-2.0";

/// The license files the expression names.
pub(crate) const LICENSE_FILES: [&str; 2] = ["LICENSE-MIT", "LICENSE-APACHE"];

/// Checks the root manifest.
pub(crate) fn check_root(path: &str, text: &str) -> Vec<Violation> {
    let found = manifest::entries(text)
        .into_iter()
        .find(|e| e.table == ["workspace", "package"] && e.key == ["license"]);
    match found {
        Some(e) if e.value.trim() == format!("\"{LICENSE}\"") => Vec::new(),
        Some(e) => vec![Violation::new(
            path,
            e.line,
            "license",
            format!("the workspace license must be \"{LICENSE}\""),
        )],
        None => vec![Violation::new(
            path,
            1,
            "license",
            format!("[workspace.package] must say license = \"{LICENSE}\""),
        )],
    }
}

/// Checks a member manifest: `license.workspace = true` in `[package]`, no license of its own.
pub(crate) fn check_member(path: &str, text: &str) -> Vec<Violation> {
    let entries = manifest::entries(text);
    let inherits = entries.iter().any(|e| {
        e.table == ["package"] && e.key == ["license", "workspace"] && e.value.trim() == "true"
    });
    let own = entries
        .iter()
        .find(|e| e.table == ["package"] && (e.key == ["license"] || e.key == ["license-file"]));
    match (inherits, own) {
        (true, None) => Vec::new(),
        (_, Some(e)) => vec![Violation::new(
            path,
            e.line,
            "license",
            "members take the workspace license: `license.workspace = true`",
        )],
        (false, None) => vec![Violation::new(
            path,
            1,
            "license",
            "[package] must say `license.workspace = true`",
        )],
    }
}

/// Checks that each license file exists (`exists` answers for a root-relative path).
pub(crate) fn check_files(exists: impl Fn(&str) -> bool) -> Vec<Violation> {
    LICENSE_FILES
        .iter()
        .filter(|f| !exists(f))
        .map(|f| Violation::new(f, 1, "license", format!("missing; {LICENSE} names it")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_must_name_the_license() {
        let good = "[workspace.package]\nlicense = \"MIT OR Apache-2.0\"\n";
        assert!(check_root("Cargo.toml", good).is_empty());
        assert_eq!(
            check_root("Cargo.toml", "[workspace.package]\nlicense = \"MIT\"\n")[0].line,
            2
        );
        assert_eq!(check_root("Cargo.toml", "[workspace]\n").len(), 1);
    }

    #[test]
    fn members_inherit_it() {
        assert!(
            check_member(
                "a/Cargo.toml",
                "[package]\nname = \"a\"\nlicense.workspace = true\n"
            )
            .is_empty()
        );
        assert_eq!(
            check_member("a/Cargo.toml", "[package]\nname = \"a\"\n").len(),
            1
        );
        let own = check_member("a/Cargo.toml", "[package]\nlicense = \"MIT\"\n");
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].line, 2);
    }

    #[test]
    fn both_files_must_exist() {
        assert!(check_files(|_| true).is_empty());
        assert_eq!(check_files(|f| f == "LICENSE-MIT").len(), 1);
    }
}
