//! The machine and build a benchmark ran on, for the record in its JSON: shared by the
//! throughput examples (`examples/codec_throughput.rs`, `examples/cache_throughput.rs`).

/// The CPU's model name (Linux), or "unknown".
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The widest SIMD the build was compiled for (target features fixed at compile time:
/// `wide` picks its instructions from them).
pub fn simd_build() -> &'static str {
    if cfg!(target_feature = "avx512f") {
        "avx512"
    } else if cfg!(target_feature = "avx2") {
        "avx2"
    } else {
        "baseline"
    }
}
