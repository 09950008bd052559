//! The model's tokenizer, rebuilt from the GGUF's vocabulary and merges.
//!
//! SmolLM2 uses GPT-2 byte-level BPE. Its GGUF names the pre-tokenizer `smollm`, which is
//! Hugging Face's `Digits(individual_digits = true)` followed by `ByteLevel(add_prefix_space
//! = false, use_regex = true)` (the GPT-2 split pattern); control tokens (type 3, e.g.
//! `<|im_start|>`) are matched whole. This is exactly the pipeline of the numpy reference
//! (`shared/tools/extract_kv.py`), and the token ids are checked against the reference
//! `tokens` tensor. candle's own `TokenizerFromGguf` maps `smollm` to plain GPT-2 splitting
//! without the digit rule, which tokenizes numbers differently, so it is not used.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};
use crate::model::tokenizer_tables;

/// GGUF token type of control tokens (`llama_token_type` CONTROL).
const CONTROL: u32 = 3;

/// Byte-level BPE tokenizer of a GGUF model.
#[derive(Clone, Debug)]
pub struct GgufTokenizer {
    inner: Tokenizer,
}

impl GgufTokenizer {
    /// Builds the tokenizer of the model at `path`.
    ///
    /// # Errors
    /// File and metadata errors; [`Error::Tokenizer`] if the tables do not form a BPE model.
    pub fn load(path: &Path) -> Result<Self> {
        let (tokens, merges, types) = tokenizer_tables(path)?;
        Self::from_tables(&tokens, &merges, &types)
    }

    /// Builds the tokenizer from the vocabulary (id order), the merges (`"a b"`, by rank)
    /// and the token types.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] if the tables do not form a BPE model.
    pub fn from_tables(tokens: &[String], merges: &[String], types: &[u32]) -> Result<Self> {
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|m| {
                let (a, b) = m.split_once(' ').unwrap_or((m.as_str(), ""));
                (a.to_owned(), b.to_owned())
            })
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|source| Error::Tokenizer {
                action: "build the BPE model from the GGUF vocabulary and merges",
                source,
            })?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let control: Vec<AddedToken> = tokens
            .iter()
            .zip(types)
            .filter(|&(_, &ty)| ty == CONTROL)
            .map(|(t, _)| AddedToken::from(t.clone(), true))
            .collect();
        inner
            .add_special_tokens(control)
            .map_err(|source| Error::Tokenizer {
                action: "add the control tokens",
                source,
            })?;
        Ok(Self { inner })
    }

    /// Token ids of `text` (no BOS: the model's GGUF says `add_bos_token = false`).
    ///
    /// # Errors
    /// [`Error::Tokenizer`] if the tokenizer fails.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|source| Error::Tokenizer {
                action: "encode",
                source,
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, control tokens included.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] if an id is out of the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|source| Error::Tokenizer {
                action: "decode",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary in GPT-2's byte-to-unicode alphabet (`Ġ` is the space byte).
    fn toy() -> GgufTokenizer {
        let tokens: Vec<String> = [
            "<|im_start|>",
            "a",
            "b",
            "c",
            "Ġ",
            "1",
            "2",
            "ab",
            "Ġa",
            "Ġab",
            "abc",
            "Ġabc",
        ]
        .map(str::to_owned)
        .to_vec();
        // By rank: "Ġ a" before "a b", so " abc" merges from its space.
        let merges: Vec<String> = ["Ġ a", "a b", "Ġa b", "ab c", "Ġab c"]
            .map(str::to_owned)
            .to_vec();
        let mut types = vec![1; tokens.len()];
        types[0] = CONTROL;
        GgufTokenizer::from_tables(&tokens, &merges, &types).unwrap()
    }

    #[test]
    fn merges_apply_by_rank_and_digits_split_one_by_one() {
        let t = toy();
        // "abc abc 12": [abc][Ġabc][Ġ][1][2]
        assert_eq!(t.encode("abc abc 12").unwrap(), vec![10, 11, 4, 5, 6]);
        assert_eq!(t.decode(&[10, 11, 4, 5, 6]).unwrap(), "abc abc 12");
    }

    #[test]
    fn control_tokens_are_matched_whole() {
        let t = toy();
        assert_eq!(t.encode("<|im_start|>ab").unwrap(), vec![0, 7]);
    }
}
