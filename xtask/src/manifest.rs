//! A line-oriented reader for `Cargo.toml` files, enough to list table entries with line numbers.
//!
//! It is not a TOML parser: it understands table headers, `key = value` entries (with values
//! that span lines inside `[...]` or `{...}`), quoted keys and `#` comments, which covers the
//! manifests this workspace writes. Cargo itself validates the files; the checks built on this
//! module only need to know which keys sit in which table, and on which line.

/// One `key = value` entry of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The dotted header of the enclosing table, split into unquoted keys
    /// (`[target.'cfg(unix)'.dependencies]` gives `["target", "cfg(unix)", "dependencies"]`);
    /// empty before the first header.
    pub(crate) table: Vec<String>,
    /// The dotted key, split into unquoted parts (`serde.workspace` gives `["serde", "workspace"]`).
    pub(crate) key: Vec<String>,
    /// The value text with comments removed and lines joined by spaces.
    pub(crate) value: String,
    /// 1-based line of the key.
    pub(crate) line: usize,
}

/// Lists every `key = value` entry of `text`, in order.
pub(crate) fn entries(text: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut table: Vec<String> = Vec::new();
    // Open `[`/`{` of a value that continues on later lines.
    let mut depth: usize = 0;
    for (index, raw) in text.lines().enumerate() {
        let line = strip_comment(raw);
        if depth > 0 {
            if let Some(last) = out.last_mut() {
                last.value.push(' ');
                last.value.push_str(line.trim());
            }
            depth = update_depth(depth, line);
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(header) = trimmed.strip_prefix('[') {
            // `[[bin]]` (arrays of tables) and `[table]` both end the previous table.
            let header = header.trim_start_matches('[');
            let header = header.trim_end().trim_end_matches(']');
            table = split_dotted(header);
            continue;
        }
        let Some(eq) = find_unquoted(trimmed, '=') else {
            continue;
        };
        let value = trimmed[eq + 1..].trim().to_owned();
        depth = update_depth(0, &value);
        out.push(Entry {
            table: table.clone(),
            key: split_dotted(&trimmed[..eq]),
            value,
            line: index + 1,
        });
    }
    out
}

/// The feature names declared in the `[features]` table (not implicit optional-dependency features).
pub(crate) fn declared_features(text: &str) -> Vec<String> {
    entries(text)
        .into_iter()
        .filter(|e| e.table == ["features"])
        .filter_map(|e| e.key.into_iter().next())
        .collect()
}

/// Removes a `#` comment, ignoring `#` inside quoted strings.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' => return &line[..i],
                _ => {}
            },
        }
    }
    line
}

/// Tracks the nesting of `[`/`{` outside quotes, starting from `depth`.
fn update_depth(mut depth: usize, text: &str) -> usize {
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    depth
}

/// The byte index of the first `needle` outside quotes.
fn find_unquoted(text: &str, needle: char) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == needle => return Some(i),
            None => {}
        }
    }
    None
}

/// Splits `a."b.c".d` into `["a", "b.c", "d"]`, trimming whitespace around each part.
fn split_dotted(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => current.push(c),
            None => match c {
                '"' | '\'' => quote = Some(c),
                '.' => parts.push(std::mem::take(&mut current).trim().to_owned()),
                _ => current.push(c),
            },
        }
    }
    parts.push(current.trim().to_owned());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
[package]
name = "demo" # trailing comment
description = "has a # hash and = sign"

[dependencies]
serde.workspace = true
half = { workspace = true, features = [
    "std",
] }

[target.'cfg(target_arch = "x86_64")'.dependencies]
wide = "1.0"

[[bench]]
name = "b"

[features]
default = ["std"]
"cuda" = []
"#;

    #[test]
    fn lists_entries_with_tables_and_lines() {
        let all = entries(MANIFEST);
        let keys: Vec<(Vec<String>, Vec<String>, usize)> = all
            .iter()
            .map(|e| (e.table.clone(), e.key.clone(), e.line))
            .collect();
        let s = |v: &[&str]| v.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            keys,
            vec![
                (s(&["package"]), s(&["name"]), 3),
                (s(&["package"]), s(&["description"]), 4),
                (s(&["dependencies"]), s(&["serde", "workspace"]), 7),
                (s(&["dependencies"]), s(&["half"]), 8),
                (
                    s(&["target", "cfg(target_arch = \"x86_64\")", "dependencies"]),
                    s(&["wide"]),
                    13
                ),
                (s(&["bench"]), s(&["name"]), 16),
                (s(&["features"]), s(&["default"]), 19),
                (s(&["features"]), s(&["cuda"]), 20),
            ]
        );
        assert_eq!(all[0].value, "\"demo\"");
        assert_eq!(all[1].value, "\"has a # hash and = sign\"");
        assert_eq!(
            all[3].value,
            "{ workspace = true, features = [ \"std\", ] }"
        );
    }

    #[test]
    fn finds_declared_features() {
        assert_eq!(
            declared_features(MANIFEST),
            vec!["default".to_owned(), "cuda".to_owned()]
        );
        assert!(declared_features("[package]\nname = \"x\"\n").is_empty());
        // An optional dependency creates an implicit feature, but not a declared one.
        assert!(
            declared_features("[dependencies]\nkv-cuda = { workspace = true, optional = true }\n")
                .is_empty()
        );
    }
}
