//! `kv-codec`: compression of LLM key/value caches by lattice vector quantisation.
//!
//! Status: this crate is the future public entry point (codec trait, packed format, paged
//! cache, attention on compressed pages). It holds no codec yet; the leaf crates it will
//! build on, [`lattice_core`] and [`hadamard`], are complete.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use hadamard;
pub use lattice_core;
