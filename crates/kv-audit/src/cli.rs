//! The `kvc` command line: parsing (std only) into a typed [`Command`], and running one.
//! `rd`, `audit`, `plan` and `report` share the source options ([`SourceArgs`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use kv_codec::CodecSpec;
use kv_codec::cache::Protection;
use serde::Serialize;

use crate::audit::{NULL_REPLICATES, audit, table as audit_table};
use crate::error::{Error, Result};
use crate::plan::{
    DEFAULT_PROBE_RATES, DEFAULT_PROBE_TOKENS, Objective, Prediction, Sensitivity,
    candidate_codecs, plan, table as plan_table, verify,
};
use crate::rd::{REPORT_RATES, family_settings, resolve_settings, sweep};
use crate::report::{
    FullReport, compare, comparison_table, default_pairs, read_json, table, write_dir, write_json,
};
use crate::slice::slice_file;
use crate::source::{DEFAULT_GAUSSIAN_SEED, KvSource, SourceInfo, default_sample_path};

/// The usage text of `kvc`.
pub const USAGE: &str = "\
kvc: audit, plan and rate-distortion reports of KV-cache codecs

Usage:
  kvc codecs
      List the codec spec families.
  kvc rd [SOURCE] [--codec SPEC]... [--bpv R]... [--every-family] [--json OUT]
      Encode and decode every K/V vector with each codec; print bits per value, rel-MSE
      and SNR of K and V, the Shannon gap and encode/decode throughput, one row per codec.
  kvc audit [FILE | SOURCE] [--json OUT]
      Per layer, head, K and V: norms, channel anisotropy before/after the rotation,
      kurtosis, outliers, effective rank, and the distance to the Gaussian after rotation
      (W1) next to its value for Gaussian samples of the same size.
  kvc plan [FILE | SOURCE] (--target-snr DB | --budget-bpv R [--sensitivity SENS
           [--protect S:R:C[:int8]]]) [--candidates SPEC,SPEC,...] [--probe-tokens N]
           [--out PLAN] [--prediction OUT] [--verify]
      Choose a codec and rate per layer for K and V from a quick rate-distortion probe:
      the fewest bytes that keep every layer at or above DB dB of SNR, or the least total
      rel-MSE within R bits per value. Layers no codec serves stay uncompressed (null).
      The candidates are the default codec at 2-10 bits per value unless --candidates
      lists others (another family, say, to plan it under the same policy).
      --sensitivity: weigh each layer's rel-MSE by the KL it costs the model (a
      `kv-eval sensitivity --json` report of the model this cache comes from), so R bits
      per value go where the model notices them; every layer coded, with the protection
      the sensitivity was measured under, or --protect's (S sinks, R recent tokens, keys
      centred on C; :int8 holds them in int8 rather than f16; the KL weights stay the
      sensitivity's).
  kvc report [FILE | SOURCE] [--from RD_JSON] [--out DIR]
      Sweep every codec family, audit the source, and write DIR (default kvc-report):
      report.json, report.md, and SVG + PNG charts (SNR vs bits per value with the
      Shannon bound, gap to the bound, audit heatmaps). --from renders a saved
      `kvc rd --json` sweep instead of sweeping (no audit).
  kvc slice --input FILE --tokens N --out FILE
      Write the first N tokens of every k.*/v.* tensor of FILE to a new safetensors file.
  kvc eval [verify | eval | iso | sensitivity | needle | table] [OPTIONS]
      End-to-end quality on the real model (perplexity, KL, top-1, iso-quality table,
      needle in a haystack), with progress bars: runs the `kv-eval` binary, found beside
      kvc or on PATH (`cargo build --release -p kv-eval` puts it beside kvc), with these
      arguments; without a subcommand, `eval` (`kvc eval --codec SPEC` is `kv-eval eval
      --codec SPEC`). `kvc eval help` shows its options.
  kvc help
      Show this text (also -h, --help).

SOURCE (rd, audit, plan, report):
  --input FILE    safetensors file whose k.* / v.* tensors are [kv_heads, tokens, head_dim]
                  of F16, BF16 or F32 (audit, plan and report also take FILE bare).
                  Default: the sample committed with kv-audit,
                  crates/kv-audit/data/smollm2-pp512-t128.safetensors.
  --gaussian N    instead, N vectors of iid N(0,1) values, counted as both K and V.
  --head-dim D    values per Gaussian vector (required with --gaussian).
  --seed S        seed of the Gaussian source (default 0).

Options of rd:
  --codec SPEC    a codec, e.g. voronoi-e8-q16-s2 or compat-d4-q38 (repeatable;
                  `kvc codecs` lists the families).
  --bpv R         the default codec at R bits per value (repeatable; adds to --codec).
                  With neither --codec nor --bpv: --bpv 3 --bpv 4 --bpv 5.
  --every-family  at each --bpv rate, every codec family's setting nearest that rate
                  (within half a bit), not only the default codec's.
  --json OUT      also write the report, with per-layer rel-MSE, as JSON to OUT.

Options of plan:
  --target-snr DB   minimum SNR (dB) of every layer's K and of its V.
  --budget-bpv R    bits per value of the whole cache, everything stored included.
  --probe-tokens N  tokens per head the probe encodes (default 64, a stride sample).
  --out PLAN        write the plan, {\"layers\":[{\"k\":SPEC|null,\"v\":SPEC|null},...]}, to
                    PLAN (default: print it).
  --prediction OUT  write predicted (and, with --verify, measured) bytes and SNR to OUT
                    (default: PLAN with the extension .prediction.json, when --out is given).
  --verify          encode every token with the plan and print measured against predicted.

Metrics: rel-MSE = sum |x - x'|^2 / sum |x|^2 over all K (or V) vectors; SNR = -10 log10
rel-MSE dB; gap = 20 log10(2) * bits/value - SNR dB, the mean of K and V.
";

/// Where the vectors come from: a file, a seeded Gaussian, or (neither given) the committed
/// sample.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceArgs {
    /// `--input` (or a bare FILE): a safetensors file.
    pub input: Option<PathBuf>,
    /// `--gaussian`: number of Gaussian vectors.
    pub gaussian: Option<usize>,
    /// `--head-dim` of the Gaussian vectors.
    pub head_dim: Option<usize>,
    /// `--seed` of the Gaussian source.
    pub seed: Option<u64>,
}

impl SourceArgs {
    /// The options this struct parses.
    const OPTIONS: [&'static str; 4] = ["--input", "--gaussian", "--head-dim", "--seed"];

    /// Takes the value of one of [`SourceArgs::OPTIONS`].
    fn set(&mut self, name: &'static str, value: String) -> Result<()> {
        match name {
            "--input" => once(&mut self.input, name, PathBuf::from(value)),
            "--gaussian" => once(
                &mut self.gaussian,
                name,
                number(name, value, "a positive count", |n: &usize| *n > 0)?,
            ),
            "--head-dim" => once(
                &mut self.head_dim,
                name,
                number(name, value, "a positive integer", |n: &usize| *n > 0)?,
            ),
            _ => once(
                &mut self.seed,
                name,
                number(name, value, "an unsigned 64-bit integer", |_: &u64| true)?,
            ),
        }
    }

    /// Checks the combination of options.
    fn check(&self, command: &'static str) -> Result<()> {
        let conflict = |option, problem, other| {
            Err(Error::ConflictingOptions {
                option,
                problem,
                other,
            })
        };
        if self.input.is_some() && self.gaussian.is_some() {
            return conflict("--gaussian", "cannot be used with", "--input");
        }
        if self.gaussian.is_some() && self.head_dim.is_none() {
            return Err(Error::MissingOption {
                command,
                option: "--head-dim",
            });
        }
        if self.gaussian.is_none() {
            if self.head_dim.is_some() {
                return conflict("--head-dim", "needs", "--gaussian");
            }
            if self.seed.is_some() {
                return conflict("--seed", "needs", "--gaussian");
            }
        }
        Ok(())
    }

    /// Loads the vectors.
    ///
    /// # Errors
    /// I/O and data errors of the file; [`Error::SourceTooLarge`].
    pub fn load(&self) -> Result<KvSource> {
        match (self.gaussian, &self.input) {
            (Some(n), _) => {
                let d = self.head_dim.ok_or(Error::MissingOption {
                    command: "--gaussian",
                    option: "--head-dim",
                })?;
                KvSource::gaussian(n, d, self.seed.unwrap_or(DEFAULT_GAUSSIAN_SEED))
            }
            (None, Some(path)) => KvSource::from_safetensors(path),
            (None, None) => KvSource::from_safetensors(default_sample_path()),
        }
    }
}

/// Arguments of `kvc rd`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RdArgs {
    /// The vectors.
    pub source: SourceArgs,
    /// `--codec`, in order.
    pub codecs: Vec<CodecSpec>,
    /// `--bpv`, in order.
    pub bpv: Vec<f64>,
    /// `--json`: where to write the report.
    pub json: Option<PathBuf>,
    /// `--every-family`: every codec family at each `--bpv` rate, not only the default.
    pub every_family: bool,
}

/// Arguments of `kvc audit`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditArgs {
    /// The vectors.
    pub source: SourceArgs,
    /// `--json`: where to write the audit.
    pub json: Option<PathBuf>,
}

/// Arguments of `kvc plan`.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanArgs {
    /// The vectors.
    pub source: SourceArgs,
    /// `--target-snr` or `--budget-bpv`.
    pub objective: Objective,
    /// `--probe-tokens`.
    pub probe_tokens: usize,
    /// `--out`: where to write the plan.
    pub out: Option<PathBuf>,
    /// `--prediction`: where to write the prediction.
    pub prediction: Option<PathBuf>,
    /// `--sensitivity`: the model's sensitivity report, weighing a budget.
    pub sensitivity: Option<PathBuf>,
    /// `--candidates`: the codecs to choose from (`None`: the default codec's grid).
    pub candidates: Option<Vec<CodecSpec>>,
    /// `--protect`: the protection the plan gives every layer instead of the sensitivity's.
    pub protect: Option<Protection>,
    /// `--verify`.
    pub verify: bool,
}

/// Arguments of `kvc report`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportArgs {
    /// The vectors (ignored with `--from`).
    pub source: SourceArgs,
    /// `--from`: a saved `kvc rd --json` sweep to render instead of sweeping.
    pub from: Option<PathBuf>,
    /// `--out`: the directory (default [`DEFAULT_REPORT_DIR`]).
    pub out: Option<PathBuf>,
}

/// Where `kvc report` writes without `--out`.
pub const DEFAULT_REPORT_DIR: &str = "kvc-report";

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
    /// An audit.
    Audit(AuditArgs),
    /// A per-layer plan.
    Plan(PlanArgs),
    /// A report directory.
    Report(ReportArgs),
    /// Cut a file down to its first tokens.
    Slice(SliceArgs),
    /// `kv-eval` with these arguments (its subcommand first).
    Eval(Vec<String>),
}

/// The subcommands of `kv-eval` that `kvc eval` passes on as they are; anything else is
/// `kv-eval eval`'s options.
const EVAL_SUBCOMMANDS: [&str; 9] = [
    "verify",
    "eval",
    "iso",
    "sensitivity",
    "needle",
    "table",
    "help",
    "-h",
    "--help",
];

/// The `kv-eval` binary: beside `kvc` (`exe_dir`, where cargo builds both), else the first on
/// `path` (the `PATH` variable's value).
pub fn find_eval_tool(exe_dir: &Path, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let name = format!("kv-eval{}", std::env::consts::EXE_SUFFIX);
    std::iter::once(exe_dir.to_path_buf())
        .chain(
            path.map(|p| std::env::split_paths(p).collect::<Vec<_>>())
                .unwrap_or_default(),
        )
        .map(|dir| dir.join(&name))
        .find(|candidate| candidate.is_file())
}

/// Runs `kv-eval` with `args`, its output and progress going straight to this terminal.
fn run_eval(args: &[String]) -> Result<()> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        action: "cannot locate",
        path: PathBuf::from("kvc"),
        source,
    })?;
    let exe_dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
    let path = find_eval_tool(&exe_dir, std::env::var_os("PATH").as_deref())
        .ok_or(Error::EvalToolMissing { beside: exe_dir })?;
    let status = std::process::Command::new(&path)
        .args(args)
        .status()
        .map_err(|source| Error::EvalToolStart {
            path: path.clone(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::EvalToolFailed { path, status })
    }
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

/// The bare argument of the commands that take one (a file), reported under this name.
const POSITIONAL: &str = "FILE";

impl<I: Iterator<Item = String>> Options<I> {
    /// The next option among `known`, `Ok(None)` at the end; `-h`/`--help` is reported as
    /// `Ok(Some("--help"))`, and a bare argument as [`POSITIONAL`] (with the argument as its
    /// inline value) when `known` holds [`POSITIONAL`]. `Err` for an unknown option or an
    /// unexpected bare argument.
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
            if known.contains(&POSITIONAL) {
                return Ok(Some(Opt {
                    name: POSITIONAL,
                    inline: Some(arg),
                }));
            }
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

/// Options of the commands that read a source, with the bare FILE when `bare_file` holds.
fn with_source(extra: &[&'static str], bare_file: bool) -> Vec<&'static str> {
    let mut known: Vec<&'static str> = SourceArgs::OPTIONS.to_vec();
    known.extend_from_slice(extra);
    if bare_file {
        known.push(POSITIONAL);
    }
    known
}

/// A bare FILE is `--input` given another way.
fn source_option(name: &'static str) -> &'static str {
    if name == POSITIONAL { "--input" } else { name }
}

fn parse_rd(args: impl Iterator<Item = String>) -> Result<Command> {
    let known = with_source(&["--every-family", "--codec", "--bpv", "--json"], false);
    let mut opts = Options {
        command: "rd",
        args,
    };
    let mut a = RdArgs::default();
    while let Some(opt) = opts.next(&known)? {
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
            _ => a.source.set(source_option(name), value)?,
        }
    }
    a.source.check("rd --gaussian")?;
    Ok(Command::Rd(a))
}

fn parse_audit(args: impl Iterator<Item = String>) -> Result<Command> {
    let known = with_source(&["--json"], true);
    let mut opts = Options {
        command: "audit",
        args,
    };
    let mut a = AuditArgs::default();
    while let Some(opt) = opts.next(&known)? {
        let name = opt.name;
        if name == "--help" {
            return Ok(Command::Help);
        }
        let value = opts.value(opt)?;
        match name {
            "--json" => once(&mut a.json, name, PathBuf::from(value))?,
            _ => a.source.set(source_option(name), value)?,
        }
    }
    a.source.check("audit --gaussian")?;
    Ok(Command::Audit(a))
}

fn parse_plan(args: impl Iterator<Item = String>) -> Result<Command> {
    let known = with_source(
        &[
            "--target-snr",
            "--budget-bpv",
            "--probe-tokens",
            "--out",
            "--prediction",
            "--sensitivity",
            "--candidates",
            "--protect",
            "--verify",
        ],
        true,
    );
    let mut opts = Options {
        command: "plan",
        args,
    };
    let mut source = SourceArgs::default();
    let (mut target, mut budget, mut probe_tokens, mut out, mut prediction) =
        (None, None, None, None, None);
    let (mut sensitivity, mut candidates, mut protect) = (None, None, None);
    let mut verify = false;
    while let Some(opt) = opts.next(&known)? {
        let name = opt.name;
        match name {
            "--help" => return Ok(Command::Help),
            "--verify" => {
                // A flag: an inline value (`--verify=x`) is a mistake.
                if let Some(value) = opt.inline {
                    return Err(Error::InvalidValue {
                        option: name,
                        value,
                        expected: "no value",
                    });
                }
                verify = true;
                continue;
            }
            _ => {}
        }
        let value = opts.value(opt)?;
        match name {
            "--target-snr" => once(
                &mut target,
                name,
                number(name, value, "a finite SNR in dB", |x: &f64| x.is_finite())?,
            )?,
            "--budget-bpv" => once(
                &mut budget,
                name,
                number(
                    name,
                    value,
                    "a positive number of bits per value",
                    |r: &f64| r.is_finite() && *r > 0.0,
                )?,
            )?,
            "--probe-tokens" => once(
                &mut probe_tokens,
                name,
                number(name, value, "a positive integer", |n: &usize| *n > 0)?,
            )?,
            "--out" => once(&mut out, name, PathBuf::from(value))?,
            "--prediction" => once(&mut prediction, name, PathBuf::from(value))?,
            "--sensitivity" => once(&mut sensitivity, name, PathBuf::from(value))?,
            "--candidates" => {
                let list = value
                    .split(',')
                    .map(|v| {
                        v.trim()
                            .parse::<CodecSpec>()
                            .map_err(|source| Error::InvalidCodecSpec {
                                value: v.to_owned(),
                                source,
                            })
                    })
                    .collect::<Result<Vec<_>>>()?;
                once(&mut candidates, name, list)?;
            }
            "--protect" => {
                let parsed = value.parse().map_err(|_| Error::InvalidValue {
                    option: name,
                    value,
                    expected: "S:R:C or S:R:C:int8 (token counts, window format)",
                })?;
                once(&mut protect, name, parsed)?;
            }
            _ => source.set(source_option(name), value)?,
        }
    }
    source.check("plan --gaussian")?;
    if protect.is_some() && sensitivity.is_none() {
        return Err(Error::MissingOption {
            command: "plan --protect",
            option: "--sensitivity",
        });
    }
    let objective = match (target, budget) {
        (Some(db), None) => Objective::TargetSnrDb(db),
        (None, Some(r)) => Objective::BudgetBpv(r),
        (Some(_), Some(_)) => {
            return Err(Error::ConflictingOptions {
                option: "--budget-bpv",
                problem: "cannot be used with",
                other: "--target-snr",
            });
        }
        (None, None) => {
            return Err(Error::MissingOption {
                command: "plan",
                option: "--target-snr or --budget-bpv",
            });
        }
    };
    if sensitivity.is_some() && target.is_some() {
        return Err(Error::ConflictingOptions {
            option: "--sensitivity",
            problem: "cannot be used with",
            other: "--target-snr",
        });
    }
    Ok(Command::Plan(PlanArgs {
        source,
        objective,
        probe_tokens: probe_tokens.unwrap_or(DEFAULT_PROBE_TOKENS),
        out,
        prediction,
        sensitivity,
        candidates,
        protect,
        verify,
    }))
}

fn parse_report(args: impl Iterator<Item = String>) -> Result<Command> {
    let known = with_source(&["--from", "--out"], true);
    let mut opts = Options {
        command: "report",
        args,
    };
    let mut a = ReportArgs::default();
    while let Some(opt) = opts.next(&known)? {
        let name = opt.name;
        if name == "--help" {
            return Ok(Command::Help);
        }
        let value = opts.value(opt)?;
        match name {
            "--from" => once(&mut a.from, name, PathBuf::from(value))?,
            "--out" => once(&mut a.out, name, PathBuf::from(value))?,
            _ => a.source.set(source_option(name), value)?,
        }
    }
    a.source.check("report --gaussian")?;
    if a.from.is_some() && a.source != SourceArgs::default() {
        return Err(Error::ConflictingOptions {
            option: "--from",
            problem: "cannot be used with",
            other: "a source (FILE, --input or --gaussian)",
        });
    }
    Ok(Command::Report(a))
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
        "audit" => parse_audit(args),
        "plan" => parse_plan(args),
        "report" => parse_report(args),
        "slice" => parse_slice(args),
        "eval" => {
            let mut rest: Vec<String> = args.collect();
            if rest
                .first()
                .is_none_or(|a| !EVAL_SUBCOMMANDS.contains(&a.as_str()))
            {
                rest.insert(0, "eval".into());
            }
            Ok(Command::Eval(rest))
        }
        _ => Err(Error::UnknownCommand { command }),
    }
}

/// Runs a command, printing to `out` (but `eval`, whose `kv-eval` prints to this process's
/// own standard output and error).
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
        Command::Audit(args) => run_audit(args, out),
        Command::Plan(args) => run_plan(args, out),
        Command::Report(args) => run_report(args, out),
        Command::Eval(args) => run_eval(args),
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

/// One line saying what the source is.
fn describe(info: &SourceInfo) -> String {
    match &info.path {
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
    }
}

fn emit(out: &mut dyn Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes()).map_err(Error::Output)?;
    out.flush().map_err(Error::Output)
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        action: "cannot write",
        path: path.to_owned(),
        source,
    })
}

fn run_rd(args: &RdArgs, out: &mut dyn Write) -> Result<()> {
    let source = args.source.load()?;
    let mut text = describe(&source.info);
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
    emit(out, &text)?;

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

fn run_audit(args: &AuditArgs, out: &mut dyn Write) -> Result<()> {
    let source = args.source.load()?;
    emit(out, &describe(&source.info))?;
    let report = audit(&source)?;
    let gaussian = report.heads.iter().filter(|h| h.gaussian).count();
    let text = format!(
        "\n{}\n{gaussian} of {} heads read as Gaussian after rotation (W1 within {} standard \
         deviations of Gaussian samples of the same size; {} samples per size).\n\
         Columns: mean norm; offset = |mean|^2 / mean |x|^2; channel variance max/min before \
         (aniso) and after (rot) rotation; largest channel excess kurtosis; % of values beyond \
         {} sigma before and after rotation (Gaussian: {:.4} %); effective rank (participation \
         ratio); W1 distance of the rotated, normalised coordinates to N(0,1).\n",
        audit_table(&report),
        report.heads.len(),
        report.gaussian_z,
        NULL_REPLICATES,
        report.outlier_sigmas,
        100.0 * report.gaussian_outlier_fraction,
    );
    emit(out, &text)?;
    if let Some(path) = &args.json {
        let mut json = serde_json::to_string_pretty(&report).map_err(Error::Json)?;
        json.push('\n');
        write_file(path, &json)?;
        writeln!(out, "wrote {}", path.display()).map_err(Error::Output)?;
    }
    Ok(())
}

/// The predicted and, after `--verify`, the measured outcome of a plan.
#[derive(Serialize)]
struct PredictionFile<'a> {
    predicted: &'a Prediction,
    #[serde(skip_serializing_if = "Option::is_none")]
    measured: Option<&'a Prediction>,
}

fn run_plan(args: &PlanArgs, out: &mut dyn Write) -> Result<()> {
    let source = args.source.load()?;
    emit(out, &describe(&source.info))?;
    let sensitivity = args
        .sensitivity
        .as_deref()
        .map(Sensitivity::load)
        .transpose()?
        .map(|s| Sensitivity {
            protection: args.protect.unwrap_or(s.protection),
            ..s
        });
    let codecs = match &args.candidates {
        Some(list) => list.clone(),
        None => candidate_codecs(&DEFAULT_PROBE_RATES, source.head_dim)?,
    };
    let planned = plan(
        &source,
        args.objective,
        &codecs,
        args.probe_tokens,
        sensitivity.as_ref(),
    )?;
    let measured = if args.verify {
        Some(verify(
            &source,
            &planned.plan,
            args.objective,
            args.probe_tokens,
        )?)
    } else {
        None
    };
    let text = format!(
        "probe: {} codecs and f16 on up to {} tokens per head, {:.2} s\n\n{}",
        planned.probes.first().map_or(0, |p| p.candidates.len() - 1),
        args.probe_tokens,
        planned.probe_seconds,
        plan_table(&planned.prediction, measured.as_ref())
    );
    emit(out, &text)?;
    let mut plan_json = serde_json::to_string(&planned.plan).map_err(Error::Json)?;
    plan_json.push('\n');
    match &args.out {
        Some(path) => {
            write_file(path, &plan_json)?;
            writeln!(out, "wrote {}", path.display()).map_err(Error::Output)?;
        }
        None => emit(out, &format!("\n{plan_json}"))?,
    }
    let prediction_path = args.prediction.clone().or_else(|| {
        args.out
            .as_ref()
            .map(|p| p.with_extension("prediction.json"))
    });
    if let Some(path) = prediction_path {
        let file = PredictionFile {
            predicted: &planned.prediction,
            measured: measured.as_ref(),
        };
        let mut json = serde_json::to_string_pretty(&file).map_err(Error::Json)?;
        json.push('\n');
        write_file(&path, &json)?;
        writeln!(out, "wrote {}", path.display()).map_err(Error::Output)?;
    }
    Ok(())
}

fn run_report(args: &ReportArgs, out: &mut dyn Write) -> Result<()> {
    let (rd, audit_report) = match &args.from {
        Some(path) => {
            emit(out, &format!("rendering {}\n", path.display()))?;
            (read_json(path)?, None)
        }
        None => {
            let source = args.source.load()?;
            emit(out, &describe(&source.info))?;
            let settings = family_settings(&REPORT_RATES, source.head_dim)?;
            let audit_report = audit(&source)?;
            (sweep(&source, &settings)?, Some(audit_report))
        }
    };
    let comparisons = default_pairs(&rd.results)
        .into_iter()
        .map(|(a, b)| compare(&rd.results[a], &rd.results[b]))
        .collect();
    let report = FullReport {
        rd,
        comparisons,
        audit: audit_report,
    };
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_REPORT_DIR));
    let written = write_dir(&dir, &report)?;
    let mut text = format!("\n{}", table(&report.rd.results));
    if !report.comparisons.is_empty() {
        text.push('\n');
        text.push_str(&comparison_table(&report.comparisons));
    }
    text.push_str(&format!(
        "\nwrote {} files to {}\n",
        written.len(),
        dir.display()
    ));
    emit(out, &text)
}
