//! Rule d: the crate graph keeps its layers (see the Layering section of the style guide).
//!
//! The codec crates (`lattice-core`, `hadamard`, `kv-codec`, `kv-cuda`) form the shippable
//! core and may only depend downwards inside that set; `kv-audit` and any future evaluation
//! crate sit on top and may use anything; `xtask` has no dependencies at all so it builds in
//! seconds; only `kv-cuda` talks to the CUDA driver through `cudarc`.

use std::collections::BTreeSet;

use super::Violation;
use crate::manifest;
use crate::metadata::{DepKind, Dependency, Package, Workspace};

/// The workspace crates that each codec crate (and xtask) may depend on; `None` for crates on
/// top of the stack, which may depend on any member.
fn allowed_members(package: &str) -> Option<&'static [&'static str]> {
    match package {
        "lattice-core" | "hadamard" | "xtask" => Some(&[]),
        "kv-cuda" => Some(&["lattice-core", "hadamard"]),
        "kv-codec" => Some(&["lattice-core", "hadamard", "kv-cuda"]),
        _ => None,
    }
}

/// The only member allowed to name `cudarc`.
const CUDA_CRATE: &str = "kv-cuda";

/// Checks every member's declared dependencies (normal, dev and build alike). `manifest_text`
/// returns a member's `Cargo.toml` text, used only to point violations at the right line.
pub(crate) fn check(
    workspace: &Workspace,
    display_path: impl Fn(&Package) -> String,
    manifest_text: impl Fn(&Package) -> String,
) -> Vec<Violation> {
    let member_names: BTreeSet<&str> = workspace.members.iter().map(|p| p.name.as_str()).collect();
    let mut out = Vec::new();
    for package in &workspace.members {
        let path = display_path(package);
        let text = manifest_text(package);
        let mut report = |dep: &Dependency, message: String| {
            out.push(Violation::new(
                &path,
                dependency_line(&text, dep),
                "layering",
                message,
            ));
        };
        for dep in &package.dependencies {
            let table = dep.kind.table();
            if package.name == "xtask" {
                report(
                    dep,
                    format!(
                        "xtask must stay std-only, but [{table}] names `{}`",
                        dep.name
                    ),
                );
                continue;
            }
            if dep.name == "cudarc" && package.name != CUDA_CRATE {
                report(
                    dep,
                    format!(
                        "only `{CUDA_CRATE}` may depend on `cudarc` ([{table}] of `{}`)",
                        package.name
                    ),
                );
            }
            if !member_names.contains(dep.name.as_str()) || dep.name == package.name {
                continue;
            }
            if dep.name == "xtask" {
                report(dep, "nothing may depend on `xtask`".to_owned());
                continue;
            }
            if let Some(allowed) = allowed_members(&package.name)
                && !allowed.contains(&dep.name.as_str())
            {
                let message = if allowed.is_empty() {
                    format!(
                        "`{}` must not depend on any workspace crate, but [{table}] names `{}`",
                        package.name, dep.name
                    )
                } else {
                    let allowed: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
                    format!(
                        "`{}` may depend only on {} among workspace crates, but [{table}] names `{}`",
                        package.name,
                        allowed.join(", "),
                        dep.name
                    )
                };
                report(dep, message);
            }
            if package.name == "kv-codec"
                && dep.name == CUDA_CRATE
                && !(dep.kind == DepKind::Normal && dep.optional)
            {
                report(
                    dep,
                    format!(
                        "`kv-codec` may use `{CUDA_CRATE}` only as an optional [dependencies] entry behind the `cuda` feature, not in [{table}]{}",
                        if dep.optional {
                            ""
                        } else {
                            " as a required dependency"
                        }
                    ),
                );
            }
        }
    }
    out
}

/// The 1-based line that declares `dep` in the manifest, or 1 if it cannot be found.
fn dependency_line(manifest_text: &str, dep: &Dependency) -> usize {
    let (table, key) = (dep.kind.table(), dep.key());
    manifest::entries(manifest_text)
        .into_iter()
        .find(|entry| {
            let t = &entry.table;
            // `key = ...` or `key.workspace = ...` in `[dependencies]` or `[target.X.dependencies]`.
            let flat = t.last().is_some_and(|last| last == table)
                && entry.key.first().is_some_and(|k| k == key);
            // Any entry of a `[dependencies.key]` or `[target.X.dependencies.key]` table.
            let sub_table = t.len() >= 2 && t[t.len() - 2] == table && t[t.len() - 1] == key;
            flat || sub_table
        })
        .map_or(1, |entry| entry.line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn dep(name: &str, kind: DepKind, optional: bool) -> Dependency {
        Dependency {
            name: name.to_owned(),
            rename: None,
            kind,
            optional,
        }
    }

    fn package(name: &str, dependencies: Vec<Dependency>) -> Package {
        Package {
            name: name.to_owned(),
            manifest_path: PathBuf::from(format!("crates/{name}/Cargo.toml")),
            dependencies,
        }
    }

    fn good_workspace() -> Workspace {
        use DepKind::*;
        Workspace {
            members: vec![
                package(
                    "lattice-core",
                    vec![dep("thiserror", Normal, false), dep("proptest", Dev, false)],
                ),
                package("hadamard", vec![dep("thiserror", Normal, false)]),
                package(
                    "kv-cuda",
                    vec![
                        dep("lattice-core", Normal, false),
                        dep("cudarc", Normal, true),
                    ],
                ),
                package(
                    "kv-codec",
                    vec![
                        dep("lattice-core", Normal, false),
                        dep("hadamard", Normal, false),
                        dep("kv-cuda", Normal, true),
                    ],
                ),
                package(
                    "kv-audit",
                    vec![
                        dep("kv-codec", Normal, false),
                        dep("lattice-core", Dev, false),
                    ],
                ),
                package(
                    "kv-eval",
                    vec![
                        dep("kv-audit", Normal, false),
                        dep("kv-codec", Normal, false),
                    ],
                ),
                package("xtask", vec![]),
            ],
        }
    }

    fn run(ws: &Workspace) -> Vec<String> {
        check(
            ws,
            |p| p.manifest_path.display().to_string(),
            |_| String::new(),
        )
        .into_iter()
        .map(|v| v.to_string())
        .collect()
    }

    fn with_dep(member: &str, extra: Dependency) -> Workspace {
        let mut ws = good_workspace();
        ws.members
            .iter_mut()
            .find(|p| p.name == member)
            .unwrap()
            .dependencies
            .push(extra);
        ws
    }

    #[test]
    fn the_intended_graph_passes() {
        assert_eq!(run(&good_workspace()), Vec::<String>::new());
    }

    #[test]
    fn leaves_depend_on_no_workspace_crate() {
        let v = run(&with_dep(
            "hadamard",
            dep("lattice-core", DepKind::Dev, false),
        ));
        assert_eq!(
            v,
            vec![
                "crates/hadamard/Cargo.toml:1: layering: `hadamard` must not depend on any workspace crate, but [dev-dependencies] names `lattice-core`"
            ]
        );
        assert_eq!(
            run(&with_dep(
                "lattice-core",
                dep("kv-codec", DepKind::Normal, false)
            ))
            .len(),
            1
        );
    }

    #[test]
    fn codec_crates_never_reach_up() {
        assert_eq!(
            run(&with_dep(
                "kv-cuda",
                dep("kv-codec", DepKind::Normal, false)
            )),
            vec![
                "crates/kv-cuda/Cargo.toml:1: layering: `kv-cuda` may depend only on `lattice-core`, `hadamard` among workspace crates, but [dependencies] names `kv-codec`"
            ]
        );
        assert_eq!(
            run(&with_dep("kv-codec", dep("kv-audit", DepKind::Dev, false))).len(),
            1
        );
        assert_eq!(
            run(&with_dep(
                "kv-codec",
                dep("kv-eval", DepKind::Normal, false)
            ))
            .len(),
            1
        );
        assert_eq!(
            run(&with_dep("kv-cuda", dep("kv-audit", DepKind::Build, false))).len(),
            1
        );
    }

    #[test]
    fn kv_cuda_must_be_optional_in_kv_codec() {
        let mut ws = good_workspace();
        let codec = ws
            .members
            .iter_mut()
            .find(|p| p.name == "kv-codec")
            .unwrap();
        codec.dependencies.retain(|d| d.name != "kv-cuda");
        codec
            .dependencies
            .push(dep("kv-cuda", DepKind::Normal, false));
        let v = run(&ws);
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("optional"), "{v:?}");
    }

    #[test]
    fn xtask_has_no_dependencies_and_no_dependents() {
        for kind in [DepKind::Normal, DepKind::Dev, DepKind::Build] {
            let v = run(&with_dep("xtask", dep("serde", kind, false)));
            assert_eq!(v.len(), 1, "{kind:?}");
            assert!(v[0].contains("std-only"));
        }
        assert_eq!(
            run(&with_dep("kv-eval", dep("xtask", DepKind::Dev, false))).len(),
            1
        );
    }

    #[test]
    fn only_kv_cuda_names_cudarc() {
        let v = run(&with_dep("kv-codec", dep("cudarc", DepKind::Normal, true)));
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("cudarc"));
        assert_eq!(
            run(&with_dep("kv-eval", dep("cudarc", DepKind::Dev, false))).len(),
            1
        );
    }

    #[test]
    fn violations_point_at_the_manifest_line() {
        let ws = with_dep("hadamard", dep("lattice-core", DepKind::Normal, false));
        let text = "[package]\nname = \"hadamard\"\n\n[dependencies]\nthiserror.workspace = true\nlattice-core = { workspace = true }\n";
        let v = check(
            &ws,
            |p| p.name.clone(),
            |p| {
                if p.name == "hadamard" {
                    text.to_owned()
                } else {
                    String::new()
                }
            },
        );
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].line, 6);
        let sub_table =
            "[package]\nname = \"hadamard\"\n\n[dependencies.lattice-core]\nworkspace = true\n";
        let v = check(&ws, |p| p.name.clone(), |_| sub_table.to_owned());
        assert_eq!(v[0].line, 5);
    }
}
