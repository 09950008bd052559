//! The error type of `kv-eval`: command-line misuse, missing or malformed model and data
//! files, caller misuse of the KV stores, I/O, and errors of the tensor backend and the
//! codecs, kept apart so the binary can choose its exit status and tests can match the cause.

use std::path::PathBuf;

/// Errors of `kv-eval` and of the `kv-eval` command.
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
    /// A codec spec (or cache plan) that kv-codec rejects.
    #[error("invalid codec spec {value:?}: {source}")]
    InvalidCodecSpec {
        /// The text given.
        value: String,
        /// Why kv-codec rejected it.
        #[source]
        source: kv_codec::Error,
    },

    // --- model, text and reference files ---
    /// The model file is not where it was looked for.
    #[error(
        "model file {} not found; run `cargo xtask fetch-model` (or pass --model / set KV_EVAL_MODEL)",
        path.display()
    )]
    ModelNotFound {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("cannot read", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The GGUF file could not be parsed, or a tensor could not be loaded from it.
    #[error("cannot load {}: {source}", path.display())]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What candle reported.
        #[source]
        source: candle_core::Error,
    },
    /// A metadata key the model needs is absent or has the wrong type.
    #[error("GGUF metadata key {key} is missing or not {expected}")]
    BadMetadata {
        /// The key.
        key: &'static str,
        /// What it should hold.
        expected: &'static str,
    },
    /// The GGUF describes a model this runner does not implement.
    #[error("unsupported model: {field} is {actual}, this runner implements {expected}")]
    UnsupportedModel {
        /// The property.
        field: &'static str,
        /// What the runner implements.
        expected: String,
        /// What the file holds.
        actual: String,
    },
    /// A weight tensor is absent.
    #[error("GGUF tensor {name} is missing")]
    MissingTensor {
        /// Its name.
        name: String,
    },
    /// A weight tensor has the wrong shape.
    #[error("GGUF tensor {name} has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        /// Its name.
        name: String,
        /// The shape needed (outermost first).
        expected: Vec<usize>,
        /// The shape found.
        actual: Vec<usize>,
    },
    /// The tokenizer could not be built from the GGUF vocabulary, or could not encode.
    #[error("tokenizer: cannot {action}: {source}")]
    Tokenizer {
        /// What failed.
        action: &'static str,
        /// What the tokenizers crate reported.
        #[source]
        source: tokenizers::Error,
    },
    /// The text has fewer tokens than a run needs.
    #[error("{} holds {available} tokens from the start offset, {needed} are needed", path.display())]
    TextTooShort {
        /// The text file.
        path: PathBuf,
        /// Tokens needed.
        needed: usize,
        /// Tokens available.
        available: usize,
    },
    /// A reference tensor is absent or has an unexpected dtype or shape.
    #[error("reference file {}: tensor {tensor}: {problem}", path.display())]
    BadReference {
        /// The safetensors file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The reference safetensors file could not be read.
    #[error(transparent)]
    Reference(#[from] kv_audit::Error),
    /// A JSON report could not be written.
    #[error("cannot write JSON to {}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An earlier report to merge with was made with other settings, on other passages, or
    /// by a build whose arithmetic differs (its exact-cache perplexities are not this run's);
    /// this run's own report was written to `kept` when a JSON path was given.
    #[error("cannot merge {}: its {what} differ from this run's{}", path.display(),
            kept.as_ref().map_or_else(String::new, |k| format!(" (this run's report: {})", k.display())))]
    MergeMismatch {
        /// The earlier report.
        path: PathBuf,
        /// What differs.
        what: &'static str,
        /// Where this run's unmerged report was written.
        kept: Option<PathBuf>,
    },

    // --- caller misuse of the stores and the model ---
    /// A buffer or a batch does not have the length the operation needs.
    #[error("{what} has length {actual}, expected {expected}")]
    LengthMismatch {
        /// Which buffer.
        what: &'static str,
        /// The length needed.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// A layer index past the last layer.
    #[error("layer {layer} does not exist (the model has {layers})")]
    NoSuchLayer {
        /// The index given.
        layer: usize,
        /// Layers there are.
        layers: usize,
    },
    /// A token id outside the model's vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfVocabulary {
        /// The id given.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// A position past the model's context (its RoPE table).
    #[error("position {position} is past the model's context of {context} tokens")]
    ContextExceeded {
        /// The last position asked for.
        position: usize,
        /// The context length.
        context: usize,
    },

    // --- backends ---
    /// A tensor operation failed.
    #[error("tensor backend: {0}")]
    Candle(#[from] candle_core::Error),
    /// kv-codec's cache refused an operation (a policy it cannot build at this shape, a
    /// non-finite vector, a crop of tokens it no longer holds, ...).
    #[error("KV cache: {source}")]
    Cache {
        /// What kv-codec reported.
        #[source]
        source: kv_codec::Error,
    },
    /// A codec could not be built, or failed on a vector.
    #[error("codec {spec}: {source}")]
    Codec {
        /// The codec's spec string.
        spec: String,
        /// What kv-codec reported.
        #[source]
        source: kv_codec::Error,
    },
}

impl Error {
    /// Whether this is a command-line usage error (exit status 2) rather than a failure.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::MissingCommand
                | Self::UnknownCommand { .. }
                | Self::UnknownOption { .. }
                | Self::MissingValue { .. }
                | Self::InvalidValue { .. }
                | Self::InvalidCodecSpec { .. }
        )
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
