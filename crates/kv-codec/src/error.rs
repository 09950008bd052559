//! The error type of `kv-codec`: bad data, caller misuse and limits, kept apart.

/// Errors of `kv-codec`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- caller misuse ---
    /// The head dimension is not one the rotation supports.
    #[error(
        "head_dim {head_dim} is not supported; supported head_dims: {}",
        supported_head_dims_text()
    )]
    UnsupportedHeadDim {
        /// The head dimension asked for.
        head_dim: usize,
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
    /// An input vector holds NaN or an infinity; nothing was encoded.
    #[error("input vector {vector} holds a non-finite value (NaN or infinity)")]
    NonFinite {
        /// Index of the offending vector in the batch.
        vector: usize,
    },
    /// A codec parameter is out of its supported range.
    #[error("codec parameter {name} = {value} is not supported ({allowed})")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// Value given.
        value: u64,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A codec specification string could not be parsed.
    #[error("unknown codec spec {spec:?}; `kvc codecs` lists the valid ones")]
    UnknownSpec {
        /// The text given.
        spec: String,
    },
    /// A protection string could not be parsed.
    #[error(
        "bad protection {text:?}: expected S:R:C or S:R:C:int8 (sink, recent and key-centre tokens, window format)"
    )]
    BadProtection {
        /// The text given.
        text: String,
    },
    /// No codec of the requested family fits the requested rate.
    #[error("no {family} codec fits {bits_per_value} bits per value at head_dim {head_dim}")]
    RateUnreachable {
        /// Codec family.
        family: &'static str,
        /// Requested rate.
        bits_per_value: f64,
        /// Head dimension.
        head_dim: usize,
    },

    /// A cache layer index past the last layer.
    #[error("layer {layer} does not exist (the cache has {layers} layers)")]
    LayerOutOfRange {
        /// The layer asked for.
        layer: usize,
        /// Layers in the cache.
        layers: usize,
    },
    /// A token range a cache layer does not hold: beyond its length, or evicted by the
    /// sliding window or a page-range load.
    #[error("tokens {start}..{end} are not held (the layer holds {held_start}..{held_end})")]
    TokensNotHeld {
        /// First token asked for.
        start: usize,
        /// One past the last token asked for.
        end: usize,
        /// First token the layer holds.
        held_start: usize,
        /// One past the last token the layer holds (its length).
        held_end: usize,
    },
    /// The query heads are not a positive multiple of the cache's KV heads (GQA).
    #[error("{q_heads} query heads are not a positive multiple of {kv_heads} KV heads")]
    HeadsMismatch {
        /// Query heads given.
        q_heads: usize,
        /// KV heads of the cache.
        kv_heads: usize,
    },
    /// Values of one dtype where the cache was configured for another.
    #[error("{what} are {actual:?}, the cache holds {expected:?}")]
    DtypeMismatch {
        /// Which tensor.
        what: &'static str,
        /// The cache's dtype.
        expected: crate::format::Dtype,
        /// The dtype given.
        actual: crate::format::Dtype,
    },
    /// A cache layer's configuration is invalid (for example a codec that does not support
    /// the cache's head_dim).
    #[error("layer {layer}: {source}")]
    InvalidLayer {
        /// The layer.
        layer: usize,
        /// What is wrong with it.
        #[source]
        source: Box<Error>,
    },
    /// A cache plan names a different number of layers than the model has.
    #[error("the plan has {actual} layers, the cache needs {expected}")]
    PlanLayers {
        /// Layers the cache needs.
        expected: usize,
        /// Layers in the plan.
        actual: usize,
    },
    /// A cache plan is not valid JSON of the plan schema (or a spec in it does not parse).
    #[error("invalid cache plan: {0}")]
    PlanJson(#[from] serde_json::Error),

    // --- bad data ---
    /// The data ends before the structure it should hold.
    #[error("data truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The data does not start with the kv-codec magic bytes.
    #[error("not a kv-codec stream (bad magic bytes)")]
    BadMagic,
    /// The stream's format version is newer than this library.
    #[error("format version {version} is not supported (this library reads up to {supported})")]
    UnsupportedVersion {
        /// Version found.
        version: u16,
        /// Newest version supported.
        supported: u16,
    },
    /// The header names a codec this library does not know.
    #[error("unknown codec id {id} in header")]
    UnknownCodecId {
        /// Codec id found.
        id: u16,
    },
    /// The header is self-inconsistent or holds a reserved value.
    #[error("corrupt header: {field}")]
    CorruptHeader {
        /// Which field is wrong.
        field: &'static str,
    },
    /// A vector's payload holds a value no encoder produces.
    #[error("corrupt payload in vector {vector}: {reason}")]
    CorruptPayload {
        /// Index of the vector within the batch.
        vector: usize,
        /// What is wrong.
        reason: &'static str,
    },

    // --- I/O ---
    /// Reading or writing a cache file failed (a file that ends early is
    /// [`Error::Truncated`] instead).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    // --- backends ---
    /// The requested backend is not compiled in, or this machine cannot run it.
    #[error("the {backend} backend is not available: {reason}")]
    BackendUnavailable {
        /// The backend asked for.
        backend: &'static str,
        /// Why it is not available.
        reason: &'static str,
    },
    /// The CUDA backend failed (driver, compiler, or a shape its kernels do not implement).
    #[cfg(feature = "cuda")]
    #[error(transparent)]
    Cuda(#[from] kv_cuda::Error),

    // --- from the leaf crates ---
    /// A lattice-core error (codebook parameters).
    #[error(transparent)]
    Lattice(#[from] lattice_core::Error),
}

fn supported_head_dims_text() -> String {
    let dims: Vec<String> = hadamard::supported_lengths(8..=1024)
        .filter(|d| d % 8 == 0)
        .map(|d| d.to_string())
        .collect();
    format!(
        "{} (multiples of 8 that are 2^k or 2^k·3, 2^k·5, 2^k·7, up to 4096)",
        dims.join(", ")
    )
}
