//! The workspace as `cargo metadata --no-deps` describes it: members and their declared dependencies.

use std::path::{Path, PathBuf};

use crate::json::{self, Value};

/// Which section of a manifest declares a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DepKind {
    Normal,
    Dev,
    Build,
}

impl DepKind {
    pub(crate) fn table(self) -> &'static str {
        match self {
            DepKind::Normal => "dependencies",
            DepKind::Dev => "dev-dependencies",
            DepKind::Build => "build-dependencies",
        }
    }
}

/// One declared dependency of a workspace member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dependency {
    /// The package name (not the local alias).
    pub(crate) name: String,
    /// The local alias from `alias = { package = "name", ... }`, if any.
    pub(crate) rename: Option<String>,
    pub(crate) kind: DepKind,
    pub(crate) optional: bool,
}

impl Dependency {
    /// The key under which the manifest names the dependency.
    pub(crate) fn key(&self) -> &str {
        self.rename.as_deref().unwrap_or(&self.name)
    }
}

/// One workspace member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Package {
    pub(crate) name: String,
    pub(crate) manifest_path: PathBuf,
    pub(crate) dependencies: Vec<Dependency>,
}

/// The members of the workspace, in `cargo metadata` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Workspace {
    pub(crate) members: Vec<Package>,
}

/// Runs `cargo metadata --format-version 1 --no-deps --locked` in `root` and reads its output.
pub(crate) fn load(root: &Path) -> Result<Workspace, String> {
    let output = crate::cargo()
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "cargo metadata failed ({}): {}",
            output.status,
            stderr.trim()
        ));
    }
    let text = String::from_utf8(output.stdout)
        .map_err(|_| "cargo metadata printed invalid UTF-8".to_owned())?;
    from_json(&text)
}

/// Extracts the workspace members from `cargo metadata` JSON.
pub(crate) fn from_json(text: &str) -> Result<Workspace, String> {
    let doc = json::parse(text).map_err(|e| e.to_string())?;
    if doc.get("version").and_then(Value::as_f64) != Some(1.0) {
        return Err("cargo metadata: expected format version 1".to_owned());
    }
    let member_ids: Vec<&str> = doc
        .get("workspace_members")
        .and_then(Value::as_array)
        .ok_or("cargo metadata: missing `workspace_members`")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let packages = doc
        .get("packages")
        .and_then(Value::as_array)
        .ok_or("cargo metadata: missing `packages`")?;
    let mut members = Vec::new();
    for package in packages {
        let id = package
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if member_ids.contains(&id) {
            members.push(read_package(package)?);
        }
    }
    Ok(Workspace { members })
}

fn read_package(package: &Value) -> Result<Package, String> {
    let field = |key: &str| {
        package
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("cargo metadata: package without `{key}`"))
    };
    let name = field("name")?.to_owned();
    let manifest_path = PathBuf::from(field("manifest_path")?);
    let mut dependencies = Vec::new();
    for dep in package
        .get("dependencies")
        .and_then(Value::as_array)
        .unwrap_or_default()
    {
        let dep_name = dep
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("cargo metadata: a dependency of `{name}` has no name"))?;
        let kind = match dep.get("kind").and_then(Value::as_str) {
            None => DepKind::Normal,
            Some("dev") => DepKind::Dev,
            Some("build") => DepKind::Build,
            Some(other) => {
                return Err(format!("cargo metadata: unknown dependency kind `{other}`"));
            }
        };
        dependencies.push(Dependency {
            name: dep_name.to_owned(),
            rename: dep.get("rename").and_then(Value::as_str).map(str::to_owned),
            kind,
            optional: dep
                .get("optional")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        });
    }
    Ok(Package {
        name,
        manifest_path,
        dependencies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trimmed `cargo metadata` document: one member with three kinds of dependency, and a
    /// package that is not a member (which `--no-deps` never lists, but the reader must skip).
    const METADATA: &str = r#"{
      "packages": [
        {
          "name": "kv-codec", "version": "0.1.0",
          "id": "path+file:///w/crates/kv-codec#0.1.0",
          "manifest_path": "/w/crates/kv-codec/Cargo.toml",
          "features": {"cuda": ["dep:kv-cuda"]},
          "dependencies": [
            {"name": "lattice-core", "source": null, "req": "^0.1.0", "kind": null,
             "rename": null, "optional": false, "uses_default_features": true,
             "features": [], "target": null, "path": "/w/crates/lattice-core"},
            {"name": "kv-cuda", "kind": null, "rename": "cuda", "optional": true, "target": null},
            {"name": "proptest", "kind": "dev", "rename": null, "optional": false, "target": null},
            {"name": "cc", "kind": "build", "rename": null, "optional": false, "target": "cfg(unix)"}
          ]
        },
        {"name": "outsider", "id": "registry+x#outsider@1.0.0", "manifest_path": "/x/Cargo.toml",
         "dependencies": []}
      ],
      "workspace_members": ["path+file:///w/crates/kv-codec#0.1.0"],
      "target_directory": "/w/target",
      "version": 1,
      "workspace_root": "/w"
    }"#;

    #[test]
    fn reads_members_and_dependencies() {
        let ws = from_json(METADATA).unwrap();
        assert_eq!(ws.members.len(), 1);
        let codec = &ws.members[0];
        assert_eq!(codec.name, "kv-codec");
        assert_eq!(
            codec.manifest_path,
            PathBuf::from("/w/crates/kv-codec/Cargo.toml")
        );
        let summary: Vec<(&str, &str, DepKind, bool)> = codec
            .dependencies
            .iter()
            .map(|d| (d.name.as_str(), d.key(), d.kind, d.optional))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("lattice-core", "lattice-core", DepKind::Normal, false),
                ("kv-cuda", "cuda", DepKind::Normal, true),
                ("proptest", "proptest", DepKind::Dev, false),
                ("cc", "cc", DepKind::Build, false),
            ]
        );
    }

    #[test]
    fn rejects_unexpected_documents() {
        assert!(from_json("{}").is_err());
        assert!(from_json(r#"{"version": 2, "packages": [], "workspace_members": []}"#).is_err());
        assert!(from_json(r#"{"version": 1, "packages": []}"#).is_err());
        assert!(from_json("not json").is_err());
        let empty =
            from_json(r#"{"version": 1, "packages": [], "workspace_members": []}"#).unwrap();
        assert!(empty.members.is_empty());
    }
}
