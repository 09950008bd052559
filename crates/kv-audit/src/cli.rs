//! The `kvc` command line: parsing (std only) into a typed [`Command`], and running one.

use std::io::Write;
use std::path::PathBuf;

use kv_codec::CodecSpec;

use crate::error::{Error, Result};
use crate::rd::{family_settings, resolve_settings, sweep};
use crate::report::{table, write_json};
use crate::slice::slice_file;
use crate::source::{DEFAULT_GAUSSIAN_SEED, KvSource, default_sample_path};

/// The usage text of `kvc`.
pub const USAGE: &str = "\
kvc: rate-distortion audit of KV-cache codecs

Usage:
  kvc codecs
      List the codec spec families.
  kvc rd [--input FILE | --gaussian N --head-dim D [--seed S]]
         [--codec SPEC]... [--bpv R]... [--every-family] [--json OUT]
      Encode and decode every K/V vector with each codec; print bits per value, rel-MSE
      and SNR of K and V, the Shannon gap and encode/decode throughput, one row per codec.
  kvc slice --input FILE --tokens N --out FILE
      Write the first N tokens of every k.*/v.* tensor of FILE to a new safetensors file.
  kvc help
      Show this text (also -h, --help).

Options of rd:
  --input FILE    safetensors file whose k.* / v.* tensors are [kv_heads, tokens, head_dim]
                  of F16, BF16 or F32. Default: the sample committed with kv-audit,
                  crates/kv-audit/data/smollm2-pp512-t128.safetensors.
  --gaussian N    instead, N vectors of iid N(0,1) values, counted as both K and V.
  --head-dim D    values per Gaussian vector (required with --gaussian).
  --seed S        seed of the Gaussian source (default 0).
  --codec SPEC    a codec, e.g. voronoi-e8-q16-s2 or compat-d4-q38 (repeatable;
                  `kvc codecs` lists the families).
  --bpv R         the default codec at R bits per value (repeatable; adds to --codec).
                  With neither --codec nor --bpv: --bpv 3 --bpv 4 --bpv 5.
  --every-family  at each --bpv rate, every codec family's setting nearest that rate
                  (within half a bit), not only the default codec's.
  --json OUT      also write the report, with per-layer rel-MSE, as JSON to OUT.

Metrics: rel-MSE = sum |x - x'|^2 / sum |x|^2 over all K (or V) vectors; SNR = -10 log10
rel-MSE dB; gap = 20 log10(2) * bits/value - SNR dB, the mean of K and V.
";

/// Arguments of `kvc rd`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RdArgs {
    /// `--input`: a safetensors file.
    pub input: Option<PathBuf>,
    /// `--codec`, in order.
    pub codecs: Vec<CodecSpec>,
    /// `--bpv`, in order.
    pub bpv: Vec<f64>,
    /// `--json`: where to write the report.
    pub json: Option<PathBuf>,
    /// `--gaussian`: number of Gaussian vectors.
    pub gaussian: Option<usize>,
    /// `--head-dim` of the Gaussian vectors.
    pub head_dim: Option<usize>,
    /// `--seed` of the Gaussian source.
    pub seed: Option<u64>,
    /// `--every-family`: every codec family at each `--bpv` rate, not only the default.
    pub every_family: bool,
}

/// Arguments of `kvc slice`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceArgs {
    /// `--input` file.
    pub input: PathBuf,
    /// `--tokens` to keep.
    pub tokens: usize,
    /// `--out` file.
    pub out: PathBuf,
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// Print the usage text.
    Help,
    /// List codec families.
    Codecs,
    /// A rate–distortion sweep.
    Rd(RdArgs),
    /// Cut a file down to its first tokens.
    Slice(SliceArgs),
}

/// Options and their values, one at a time, accepting `--opt value` and `--opt=value`.
struct Options<I> {
    command: &'static str,
    args: I,
}

/// One option as given, with the name it matched.
struct Opt {
    name: &'static str,
    inline: Option<String>,
}

impl<I: Iterator<Item = String>> Options<I> {
    /// The next option among `known`, `Ok(None)` at the end, or `Err` for `-h`/`--help`
    /// (reported as `Ok(Some("--help"))`), an unknown option or a positional argument.
    fn next(&mut self, known: &[&'static str]) -> Result<Option<Opt>> {
        let Some(arg) = self.args.next() else {
            return Ok(None);
        };
        if arg == "-h" || arg == "--help" {
            return Ok(Some(Opt {
                name: "--help",
                inline: None,
            }));
        }
        if !arg.starts_with('-') {
            return Err(Error::UnexpectedArgument {
                command: self.command,
                argument: arg,
            });
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (arg.as_str(), None),
        };
        match known.iter().find(|&&k| k == flag) {
            Some(&name) => Ok(Some(Opt { name, inline })),
            None => Err(Error::UnknownOption {
                command: self.command,
                option: arg,
            }),
        }
    }

    /// The value of `opt`: its `=value` or the next argument.
    fn value(&mut self, opt: Opt) -> Result<String> {
        opt.inline
            .or_else(|| self.args.next())
            .ok_or(Error::MissingValue { option: opt.name })
    }
}

/// Parses a number for `option`, which must satisfy `ok`.
fn number<T: std::str::FromStr>(
    option: &'static str,
    value: String,
    expected: &'static str,
    ok: impl Fn(&T) -> bool,
) -> Result<T> {
    match value.parse::<T>() {
        Ok(v) if ok(&v) => Ok(v),
        _ => Err(Error::InvalidValue {
            option,
            value,
            expected,
        }),
    }
}

/// Stores a single-valued option, refusing a repeat.
fn once<T>(slot: &mut Option<T>, option: &'static str, value: T) -> Result<()> {
    if slot.replace(value).is_some() {
        return Err(Error::RepeatedOption { option });
    }
    Ok(())
}

fn parse_rd(args: impl Iterator<Item = String>) -> Result<Command> {
    const KNOWN: [&str; 8] = [
        "--every-family",
        "--input",
        "--codec",
        "--bpv",
        "--json",
        "--gaussian",
        "--head-dim",
        "--seed",
    ];
    let mut opts = Options {
        command: "rd",
        args,
    };
    let mut a = RdArgs::default();
    while let Some(opt) = opts.next(&KNOWN)? {
        let name = opt.name;
        if name == "--help" {
            return Ok(Command::Help);
        }
        if name == "--every-family" {
            a.every_family = true;
            continue;
        }
        let value = opts.value(opt)?;
        match name {
            "--input" => once(&mut a.input, name, PathBuf::from(value))?,
            "--json" => once(&mut a.json, name, PathBuf::from(value))?,
            "--codec" => {
                let spec = value
                    .parse()
                    .map_err(|source| Error::InvalidCodecSpec { value, source })?;
                a.codecs.push(spec);
            }
            "--bpv" => {
                a.bpv.push(number(
                    name,
                    value,
                    "a positive number of bits per value",
                    |r: &f64| r.is_finite() && *r > 0.0,
                )?);
            }
            "--gaussian" => once(
                &mut a.gaussian,
                name,
                number(name, value, "a positive count", |n: &usize| *n > 0)?,
            )?,
            "--head-dim" => once(
                &mut a.head_dim,
                name,
                number(name, value, "a positive integer", |n: &usize| *n > 0)?,
            )?,
            "--seed" => once(
                &mut a.seed,
                name,
                number(name, value, "an unsigned 64-bit integer", |_: &u64| true)?,
            )?,
            _ => unreachable!("every known option is handled"),
        }
    }
    let conflict = |option, problem, other| {
        Err(Error::ConflictingOptions {
            option,
            problem,
            other,
        })
    };
    if a.input.is_some() && a.gaussian.is_some() {
        return conflict("--gaussian", "cannot be used with", "--input");
    }
    if a.gaussian.is_some() && a.head_dim.is_none() {
        return Err(Error::MissingOption {
            command: "rd --gaussian",
            option: "--head-dim",
        });
    }
    if a.gaussian.is_none() {
        if a.head_dim.is_some() {
            return conflict("--head-dim", "needs", "--gaussian");
        }
        if a.seed.is_some() {
            return conflict("--seed", "needs", "--gaussian");
        }
    }
    Ok(Command::Rd(a))
}

fn parse_slice(args: impl Iterator<Item = String>) -> Result<Command> {
    const KNOWN: [&str; 3] = ["--input", "--tokens", "--out"];
    let mut opts = Options {
        command: "slice",
        args,
    };
    let (mut input, mut tokens, mut out) = (None, None, None);
    while let Some(opt) = opts.next(&KNOWN)? {
        let name = opt.name;
        if name == "--help" {
            return Ok(Command::Help);
        }
        let value = opts.value(opt)?;
        match name {
            "--input" => once(&mut input, name, PathBuf::from(value))?,
            "--out" => once(&mut out, name, PathBuf::from(value))?,
            "--tokens" => once(
                &mut tokens,
                name,
                number(name, value, "a positive integer", |n: &usize| *n > 0)?,
            )?,
            _ => unreachable!("every known option is handled"),
        }
    }
    let missing = |option| Error::MissingOption {
        command: "slice",
        option,
    };
    Ok(Command::Slice(SliceArgs {
        input: input.ok_or_else(|| missing("--input"))?,
        tokens: tokens.ok_or_else(|| missing("--tokens"))?,
        out: out.ok_or_else(|| missing("--out"))?,
    }))
}

/// Parses the arguments after the program name.
///
/// # Errors
/// The command-line variants of [`Error`] (those for which [`Error::is_usage`] holds).
pub fn parse<I, S>(args: I) -> Result<Command>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut args = args.into_iter().map(Into::into);
    let Some(command) = args.next() else {
        return Err(Error::MissingCommand);
    };
    match command.as_str() {
        "help" | "-h" | "--help" => Ok(Command::Help),
        "codecs" => match args.next() {
            None => Ok(Command::Codecs),
            Some(a) if a == "-h" || a == "--help" => Ok(Command::Help),
            Some(a) if a.starts_with('-') => Err(Error::UnknownOption {
                command: "codecs",
                option: a,
            }),
            Some(a) => Err(Error::UnexpectedArgument {
                command: "codecs",
                argument: a,
            }),
        },
        "rd" => parse_rd(args),
        "slice" => parse_slice(args),
        _ => Err(Error::UnknownCommand { command }),
    }
}

/// Runs a command, printing to `out`.
///
/// # Errors
/// I/O, data and codec errors of the command.
pub fn run(command: &Command, out: &mut dyn Write) -> Result<()> {
    match command {
        Command::Help => write!(out, "{USAGE}").map_err(Error::Output),
        Command::Codecs => {
            let mut text = String::from("Codec spec families (`kvc rd --codec SPEC`):\n");
            for (pattern, about) in CodecSpec::examples() {
                text.push_str(&format!("  {pattern:<26} {about}\n"));
            }
            text.push_str("`kvc rd --bpv R` picks the default codec at R bits per value.\n");
            out.write_all(text.as_bytes()).map_err(Error::Output)
        }
        Command::Rd(args) => run_rd(args, out),
        Command::Slice(args) => {
            let s = slice_file(&args.input, args.tokens, &args.out)?;
            writeln!(
                out,
                "wrote {}: first {} tokens of {} K/V tensors, {} bytes",
                args.out.display(),
                args.tokens,
                s.tensors,
                s.bytes
            )
            .map_err(Error::Output)
        }
    }
}

fn run_rd(args: &RdArgs, out: &mut dyn Write) -> Result<()> {
    let source = match (args.gaussian, &args.input) {
        (Some(n), _) => {
            let d = args.head_dim.ok_or(Error::MissingOption {
                command: "rd --gaussian",
                option: "--head-dim",
            })?;
            KvSource::gaussian(n, d, args.seed.unwrap_or(DEFAULT_GAUSSIAN_SEED))?
        }
        (None, Some(path)) => KvSource::from_safetensors(path)?,
        (None, None) => KvSource::from_safetensors(default_sample_path())?,
    };
    let info = &source.info;
    let mut text = match &info.path {
        Some(path) => format!(
            "source: {path}: {} K and {} V tensors, head_dim {}, {} vectors\n",
            info.k_tensors.len(),
            info.v_tensors.len(),
            info.head_dim,
            info.vectors
        ),
        None => format!(
            "source: {} iid N(0,1) vectors of head_dim {} (seed {}), counted as K and as V\n",
            info.vectors,
            info.head_dim,
            info.seed.unwrap_or_default()
        ),
    };
    let mut settings = resolve_settings(&args.codecs, &args.bpv, source.head_dim)?;
    if args.every_family {
        for s in family_settings(&args.bpv, source.head_dim)? {
            if !settings.iter().any(|have| have.spec == s.spec) {
                settings.push(s);
            }
        }
    }
    for s in &settings {
        if let Some(bpv) = s.from_bpv {
            text.push_str(&format!("--bpv {bpv} -> {}\n", s.spec));
        }
    }
    out.write_all(text.as_bytes()).map_err(Error::Output)?;
    out.flush().map_err(Error::Output)?;

    let report = sweep(&source, &settings)?;
    let threads = report.machine.threads;
    write!(out, "\n{}({threads} threads", table(&report.results)).map_err(Error::Output)?;
    if let Some(cpu) = &report.machine.cpu {
        write!(out, " on {cpu}").map_err(Error::Output)?;
    }
    writeln!(out, ")").map_err(Error::Output)?;
    if let Some(path) = &args.json {
        write_json(path, &report)?;
        writeln!(out, "wrote {}", path.display()).map_err(Error::Output)?;
    }
    Ok(())
}
