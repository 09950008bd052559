//! Rule e: members take every dependency from `[workspace.dependencies]` (`x.workspace = true`),
//! so each external crate is pinned exactly once, in the root manifest.

use std::collections::BTreeMap;

use super::Violation;
use crate::manifest::{self, Entry};

const DEPENDENCY_TABLES: [&str; 5] = [
    "dependencies",
    "dev-dependencies",
    "build-dependencies",
    "dev_dependencies",
    "build_dependencies",
];

/// Where in a member manifest a dependency is declared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct DepSite {
    /// The table header, such as `dependencies` or `target.cfg(unix).dependencies`.
    table: String,
    /// The dependency key.
    name: String,
}

/// Classifies a table header: `Some((table, None))` for a dependency table whose keys are
/// dependencies, `Some((table, Some(name)))` for a `[dependencies.name]` table, `None` otherwise.
fn classify(header: &[String]) -> Option<(String, Option<String>)> {
    let is_dep_table = |s: &String| DEPENDENCY_TABLES.contains(&s.as_str());
    let (prefix, rest) = match header {
        [target, spec, rest @ ..] if target == "target" => (format!("target.{spec}."), rest),
        rest => (String::new(), rest),
    };
    match rest {
        [table] if is_dep_table(table) => Some((format!("{prefix}{table}"), None)),
        [table, name] if is_dep_table(table) => {
            Some((format!("{prefix}{table}"), Some(name.clone())))
        }
        _ => None,
    }
}

fn is_true(value: &str) -> bool {
    value.trim() == "true"
}

/// Whether an inline table value such as `{ workspace = true, optional = true }` inherits.
fn inline_table_inherits(value: &str) -> bool {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(body) = compact.strip_prefix('{').and_then(|b| b.strip_suffix('}')) else {
        return false;
    };
    // Keys inside an inline table are plain here; `features = [..]` holds no `workspace=`.
    body.split(',').any(|field| field == "workspace=true")
}

/// Checks one member manifest; `path` is how violations name the file.
pub(crate) fn check(path: &str, manifest_text: &str) -> Vec<Violation> {
    // For each dependency: the line that first names it, and whether any entry inherits.
    let mut deps: BTreeMap<DepSite, (usize, bool)> = BTreeMap::new();
    for Entry {
        table,
        key,
        value,
        line,
    } in manifest::entries(manifest_text)
    {
        let Some((table, sub_table_name)) = classify(&table) else {
            continue;
        };
        let (name, inherits) = match sub_table_name {
            // `[dependencies.foo]` then `workspace = true`.
            Some(name) => (name, key == ["workspace"] && is_true(&value)),
            None => match key.as_slice() {
                // `foo.workspace = true`, possibly next to `foo.features = [...]`.
                [name, field] => (name.clone(), field == "workspace" && is_true(&value)),
                // `foo = { workspace = true, ... }` or `foo = "1.0"`.
                [name] => (name.clone(), inline_table_inherits(&value)),
                _ => continue,
            },
        };
        let site = deps.entry(DepSite { table, name }).or_insert((line, false));
        site.1 |= inherits;
    }
    let mut out: Vec<Violation> = deps
        .into_iter()
        .filter(|(_, (_, inherits))| !inherits)
        .map(|(site, (line, _))| {
            Violation::new(
                path,
                line,
                "workspace-pin",
                format!(
                    "[{}] `{}` must use `workspace = true` (pin it once in the root [workspace.dependencies])",
                    site.table, site.name
                ),
            )
        })
        .collect();
    out.sort_by_key(|v| v.line);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_dependencies_pass() {
        let text = r#"
[package]
name = "demo"
version = "0.1.0" # not a dependency

[dependencies]
thiserror.workspace = true
half = { workspace = true, features = ["std"] }
kv-cuda = { workspace = true, optional = true }
serde.workspace = true
serde.features = ["derive"]

[dev-dependencies]
proptest = {
    workspace = true,
}

[target.'cfg(target_arch = "x86_64")'.dependencies]
wide.workspace = true

[dependencies.rayon]
workspace = true
optional = true

[features]
cuda = ["dep:kv-cuda"]
"#;
        assert_eq!(check("Cargo.toml", text), Vec::new());
    }

    #[test]
    fn local_pins_are_flagged() {
        let text = r#"[package]
name = "demo"

[dependencies]
thiserror = "2.0"
half = { version = "2.7", features = ["std"] }
rayon.version = "1.12"
lattice-core = { path = "../lattice-core" }

[build-dependencies]
cc = "1"

[target.'cfg(unix)'.dev-dependencies]
libc = { version = "0.2", workspace = false }

[dependencies.wide]
version = "1.7"
"#;
        let v = check("crates/demo/Cargo.toml", text);
        let lines: Vec<usize> = v.iter().map(|v| v.line).collect();
        assert_eq!(lines, vec![5, 6, 7, 8, 11, 14, 17]);
        assert_eq!(
            v[0].to_string(),
            "crates/demo/Cargo.toml:5: workspace-pin: [dependencies] `thiserror` must use `workspace = true` (pin it once in the root [workspace.dependencies])"
        );
        assert!(
            v[5].message
                .contains("[target.cfg(unix).dev-dependencies] `libc`"),
            "{}",
            v[5]
        );
    }
}
