//! `kv-cuda`: the CUDA backend of kv-codec (kernels compiled by NVRTC through `cudarc`).
//!
//! Status: not yet implemented; this crate exists so that the workspace layering is fixed
//! from the start. It will depend on `lattice-core` for constants and never on `kv-codec`.
#![deny(missing_docs)]
