//! `cargo xtask tidy`: the house-style checks that rustc and clippy cannot express.
//!
//! Each rule is a plain function from file contents (or parsed metadata) to [`Violation`]s,
//! unit-tested on small in-memory fixtures; this module only gathers the files and prints.
//!
//! | rule             | what it checks                                                            |
//! |------------------|---------------------------------------------------------------------------|
//! | `file-header`    | every `.rs` file under `crates/` and `xtask/` starts with a `//!` line     |
//! | `safety-comment` | every `unsafe` block/impl/fn has a `// SAFETY:` comment (or `# Safety` doc) |
//! | `debug-macro`    | no leftover `todo!`, `dbg!` or `unimplemented!`                            |
//! | `layering`       | the crate graph from `cargo metadata` keeps its layers                     |
//! | `workspace-pin`  | member dependencies all say `workspace = true`                             |
//! | `forbid-unsafe`  | the safe crates' roots declare `#![forbid(unsafe_code)]`                   |
//! | `ci-entry`       | `.ci/run` runs `cargo xtask ci`, and the README says so                     |
//! | `license`        | `MIT OR Apache-2.0` in the root manifest, inherited by every member, both files |
//! | `readme-report`  | the README's results block is what `cargo xtask report` makes of the JSON   |

mod ci_entry;
mod layering;
mod license;
mod pins;
mod readme_report;
mod rust_files;
mod source;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::{metadata, report};

/// One broken rule, printed as `path:line: rule: message`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Violation {
    pub(crate) path: String,
    pub(crate) line: usize,
    pub(crate) rule: &'static str,
    pub(crate) message: String,
}

impl Violation {
    pub(crate) fn new(
        path: &str,
        line: usize,
        rule: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Violation {
            path: path.to_owned(),
            line,
            rule,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path, self.line, self.rule, self.message
        )
    }
}

/// Crate roots that must forbid unsafe code (a missing root is skipped: the crate is not written yet).
const FORBID_UNSAFE_ROOTS: [&str; 5] = [
    "crates/lattice-core/src/lib.rs",
    "crates/kv-codec/src/lib.rs",
    "crates/kv-audit/src/lib.rs",
    "crates/kv-eval/src/lib.rs",
    "xtask/src/main.rs",
];

/// The directories whose `.rs` files are checked.
const SOURCE_DIRS: [&str; 2] = ["crates", "xtask"];

/// Entry point of `cargo xtask tidy`.
pub(crate) fn main(root: &Path) -> ExitCode {
    if run(root) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs every rule over the workspace at `root`, prints the violations, and says whether there were none.
pub(crate) fn run(root: &Path) -> bool {
    let (mut violations, files_checked) = collect(root);
    violations.sort();
    violations.dedup();
    for violation in &violations {
        println!("{violation}");
    }
    if violations.is_empty() {
        println!("tidy: ok ({files_checked} Rust files, 9 rules)");
        true
    } else {
        println!("tidy: {} violation(s)", violations.len());
        false
    }
}

/// Gathers the violations of every rule, and the number of Rust files read.
fn collect(root: &Path) -> (Vec<Violation>, usize) {
    let mut out = Vec::new();

    // Rules a, b, c: every Rust file.
    let files = rust_files(root);
    for file in &files {
        let shown = display(root, file);
        match fs::read_to_string(file) {
            Ok(text) => out.extend(rust_files::check_file(&shown, &text)),
            Err(e) => out.push(Violation::new(
                &shown,
                1,
                "file-header",
                format!("cannot read: {e}"),
            )),
        }
    }

    // Rule f: crate roots of the safe crates.
    for relative in FORBID_UNSAFE_ROOTS {
        if let Ok(text) = fs::read_to_string(root.join(relative)) {
            out.extend(rust_files::check_forbid_unsafe(
                relative,
                &source::mask(&text),
            ));
        }
    }

    // Rules d and e: the workspace members. If cargo cannot describe the workspace (for example
    // while a member has no source yet), that is itself a layering violation, and the pins are
    // still checked on the manifests that can be found on disk.
    let manifests = match metadata::load(root) {
        Ok(workspace) => {
            out.extend(layering::check(
                &workspace,
                |p| display(root, &p.manifest_path),
                |p| fs::read_to_string(&p.manifest_path).unwrap_or_default(),
            ));
            workspace
                .members
                .into_iter()
                .map(|p| p.manifest_path)
                .collect()
        }
        Err(e) => {
            let first_line = e.lines().next().unwrap_or_default().to_owned();
            let detail: Vec<&str> = e
                .lines()
                .skip(1)
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let message = if detail.is_empty() {
                first_line
            } else {
                format!("{first_line} {}", detail.join(" "))
            };
            out.push(Violation::new("Cargo.toml", 1, "layering", message));
            manifests_on_disk(root)
        }
    };
    for manifest in manifests {
        if let Ok(text) = fs::read_to_string(&manifest) {
            out.extend(pins::check(&display(root, &manifest), &text));
            // Rule i: every member inherits the one license.
            out.extend(license::check_member(&display(root, &manifest), &text));
        }
    }
    match fs::read_to_string(root.join("Cargo.toml")) {
        Ok(text) => out.extend(license::check_root("Cargo.toml", &text)),
        Err(e) => out.push(Violation::new(
            "Cargo.toml",
            1,
            "license",
            format!("cannot read: {e}"),
        )),
    }
    out.extend(license::check_files(|f| root.join(f).is_file()));

    // Rule g: the CI entry point and the README.
    let script_path = root.join(".ci/run");
    let script = fs::read_to_string(&script_path).ok();
    out.extend(ci_entry::check_script(
        ".ci/run",
        script.as_deref(),
        is_executable(&script_path),
    ));
    match fs::read_to_string(root.join("README.md")) {
        Ok(readme) => {
            out.extend(ci_entry::check_readme("README.md", &readme));
            // Rule h: the generated results block.
            out.extend(readme_report::check(
                "README.md",
                &readme,
                report::block(root),
                !report::result_files(root).is_empty(),
            ));
        }
        Err(_) => eprintln!(
            "warning: tidy: README.md does not exist yet; skipped its `{}` check",
            ci_entry::CI_COMMAND
        ),
    }

    (out, files.len())
}

/// `path` relative to `root`, with `/` separators, for messages that editors can jump to.
fn display(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(relative) => relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
        Err(_) => path.display().to_string(),
    }
}

/// Every `.rs` file under the source directories, sorted, skipping build output.
fn rust_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        walk(&root.join(dir), &mut files);
    }
    files.sort();
    files
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if !is_build_output(&path) {
                walk(&path, files);
            }
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// A cargo target directory: `fuzz/target`, or any `target` that cargo has tagged as a cache.
/// A source module that happens to be called `target` is still checked.
fn is_build_output(dir: &Path) -> bool {
    let named = |p: &Path, name: &str| p.file_name().is_some_and(|n| n == name);
    named(dir, "target")
        && (dir.parent().is_some_and(|p| named(p, "fuzz")) || dir.join("CACHEDIR.TAG").exists())
}

/// Member manifests found by looking at the disk, for when `cargo metadata` fails.
fn manifests_on_disk(root: &Path) -> Vec<PathBuf> {
    let mut manifests: Vec<PathBuf> = fs::read_dir(root.join("crates"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("Cargo.toml"))
        .filter(|path| path.is_file())
        .collect();
    manifests.sort();
    manifests.push(root.join("xtask/Cargo.toml"));
    manifests
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    // Windows has no executable bit; the file existing is all that can be checked.
    path.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_print_as_path_line_rule_message() {
        let v = Violation::new("crates/a/src/lib.rs", 12, "debug-macro", "remove it");
        assert_eq!(
            v.to_string(),
            "crates/a/src/lib.rs:12: debug-macro: remove it"
        );
    }

    #[test]
    fn display_paths_are_relative_with_slashes() {
        let root = Path::new("/w");
        assert_eq!(
            display(root, Path::new("/w/crates/a/src/lib.rs")),
            "crates/a/src/lib.rs"
        );
        assert_eq!(
            display(root, Path::new("/elsewhere/x.rs")),
            "/elsewhere/x.rs"
        );
    }

    #[test]
    fn build_output_is_recognised_by_name_and_tag() {
        assert!(is_build_output(Path::new("/w/crates/a/fuzz/target")));
        // Without a CACHEDIR.TAG, a directory called `target` may be a source module.
        assert!(!is_build_output(Path::new("/nonexistent/src/target")));
        assert!(!is_build_output(Path::new("/w/crates/a/fuzz/src")));
    }
}
