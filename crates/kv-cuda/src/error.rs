//! The error type of `kv-cuda`: availability, driver and compiler failures, caller misuse,
//! limits, and faults the kernels found in the data, kept apart.

/// Errors of `kv-cuda`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- availability and the driver ---
    /// A CUDA library could not be loaded on this machine.
    #[error(
        "the {library} library was not found on this machine (no NVIDIA driver or CUDA toolkit)"
    )]
    LibraryMissing {
        /// `"CUDA driver (libcuda)"` or `"NVRTC (libnvrtc)"`.
        library: &'static str,
    },
    /// The ordinal names no device.
    #[error("no CUDA device {ordinal}: this machine has {count}")]
    NoSuchDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// Devices present.
        count: usize,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver call {op} failed: {name} ({code})")]
    Driver {
        /// What was being done.
        op: &'static str,
        /// The `CUresult` value.
        code: u32,
        /// Its symbolic name, as the driver reports it.
        name: String,
    },
    /// NVRTC refused the kernel source (a bug of this crate, or an unsupported toolkit).
    #[error("NVRTC could not compile the kernels for {arch}: {log}")]
    Compile {
        /// The target architecture, e.g. `compute_90`.
        arch: String,
        /// The compiler's log.
        log: String,
    },

    // --- caller misuse and limits ---
    /// The kernels do not implement this shape or parameter.
    #[error("{what} = {value} is not supported by the CUDA kernels ({supported})")]
    Unsupported {
        /// Which parameter.
        what: &'static str,
        /// The value given.
        value: u64,
        /// What the kernels support.
        supported: &'static str,
    },
    /// A buffer does not have the length the operation needs.
    #[error("{what} has length {actual}, expected {expected}")]
    LengthMismatch {
        /// Which buffer.
        what: &'static str,
        /// The length needed.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// The query heads are not a multiple of the KV heads.
    #[error("{q_heads} query heads are not a positive multiple of {kv_heads} KV heads")]
    HeadsMismatch {
        /// Query heads given.
        q_heads: usize,
        /// KV heads of the pages.
        kv_heads: usize,
    },
    /// A token count is zero where tokens are needed, or exceeds the pages' capacity.
    #[error(
        "{tokens} tokens do not fit pages of {capacity} tokens per stream (or none were given)"
    )]
    TooManyTokens {
        /// Tokens asked for.
        tokens: usize,
        /// Tokens per stream the pages hold.
        capacity: usize,
    },
    /// A page index is outside the pool.
    #[error("page {page} of stream {stream} is outside pages of {streams} streams × {pages}")]
    PageOutOfRange {
        /// Stream asked for.
        stream: usize,
        /// Page asked for.
        page: usize,
        /// Streams of the pool.
        streams: usize,
        /// Pages per stream.
        pages: usize,
    },
    /// A batch is larger than one launch handles.
    #[error("a batch of {vectors} vectors exceeds the {limit} vectors of one launch")]
    BatchTooLarge {
        /// Vectors in the batch.
        vectors: usize,
        /// The most one launch takes.
        limit: usize,
    },

    // --- faults found in the data (the same as the CPU codecs report) ---
    /// An input vector holds NaN or an infinity.
    #[error("input vector {vector} holds a non-finite value (NaN or infinity)")]
    NonFinite {
        /// Index of the first such vector in the batch.
        vector: usize,
    },
    /// A vector's bytes hold a value no encoder writes.
    #[error("corrupt payload in vector {vector}: {reason}")]
    CorruptPayload {
        /// Index of the first such vector in the batch.
        vector: usize,
        /// What is wrong, in the words of the CPU decoder.
        reason: &'static str,
    },
}
