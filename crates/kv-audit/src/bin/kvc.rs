//! `kvc`: the command-line front of `kv-audit` (rate–distortion sweeps of KV-cache codecs,
//! codec listing, sample slicing). Run `kvc help` for the usage text.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    // Arguments that are not valid UTF-8 are passed on lossily: they can only be file names,
    // and a mangled name then fails with a clear "cannot read" error.
    let args = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    let result = kv_audit::cli::parse(args)
        .and_then(|command| kv_audit::cli::run(&command, &mut std::io::stdout().lock()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_usage() => {
            eprintln!("kvc: error: {e}\nRun `kvc help` for usage.");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("kvc: error: {e}");
            ExitCode::FAILURE
        }
    }
}
