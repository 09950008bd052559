//! `kv-audit`: statistics of real KV tensors, rate–distortion sweeps, planning and reports.
//!
//! Status: not yet implemented; it will sit on top of `kv-codec`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
