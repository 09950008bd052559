//! Blanks out comments and string/char literal contents of Rust source, keeping line structure.
//!
//! The tidy checks search for tokens such as `unsafe` or a debugging macro; doing that on the
//! raw text would trip over prose in comments and over test fixtures held in strings (tidy's
//! own tests are full of them). A full lexer is not needed: this one knows line and nested
//! block comments, normal/byte/C strings, raw strings with any number of `#`, char literals
//! and lifetimes, which is every place Rust hides free text.

/// The same source twice, each the same number of lines as the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Masked {
    /// Comments and the contents of string and char literals replaced by spaces.
    pub(crate) code: String,
    /// Only the contents of string and char literals replaced by spaces; comments kept.
    pub(crate) code_and_comments: String,
}

/// Masks `src`; see [`Masked`].
pub(crate) fn mask(src: &str) -> Masked {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Out {
        code: String::with_capacity(src.len()),
        comments: String::with_capacity(src.len()),
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.comment(chars[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i = block_comment(&chars, i, &mut out);
        } else if c == '"' {
            i = string(&chars, i, &mut out);
        } else if let Some(hashes) = raw_string_hashes(&chars, i) {
            i = raw_string(&chars, i, hashes, &mut out);
        } else if c == '\'' {
            i = quote(&chars, i, &mut out);
        } else {
            out.keep(c);
            i += 1;
        }
    }
    Masked {
        code: out.code,
        code_and_comments: out.comments,
    }
}

struct Out {
    code: String,
    comments: String,
}

impl Out {
    /// Code: copied to both outputs.
    fn keep(&mut self, c: char) {
        self.code.push(c);
        self.comments.push(c);
    }

    /// Comment text: blanked in `code`, kept in `comments`.
    fn comment(&mut self, c: char) {
        self.code.push(blank(c));
        self.comments.push(c);
    }

    /// Literal contents: blanked in both.
    fn literal(&mut self, c: char) {
        self.code.push(blank(c));
        self.comments.push(blank(c));
    }
}

fn blank(c: char) -> char {
    if c == '\n' { '\n' } else { ' ' }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Handles `/* ... */` with nesting; returns the index after it.
fn block_comment(chars: &[char], mut i: usize, out: &mut Out) -> usize {
    let mut depth = 0usize;
    while i < chars.len() {
        let next = chars.get(i + 1).copied();
        if chars[i] == '/' && next == Some('*') {
            depth += 1;
            out.comment('/');
            out.comment('*');
            i += 2;
        } else if chars[i] == '*' && next == Some('/') {
            depth -= 1;
            out.comment('*');
            out.comment('/');
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            out.comment(chars[i]);
            i += 1;
        }
    }
    i
}

/// Handles `"..."` (the prefix of `b"` or `c"` was already copied as code).
fn string(chars: &[char], mut i: usize, out: &mut Out) -> usize {
    out.keep('"');
    i += 1;
    while i < chars.len() {
        match chars[i] {
            '"' => {
                out.keep('"');
                return i + 1;
            }
            '\\' => {
                out.literal('\\');
                if let Some(&escaped) = chars.get(i + 1) {
                    out.literal(escaped);
                }
                i += 2;
            }
            c => {
                out.literal(c);
                i += 1;
            }
        }
    }
    i
}

/// If a raw string (`r"`, `r#"`, `br##"`, `cr"`, ...) starts at `i` (at its `r`), the number of `#`.
fn raw_string_hashes(chars: &[char], i: usize) -> Option<usize> {
    if chars[i] != 'r' {
        return None;
    }
    // The `r` must begin a token, optionally after a `b` or `c` prefix that begins one.
    let starts_token = |at: usize| at == 0 || !is_ident(chars[at - 1]);
    let prefixed = i > 0 && matches!(chars[i - 1], 'b' | 'c') && starts_token(i - 1);
    if !starts_token(i) && !prefixed {
        return None;
    }
    let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
    (chars.get(i + 1 + hashes) == Some(&'"')).then_some(hashes)
}

fn raw_string(chars: &[char], mut i: usize, hashes: usize, out: &mut Out) -> usize {
    // Opening `r`, hashes and quote are code.
    for _ in 0..hashes + 2 {
        out.keep(chars[i]);
        i += 1;
    }
    while i < chars.len() {
        let closes = chars[i] == '"'
            && chars[i + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes;
        if closes {
            for _ in 0..hashes + 1 {
                out.keep(chars[i]);
                i += 1;
            }
            return i;
        }
        out.literal(chars[i]);
        i += 1;
    }
    i
}

/// Handles a `'`: a char literal (`'x'`, `'\n'`, `'\u{1F600}'`) is masked, a lifetime or
/// label (`'a`, `'static`) is code.
fn quote(chars: &[char], i: usize, out: &mut Out) -> usize {
    let end = match chars.get(i + 1) {
        // An escape: the literal ends at the next `'` after the escaped character, within the
        // length of the longest escape (`\u{10FFFF}`).
        Some('\\') => (i + 3..chars.len().min(i + 13)).find(|&j| chars[j] == '\''),
        Some(&c) if c != '\'' && chars.get(i + 2) == Some(&'\'') => Some(i + 2),
        _ => None,
    };
    match end {
        Some(end) => {
            out.keep('\'');
            for &c in &chars[i + 1..end] {
                out.literal(c);
            }
            out.keep('\'');
            end + 1
        }
        None => {
            out.keep('\'');
            i + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_comments_and_literals_but_keeps_lines() {
        let src = "let a = \"x // y\"; // note\n/* one /* nested */ still */ let b = 'c';\nfn f<'a>(x: &'a str) {}\n";
        let m = mask(src);
        assert_eq!(m.code.lines().count(), src.lines().count());
        assert_eq!(m.code.chars().count(), src.chars().count());
        let lines: Vec<&str> = m.code.lines().collect();
        assert_eq!(lines[0].trim_end(), "let a = \"      \";");
        assert_eq!(lines[1].trim(), "let b = ' ';");
        assert_eq!(lines[2], "fn f<'a>(x: &'a str) {}");
        let with_comments: Vec<&str> = m.code_and_comments.lines().collect();
        assert_eq!(with_comments[0], "let a = \"      \"; // note");
        assert_eq!(
            with_comments[1],
            "/* one /* nested */ still */ let b = ' ';"
        );
    }

    #[test]
    fn masks_raw_byte_and_escaped_strings() {
        let src = "r#\"a \"quoted\" unsafe {\"#; br\"x\"; b\"\\\"q\"; c\"z\"; r#type; '\\''; '\\u{1F600}'; b'\\n';";
        let m = mask(src);
        assert!(!m.code.contains("unsafe"), "{}", m.code);
        assert!(!m.code.contains('q'), "{}", m.code);
        assert!(!m.code.contains('x'), "{}", m.code);
        assert!(!m.code.contains('z'), "{}", m.code);
        assert!(m.code.contains("r#type"), "{}", m.code);
        assert!(!m.code.contains("1F600"), "{}", m.code);
    }

    #[test]
    fn multi_line_strings_keep_their_newlines() {
        let src = "let s = \"line one\nline two\";\nunsafe {}";
        let m = mask(src);
        let lines: Vec<&str> = m.code.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2], "unsafe {}");
        assert!(!lines[1].contains("two"));
    }
}
