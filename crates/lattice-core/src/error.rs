//! The crate's error type: what can go wrong with untrusted indices and codebook parameters.

/// Errors of `lattice-core`.
///
/// Programmer errors (a wrong buffer length, a non-lattice point passed where a lattice point
/// is required) panic and are documented under `# Panics`; this type covers values that may
/// come from untrusted bytes or user configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An index read from data is not below the number of points of its codebook.
    #[error("index {index} is out of range for a codebook of {count} points")]
    IndexOutOfRange {
        /// The offending index.
        index: u128,
        /// The codebook's number of points.
        count: u128,
    },
    /// A joint (mixed-radix) index read from data is not below the product of its radices.
    #[error("joint index does not fit its {bits}-bit mixed-radix range")]
    JointIndexOutOfRange {
        /// Width of the joint index in bits.
        bits: u32,
    },
    /// A codebook parameter is outside the supported range.
    #[error("{name} = {value} is not supported (allowed: {min}..={max})")]
    ParameterOutOfRange {
        /// The parameter's name, e.g. `"q_range"`.
        name: &'static str,
        /// The value asked for.
        value: u64,
        /// Smallest supported value.
        min: u64,
        /// Largest supported value.
        max: u64,
    },
}
