//! `kv-audit`: statistics of real KV tensors and rate–distortion sweeps of `kv-codec`'s
//! codecs, with the `kvc` command on top.
//!
//! The library holds all the logic so it can be tested; `src/bin/kvc.rs` only passes the
//! process arguments to [`cli::parse`] and [`cli::run`].
//!
//! * [`safetensors`]: a small reader and writer of the safetensors format.
//! * [`source`]: vectors to sweep over, from a file's `k.*` / `v.*` tensors or a seeded
//!   Gaussian ([`gaussian`]).
//! * [`audit`]: per-head statistics of K and V before and after rotation, each next to its
//!   value for Gaussian data of the same size ([`stats`] holds the formulas).
//! * [`plan`]: per-layer codec and rate from a quick rate–distortion probe, for a target SNR
//!   or a byte budget, checked against a real encode.
//! * [`chart`]: SVG and PNG charts; [`report`] also writes the Markdown and JSON of
//!   `kvc report`.
//! * [`metrics`]: rel-MSE, SNR and Shannon gap, one definition each.
//! * [`rd`]: the sweep itself (rate, distortion per layer, throughput) and its report;
//!   [`report`] prints it as a table and writes it as JSON.
//! * [`slice`](mod@slice): cuts a file down to its first tokens (how the committed sample
//!   is made).
//! * [`cli`]: the command line.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod chart;
pub mod cli;
mod error;
pub mod gaussian;
pub mod metrics;
pub mod plan;
pub mod rd;
pub mod report;
pub mod safetensors;
pub mod slice;
pub mod source;
pub mod stats;

pub use error::{Error, Result};
