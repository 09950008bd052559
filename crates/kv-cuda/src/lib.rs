//! `kv-cuda`: the CUDA backend of kv-codec: encode and decode kernels, written in CUDA C and
//! compiled by NVRTC at run time through `cudarc`, that produce the same bytes (and decode to
//! the same bits) as the CPU codecs.
//!
//! The crate knows nothing of kv-codec: a codec reaches it as a [`KernelCodec`], the handful
//! of numbers its kernels need (q, the scale multipliers, the Lloyd–Max levels, ...), which
//! kv-codec's `cuda` feature builds from its own codecs. A [`Plan`] turns that into a
//! parameter block, tables and launch geometry (plain data, testable anywhere); a [`Device`]
//! compiles the kernels once per architecture and runs plans loaded on it ([`DevicePlan`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use kv_cuda::{Device, KernelCodec, Plan, Values};
//!
//! if !kv_cuda::is_available() {
//!     return Ok(()); // no driver, no NVRTC or no GPU on this machine
//! }
//! let device = Arc::new(Device::new(0)?);
//! let plan = device.load(Plan::new(KernelCodec::Bf16 { head_dim: 128 })?)?;
//! let x = device.upload(&vec![0.5f32; 4 * 128])?;
//! let mut bytes = device.zeros::<u8>(plan.plan().encoded_len(4))?;
//! plan.encode(Values::F32(&x), &mut bytes)?;
//! # Ok::<(), kv_cuda::Error>(())
//! ```
//!
//! Decode attention runs on a layer's packed pages in device memory ([`DevicePages`], with
//! the bytes kv-codec's cache holds): [`DeviceAttention`] rotates the queries once, decodes
//! keys and values only to their rotated domain, splits long contexts over many warps
//! (online softmax in f32, merged per query head) and rotates each output back once (see
//! the [`attention`] module and `attention.cu`).
//!
//! # Building without CUDA
//! `cudarc` is used with `dynamic-loading`: nothing CUDA is needed to build, and the driver
//! and NVRTC are looked up when a [`Device`] is made. [`is_available`] checks for them (and
//! for a device) without the process abort that a missing library would otherwise cause.
//!
//! # Bit-exactness
//! The kernels repeat the CPU's floating-point operations in the CPU's order: NVRTC runs
//! with `--fmad=false`, IEEE division and square root and no flush-to-zero; rounding is
//! `rintf` (ties to even); sums run in the fixed orders kv-codec documents; the Hadamard
//! transform follows the operation order of the `hadamard` crate's scalar tier, with its
//! sign masks and mixing table; the E8 basis comes from `lattice-core`. See `kernels.cu`.
//!
//! # Scope
//! Head dimensions that are multiples of 8 up to 256 (a vector fits one warp). Codecs:
//! E8 Voronoi (q ≤ 256, raw or joint packing), the compatibility D4/E8 box codecs (boxes of
//! fewer than 2^64 points, per-block or joint packing), TurboQuant-MSE, FP8 E4M3, INT2–8 and
//! bf16, with groups that are multiples of 8 values. Attention on pages: the same head
//! dimensions, Voronoi codecs with q and the scale count powers of two (raw packing), and
//! up to [`MAX_GROUP`] query heads per KV head.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod attention;
mod error;
#[allow(unsafe_code)]
mod launch;
mod params;
mod plan;
mod source;

pub use attention::{MAX_GROUP, PAGE_ALIGN, PageLayout, PagesShape};
pub use error::Error;
pub use launch::{
    Device, DeviceAttention, DeviceBuffer, DevicePages, DevicePlan, Element, PagePool, Values,
    ValuesMut, is_available,
};
pub use params::{AttnParams, Params};
pub use plan::{
    BLOCK_THREADS, BoxLattice, Dtype, KernelCodec, Launch, MAX_CHUNK, MAX_HEAD_DIM, MAX_VORONOI_Q,
    Op, Plan,
};
pub use source::kernel_source;
