//! Checks on the text of one Rust source file: the `//!` header, `// SAFETY:` comments,
//! leftover debugging macros, and `#![forbid(unsafe_code)]` in crate roots.

use super::Violation;
use super::source::{self, Masked};

/// Rule a: the first line of every `.rs` file is a `//!` doc comment saying what it is for.
pub(crate) fn check_header(path: &str, text: &str) -> Vec<Violation> {
    let first = text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .lines()
        .next()
        .unwrap_or("");
    if first.starts_with("//!") {
        Vec::new()
    } else {
        vec![Violation::new(
            path,
            1,
            "file-header",
            "the first line must be a `//!` comment saying what the file is for",
        )]
    }
}

/// The forms of `unsafe` that need a written justification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnsafeForm {
    Block,
    Fn,
    Impl,
}

/// Rule b: every `unsafe {`, `unsafe fn` and `unsafe impl` in code has a `// SAFETY:` comment
/// on its line or within the 3 lines above it (lines that are themselves `//` comments do not
/// count towards the 3, so a long SAFETY paragraph is fine). An `unsafe fn` may instead carry
/// a `# Safety` section in its doc comment, which is where its callers' obligations belong.
pub(crate) fn check_safety_comments(path: &str, text: &str, masked: &Masked) -> Vec<Violation> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (line, form) in unsafe_sites(&masked.code) {
        let documented = has_safety_comment(&lines, line)
            || (form == UnsafeForm::Fn && has_safety_doc_section(&lines, line));
        if !documented {
            let message = match form {
                UnsafeForm::Block => {
                    "`unsafe` block without a `// SAFETY:` comment in the 3 lines above"
                }
                UnsafeForm::Impl => {
                    "`unsafe impl` without a `// SAFETY:` comment in the 3 lines above"
                }
                UnsafeForm::Fn => {
                    "`unsafe fn` without a `/// # Safety` doc section or a `// SAFETY:` comment"
                }
            };
            out.push(Violation::new(path, line + 1, "safety-comment", message));
        }
    }
    out
}

/// 0-based lines of the `unsafe` keywords in `code` (already masked) that start a block, fn or impl.
fn unsafe_sites(code: &str) -> Vec<(usize, UnsafeForm)> {
    let chars: Vec<char> = code.chars().collect();
    let mut sites = Vec::new();
    let mut line = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
        }
        if !(c.is_alphanumeric() || c == '_') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        if word != "unsafe" {
            continue;
        }
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        let rest: String = chars[j..chars.len().min(j + 64)].iter().collect();
        let followed_by = |kw: &str| {
            rest.starts_with(kw)
                && !rest[kw.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
        };
        // `unsafe fn name` declares a function; `unsafe fn(` is a function pointer type.
        let declares_fn = followed_by("fn")
            && rest[2..]
                .trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_');
        let form = if rest.starts_with('{') {
            Some(UnsafeForm::Block)
        } else if declares_fn {
            Some(UnsafeForm::Fn)
        } else if followed_by("impl") {
            Some(UnsafeForm::Impl)
        } else {
            None
        };
        if let Some(form) = form {
            sites.push((line, form));
        }
    }
    sites
}

fn has_safety_comment(lines: &[&str], line: usize) -> bool {
    const MARK: &str = "// SAFETY:";
    if lines.get(line).is_some_and(|l| l.contains(MARK)) {
        return true;
    }
    let mut budget = 3;
    let mut k = line;
    while k > 0 && budget > 0 {
        k -= 1;
        let above = lines[k].trim_start();
        if above.contains(MARK) {
            return true;
        }
        if !above.starts_with("//") {
            budget -= 1;
        }
    }
    false
}

/// Walks up through the doc comments, comments and attributes directly above `line`, looking
/// for a `/// # Safety` heading.
fn has_safety_doc_section(lines: &[&str], line: usize) -> bool {
    let mut k = line;
    while k > 0 {
        k -= 1;
        let above = lines[k].trim_start();
        if let Some(doc) = above.strip_prefix("///") {
            if doc.trim_start().starts_with("# Safety") {
                return true;
            }
        } else if !(above.starts_with("//") || above.starts_with("#[")) {
            return false;
        }
    }
    false
}

/// The debugging macros that must not be committed, with their opening parenthesis. Written
/// in pieces so that this file does not contain the needles it searches for.
const DEBUG_MACROS: [&str; 3] = [
    concat!("to", "do!("),
    concat!("db", "g!("),
    concat!("unimple", "mented!("),
];

/// Rule c: no leftover `todo!`, `dbg!` or `unimplemented!` calls. Comments are searched too
/// (doc examples are compiled code), string contents are not (tidy's own fixtures live there).
pub(crate) fn check_debug_macros(path: &str, masked: &Masked) -> Vec<Violation> {
    let mut out = Vec::new();
    for (index, line) in masked.code_and_comments.lines().enumerate() {
        for needle in DEBUG_MACROS {
            let hit = line.match_indices(needle).any(|(at, _)| {
                !line[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if hit {
                let name = &needle[..needle.len() - 1];
                out.push(Violation::new(
                    path,
                    index + 1,
                    "debug-macro",
                    format!("remove `{name}` before committing"),
                ));
            }
        }
    }
    out
}

/// Rule f: the crate root declares `#![forbid(unsafe_code)]` (in code, not in a comment).
pub(crate) fn check_forbid_unsafe(path: &str, masked: &Masked) -> Vec<Violation> {
    let compact: String = masked.code.chars().filter(|c| !c.is_whitespace()).collect();
    let found = compact.match_indices("#![forbid(").any(|(at, open)| {
        let args = &compact[at + open.len()..];
        let args = &args[..args.find(')').unwrap_or(args.len())];
        args.split(',').any(|lint| lint == "unsafe_code")
    });
    if found {
        Vec::new()
    } else {
        vec![Violation::new(
            path,
            1,
            "forbid-unsafe",
            "this crate root must declare `#![forbid(unsafe_code)]`",
        )]
    }
}

/// Runs rules a, b and c on one file.
pub(crate) fn check_file(path: &str, text: &str) -> Vec<Violation> {
    let masked = source::mask(text);
    let mut out = check_header(path, text);
    out.extend(check_safety_comments(path, text, &masked));
    out.extend(check_debug_macros(path, &masked));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(violations: &[Violation], rule: &str) -> Vec<usize> {
        violations
            .iter()
            .filter(|v| v.rule == rule)
            .map(|v| v.line)
            .collect()
    }

    #[test]
    fn header_must_be_first_line() {
        assert!(check_header("a.rs", "//! Good.\nfn main() {}\n").is_empty());
        assert!(check_header("a.rs", "\u{feff}//! Good with a BOM.\n").is_empty());
        let v = check_header("a.rs", "\n//! Too late.\n");
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].to_string(),
            "a.rs:1: file-header: the first line must be a `//!` comment saying what the file is for"
        );
        assert_eq!(check_header("a.rs", "// Plain comment.\n").len(), 1);
        assert_eq!(check_header("a.rs", "").len(), 1);
    }

    #[test]
    fn unsafe_without_safety_comment_is_flagged() {
        let src = r#"//! Fixture.
fn f() {
    let x = unsafe { g() };
}
unsafe impl Send for T {}
pub unsafe fn h() {}
"#;
        let v = check_file("f.rs", src);
        assert_eq!(lines_of(&v, "safety-comment"), vec![3, 5, 6]);
    }

    #[test]
    fn safety_comments_and_docs_are_accepted() {
        let src = r#"//! Fixture.
fn f() {
    // SAFETY: `p` is valid for reads, see above.
    let x = unsafe { *p };
    let y = unsafe { *q }; // SAFETY: same invariant as `x`.
    // SAFETY: a long justification
    // that spans several comment lines
    // and then some more
    // before the block.
    unsafe {
        g();
    }
}

// SAFETY: `T` holds no thread-bound state.
unsafe impl Send for T {}

/// Does a thing.
///
/// # Safety
/// `p` must be valid.
#[inline]
#[target_feature(enable = "avx2")]
pub unsafe fn h(p: *const u8) {}
"#;
        assert_eq!(check_file("f.rs", src), Vec::new());
    }

    #[test]
    fn safety_comment_too_far_above_is_flagged() {
        let src = "//! Fixture.\n// SAFETY: stale.\nlet a = 1;\nlet b = 2;\nlet c = 3;\nunsafe { g() };\n";
        assert_eq!(
            lines_of(&check_file("f.rs", src), "safety-comment"),
            vec![6]
        );
        // A `# Safety` doc section does not excuse an `unsafe` block.
        let src = "//! Fixture.\n/// # Safety\nunsafe { g() };\n";
        assert_eq!(
            lines_of(&check_file("f.rs", src), "safety-comment"),
            vec![3]
        );
    }

    #[test]
    fn unsafe_in_comments_strings_and_identifiers_is_ignored() {
        let src = r##"//! Fixture about unsafe { blocks }.
#![forbid(unsafe_code)]
// unsafe { in a comment }
/* unsafe fn in a block comment */
const S: &str = "unsafe { in a string }";
const R: &str = r#"unsafe impl "quoted" X"#;
fn not_unsafe_fn() {}
let unsafe_fn = 1;
let f: unsafe fn(u8) = g; // A function pointer type, not a declaration.
unsafe fn
    split_over_lines() {}
"##;
        assert_eq!(
            lines_of(&check_file("f.rs", src), "safety-comment"),
            vec![10]
        );
    }

    #[test]
    fn debug_macros_are_flagged_outside_strings() {
        let todo = concat!("to", "do!()");
        let dbg = concat!("db", "g!(x)");
        let unimpl = concat!("unimple", "mented!()");
        let src = format!(
            "//! Fixture.\nfn a() {{ {todo} }}\nfn b() {{ {dbg}; }}\n/// {unimpl}\nfn c() {{}}\nconst S: &str = \"{todo}\";\nfn my_{todo} {{}}\n"
        );
        let v = check_file("f.rs", &src);
        assert_eq!(lines_of(&v, "debug-macro"), vec![2, 3, 4]);
        assert!(v[0].message.contains("to"));
    }

    #[test]
    fn forbid_unsafe_must_be_declared_in_code() {
        let ok = "//! Root.\n#![forbid(unsafe_code)]\n";
        assert!(check_forbid_unsafe("lib.rs", &source::mask(ok)).is_empty());
        let ok_list = "//! Root.\n#![forbid(\n    missing_docs,\n    unsafe_code,\n)]\n";
        assert!(check_forbid_unsafe("lib.rs", &source::mask(ok_list)).is_empty());
        for bad in [
            "//! Root.\n#![deny(unsafe_code)]\n",
            "//! Root.\n// #![forbid(unsafe_code)]\n",
            "//! Root.\n#![forbid(unsafe_op_in_unsafe_fn)]\n",
            "//! Root.\n",
        ] {
            let v = check_forbid_unsafe("lib.rs", &source::mask(bad));
            assert_eq!(v.len(), 1, "not flagged: {bad:?}");
            assert_eq!(v[0].rule, "forbid-unsafe");
        }
    }
}
