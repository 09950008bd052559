//! The evaluation text: a UTF-8 file tokenized once, and the passages cut from it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::tokenizer::GgufTokenizer;

/// The text every measurement uses unless told otherwise: Pride and Prejudice from
/// `shared/data/text` beside the workspace.
pub fn default_text_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/text/prideprejudice.txt")
}

/// A tokenized text.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// The file it came from.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// Its token ids.
    pub tokens: Vec<u32>,
}

impl Corpus {
    /// Reads and tokenizes `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read (or is not UTF-8); tokenizer errors.
    pub fn load(path: &Path, tokenizer: &GgufTokenizer) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            action: "cannot read",
            path: path.to_owned(),
            source,
        })?;
        let tokens = tokenizer.encode(&text)?;
        Ok(Self {
            path: path.to_owned(),
            text,
            tokens,
        })
    }

    /// Start offsets of `count` windows of `len` tokens, spread evenly over the tokens from
    /// `skip` on (the first window starts at `skip`, the last ends at the end of the text).
    ///
    /// # Errors
    /// [`Error::TextTooShort`] when the windows do not fit.
    pub fn passages(&self, len: usize, count: usize, skip: usize) -> Result<Vec<usize>> {
        let available = self.tokens.len().saturating_sub(skip);
        if count == 0 || len > available {
            return Err(Error::TextTooShort {
                path: self.path.clone(),
                needed: len,
                available,
            });
        }
        let room = available - len;
        Ok((0..count)
            .map(|i| {
                skip + if count == 1 {
                    0
                } else {
                    room * i / (count - 1)
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(n: usize) -> Corpus {
        Corpus {
            path: PathBuf::from("t.txt"),
            text: String::new(),
            tokens: (0..n as u32).collect(),
        }
    }

    #[test]
    fn passages_span_the_text() {
        assert_eq!(corpus(100).passages(10, 3, 0).unwrap(), vec![0, 45, 90]);
        assert_eq!(corpus(100).passages(10, 1, 5).unwrap(), vec![5]);
        assert_eq!(corpus(100).passages(100, 2, 0).unwrap(), vec![0, 0]);
        assert!(matches!(
            corpus(100).passages(96, 2, 5),
            Err(Error::TextTooShort {
                needed: 96,
                available: 95,
                ..
            })
        ));
    }
}
