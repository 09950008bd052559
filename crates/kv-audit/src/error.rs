//! The error type of `kv-audit`: command-line misuse, bad input data, I/O and codec errors,
//! kept apart so `kvc` can choose its exit status and the tests can match on the cause.

use std::path::PathBuf;

/// Errors of `kv-audit` and of the `kvc` command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- command-line misuse ---
    /// No subcommand was given.
    #[error("no command given")]
    MissingCommand,
    /// The first argument is not a known subcommand.
    #[error("unknown command {command:?}")]
    UnknownCommand {
        /// What was given.
        command: String,
    },
    /// An option the subcommand does not take.
    #[error("`{command}` takes no option {option:?}")]
    UnknownOption {
        /// The subcommand.
        command: &'static str,
        /// The option given.
        option: String,
    },
    /// A bare argument where only options are accepted.
    #[error("`{command}` takes no positional argument {argument:?}")]
    UnexpectedArgument {
        /// The subcommand.
        command: &'static str,
        /// The argument given.
        argument: String,
    },
    /// An option that needs a value came last.
    #[error("option {option} needs a value")]
    MissingValue {
        /// The option.
        option: &'static str,
    },
    /// An option's value does not parse or is out of range.
    #[error("invalid value {value:?} for {option}: expected {expected}")]
    InvalidValue {
        /// The option.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A `--codec` value that is not a codec spec.
    #[error("invalid value {value:?} for --codec: {source}")]
    InvalidCodecSpec {
        /// The value given.
        value: String,
        /// Why kv-codec rejected it.
        #[source]
        source: kv_codec::Error,
    },
    /// A required option is missing.
    #[error("`{command}` needs {option}")]
    MissingOption {
        /// The subcommand.
        command: &'static str,
        /// The missing option.
        option: &'static str,
    },
    /// An option given more than once where only one is allowed.
    #[error("option {option} given more than once")]
    RepeatedOption {
        /// The option.
        option: &'static str,
    },
    /// Two options that exclude each other, or one that needs another.
    #[error("option {option} {problem} {other}")]
    ConflictingOptions {
        /// The option at fault.
        option: &'static str,
        /// "cannot be used with" or "needs".
        problem: &'static str,
        /// The other option.
        other: &'static str,
    },

    // --- I/O ---
    /// Reading or writing a file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// "cannot read", "cannot write", ...
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Writing to standard output failed.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),

    // --- bad data ---
    /// A safetensors file is shorter than its structure says.
    #[error("{}: truncated safetensors file: {needed} bytes needed, {available} available", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// A safetensors header that is not the JSON object the format prescribes.
    #[error("{}: the safetensors header is not valid JSON: {source}", path.display())]
    HeaderJson {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A safetensors header entry missing a field or holding one of the wrong form.
    #[error("{}: tensor {tensor:?} has a bad {field} field", path.display())]
    BadTensorEntry {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Which field.
        field: &'static str,
    },
    /// A tensor whose byte range does not match its dtype and shape, or leaves the file.
    #[error(
        "{}: tensor {tensor:?} spans bytes {start}..{end} of {data_len}, but its shape needs {expected} bytes",
        path.display()
    )]
    TensorBounds {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// First byte (relative to the data section).
        start: u64,
        /// One past the last byte.
        end: u64,
        /// Length of the data section.
        data_len: u64,
        /// Bytes the dtype and shape need.
        expected: u64,
    },
    /// A tensor of a dtype this tool cannot turn into f32.
    #[error("tensor {tensor:?} has dtype {dtype}; K/V tensors must be F16, BF16 or F32")]
    UnsupportedDtype {
        /// The tensor's name.
        tensor: String,
        /// Its dtype as written in the file.
        dtype: String,
    },
    /// A K/V tensor that is not `[kv_heads, tokens, head_dim]`.
    #[error(
        "tensor {tensor:?} has shape {shape:?}; K/V tensors must be [kv_heads, tokens, head_dim]"
    )]
    BadShape {
        /// The tensor's name.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// K/V tensors of one file disagree on head_dim.
    #[error("tensor {tensor:?} has head_dim {actual}, but earlier K/V tensors have {expected}")]
    HeadDimMismatch {
        /// The tensor's name.
        tensor: String,
        /// head_dim of the first K/V tensor.
        expected: usize,
        /// head_dim of this one.
        actual: usize,
    },
    /// A file without any `k.*` or `v.*` tensor.
    #[error("{}: no `k.*` or `v.*` tensors", path.display())]
    NoKvTensors {
        /// The file.
        path: PathBuf,
    },
    /// `slice --tokens` asks for more tokens than a tensor holds.
    #[error("tensor {tensor:?} holds {available} tokens, fewer than the {requested} asked for")]
    TooFewTokens {
        /// The tensor's name.
        tensor: String,
        /// Tokens asked for.
        requested: usize,
        /// Tokens present.
        available: usize,
    },
    /// A K/V value that is NaN or infinite (no codec accepts those).
    #[error("tensor {tensor:?} holds a non-finite value")]
    NonFinite {
        /// The tensor's name.
        tensor: String,
    },

    // --- limits ---
    /// A Gaussian source too large to hold in memory.
    #[error(
        "--gaussian {vectors} × --head-dim {head_dim} values is more than this tool holds ({max})"
    )]
    SourceTooLarge {
        /// Vectors asked for.
        vectors: usize,
        /// Values per vector.
        head_dim: usize,
        /// The most values allowed.
        max: usize,
    },

    /// A head_dim the Hadamard transform does not support, so the audit cannot rotate.
    #[error("head_dim {head_dim} has no Hadamard rotation: {source}")]
    Rotation {
        /// The head_dim.
        head_dim: usize,
        /// The transform's error.
        #[source]
        source: hadamard::Error,
    },
    /// A plan's target that no candidate codec of a layer can meet is not an error (the
    /// layer stays uncompressed), but a byte budget below the cheapest plan is.
    #[error(
        "a budget of {budget_bpv} bits per value is below the cheapest plan ({cheapest_bpv:.3})"
    )]
    BudgetTooSmall {
        /// The budget asked for.
        budget_bpv: f64,
        /// Bits per value of the cheapest candidate in every layer.
        cheapest_bpv: f64,
    },
    /// A plan whose layer count differs from the source it is checked against.
    #[error("the plan has {plan} layers, the source {source_layers}")]
    PlanMismatch {
        /// Layers in the plan.
        plan: usize,
        /// Layers in the source.
        source_layers: usize,
    },
    /// A saved report that cannot be read back.
    #[error("{}: not a kvc rd report: {source}", path.display())]
    BadReport {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A sensitivity file (`kv-eval sensitivity --json`) that cannot be read back.
    #[error("{}: not a kv-eval sensitivity report: {source}", path.display())]
    BadSensitivity {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A sensitivity measured on a model of another number of layers than the source.
    #[error("the sensitivity has {sensitivity} layers, the source {source_layers}")]
    SensitivityMismatch {
        /// Layers in the sensitivity.
        sensitivity: usize,
        /// Layers in the source.
        source_layers: usize,
    },
    /// Drawing a chart failed.
    #[error("cannot draw {}: {message}", path.display())]
    Chart {
        /// The chart file.
        path: PathBuf,
        /// The plotting backend's error, as text (its error type is generic over the
        /// backend and not `'static`).
        message: String,
    },

    // --- from kv-codec ---
    /// Building or running a codec failed.
    #[error("codec {spec}: {source}")]
    Codec {
        /// The codec spec (or the rate asked for, as `bpv R`).
        spec: String,
        /// kv-codec's error.
        #[source]
        source: kv_codec::Error,
    },
    /// Writing the JSON report failed.
    #[error("cannot serialise the report: {0}")]
    Json(#[source] serde_json::Error),

    // --- `kvc eval` ---
    /// The `kv-eval` binary is neither beside `kvc` nor on `PATH`.
    #[error(
        "`kvc eval` runs the model runner `kv-eval`, a binary of its own (kvc stays free of the \
         model runtime), found neither beside kvc ({}) nor on PATH: build it with \
         `cargo build --release -p kv-eval` (or run `cargo run --release -p kv-eval -- ...`)",
        beside.display()
    )]
    EvalToolMissing {
        /// Where it was looked for first.
        beside: PathBuf,
    },
    /// `kv-eval` could not be started.
    #[error("cannot run {}: {source}", path.display())]
    EvalToolStart {
        /// The binary.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// `kv-eval` ran and failed (it printed why).
    #[error("{} exited with {status}", path.display())]
    EvalToolFailed {
        /// The binary.
        path: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
}

impl Error {
    /// Whether the error is a misuse of the command line (exit status 2, usage shown).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::MissingCommand
                | Self::UnknownCommand { .. }
                | Self::UnknownOption { .. }
                | Self::UnexpectedArgument { .. }
                | Self::MissingValue { .. }
                | Self::InvalidValue { .. }
                | Self::InvalidCodecSpec { .. }
                | Self::MissingOption { .. }
                | Self::RepeatedOption { .. }
                | Self::ConflictingOptions { .. }
        )
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
