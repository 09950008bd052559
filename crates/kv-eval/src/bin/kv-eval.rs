//! `kv-eval`: the command-line front of the `kv-eval` crate (perplexity, KL, iso-quality
//! and needle runs of KV-cache codecs on a real model). Run `kv-eval help` for the usage.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    // Arguments that are not valid UTF-8 are passed on lossily: they can only be file names,
    // and a mangled name then fails with a clear "cannot read" error.
    let args = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    let result = kv_eval::cli::parse(args)
        .and_then(|command| kv_eval::cli::run(&command, &mut std::io::stdout().lock()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_usage() => {
            eprintln!("kv-eval: error: {e}\nRun `kv-eval help` for usage.");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("kv-eval: error: {e}");
            ExitCode::FAILURE
        }
    }
}
