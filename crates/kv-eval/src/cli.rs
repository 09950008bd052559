//! The `kv-eval` command line: parsing (std only) into a typed [`Command`], and running one.
//!
//! `kvc eval` (kv-audit's binary) runs this crate's `kv-eval` binary with its arguments:
//! kv-audit cannot call [`parse`] and [`run`] itself, since this crate depends on it.

use std::io::Write;
use std::path::{Path, PathBuf};

use kv_codec::CodecSpec;
use kv_codec::cache::Protection;
use kv_codec::codecs::voronoi::default_for_rate;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::eval::{EvalReport, EvalSettings, evaluate};
use crate::iso::{default_plans, iso_table, markdown};
use crate::model::{Llama, LlamaConfig, MODEL_FILE, WeightMode, default_model_path};
use crate::needle::{NeedleSettings, needle};
use crate::plan::CachePlan;
use crate::reference::{Reference, default_reference_path, verify};
use crate::sensitivity::{DEFAULT_PROBE, DEFAULT_SKIP, sensitivity};
use crate::store::AttentionPath;
use crate::text::{Corpus, default_text_path};
use crate::tokenizer::GgufTokenizer;

/// The usage text of `kv-eval`.
pub const USAGE: &str = "\
kv-eval: end-to-end quality of KV-cache codecs on a real model (SmolLM2-135M-Instruct,
Q4_1 GGUF, run with candle on the CPU)

Usage:
  kv-eval verify [--tokens N] [--decode] [--reference FILE] [--json OUT]
      Perplexity of the first N (512) tokens of the text with the exact cache, token ids and
      every layer's K and V against the shared reference (16.14; kv.safetensors); --decode
      also scores them token by token.
  kv-eval eval (--codec PLAN | --bpv R | --plan FILE)... [--prefix P] [--cont C]
               [--passages N] [--skip T] [--json OUT]
      Perplexity, Δppl % (95% CI over passages), KL(exact || compressed) and top-1
      agreement of each cache plan: P prefix tokens (512) prefilled, then C (64)
      continuation tokens decoded token by token through every store, on N (8) passages.
  kv-eval iso [--codec PLAN | --plan FILE]... [--defaults] [eval options] [--merge EARLIER]
              [--json OUT] [--markdown OUT]
      The iso-quality table: eval over every family's settings (default: voronoi at 2.5-8
      bpv, turboquant-b2..b8, compat-d4, int4..int8, fp8-e4m3; --codec and --plan replace
      the list, or follow it with --defaults), then the smallest bits per value held per
      family with |Δppl| within 0.5%, 1% and 2%.
      --merge: the plans of an earlier `iso --json` report of the same settings and
      passages come first (a plan in both keeps this run's result).
  kv-eval sensitivity [--probe SPEC] [--protect S:R:C[:int8]] [eval options] [--json OUT]
      The KL(exact || probed) each layer's K and each layer's V costs when coded alone with
      SPEC (voronoi-e8-q9-s2) under protect=S:R:C (4:16:64), every other tensor exact:
      what `kvc plan --budget-bpv R --sensitivity OUT` weighs each layer's error by.
      Defaults: 8 passages of 32 tokens, starting 2000 tokens into the text (--skip), so
      not those of eval and iso (only the last passages, at the end of the text, overlap).
  kv-eval needle [--codec PLAN | --bpv R | --plan FILE]... [--context L] [--depths D,D,...]
                 [--skip T] [--max-new N] [--json OUT]
      A fact inserted at each depth (0.1,0.3,0.5,0.7,0.9) of L (4096) tokens of text,
      retrieved by greedy decoding through the exact and each compressed store
      (default plans: --bpv 3 --bpv 4 and turboquant-b3).
  kv-eval table FILE [--update]
      The Markdown iso-quality table of an `iso --json` file (what the README shows), derived
      from its eval section; --update also rewrites the file's iso section from it.
  kv-eval help
      Show this text (also -h, --help).

Common options:
  --model FILE     the GGUF (default: $KV_EVAL_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf,
                   which `cargo xtask fetch-model` installs)
  --text FILE      UTF-8 text (default: ../shared/data/text/prideprejudice.txt)
  --weights MODE   dequantized (f32 weights, the numpy reference's arithmetic; default) or
                   quantized (candle's Q4_1 x Q8_1 quantized matmul, llama.cpp's arithmetic)
  --chunk N        prefill chunk in tokens (512)
  --decoded-copy   attend over an f32 copy of what each compressed cache decodes to
                   (gathered from the cache as tokens arrive) with the reference attention,
                   instead of kv-codec's attention on the compressed pages at every step;
                   about twice as fast for the 25-plan sweep, next-token distributions
                   equal up to f32 rounding from the same cache
  --quiet          no progress output

Each compressed store is kv-codec's paged cache (batch 1, pages of 16 tokens).
PLAN: a codec spec for K and V of every layer (voronoi-e8-q16-s4, turboquant-b3, int4,
compat-d4-q38, fp8-e4m3, bf16, ...), kivi-bB-gG-rR (the KIVI baseline: B bits, groups of G,
the last R tokens in f16; kivi alone is kivi-b2-g32-r128), or comma-separated k=SPEC, v=SPEC
and raw=L:L:... (layers kept uncompressed, in f16), e.g.
k=voronoi-e8-q23-s4,v=voronoi-e8-q13-s2,raw=0 or kivi-b2-g32-r32,raw=0.
FILE: a per-layer plan as `kvc plan --out` writes it,
{\"layers\":[{\"k\":SPEC|null,\"v\":SPEC|null},...]} (null: f16).
";

/// Options every model command takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Common {
    /// `--model`.
    pub model: PathBuf,
    /// `--text`.
    pub text: PathBuf,
    /// `--weights`.
    pub weights: WeightMode,
    /// `--chunk`.
    pub chunk: usize,
    /// `--quiet`.
    pub quiet: bool,
    /// `--decoded-copy`.
    pub attention: AttentionPath,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            model: default_model_path(),
            text: default_text_path(),
            weights: WeightMode::default(),
            chunk: 512,
            quiet: false,
            attention: AttentionPath::Pages,
        }
    }
}

/// A cache plan as the command line gives it; read once the model's layer count is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanArg {
    /// `--codec PLAN` (or `--bpv R`, as the default codec's spec).
    Text(String),
    /// `--plan FILE`: kv-codec's per-layer plan JSON.
    File(PathBuf),
}

impl PlanArg {
    /// The plan for a model of `layers` layers.
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable file; the errors of [`CachePlan::parse`] and
    /// [`CachePlan::from_json`].
    pub fn resolve(&self, layers: usize) -> Result<CachePlan> {
        match self {
            Self::Text(text) => CachePlan::parse(text, layers),
            Self::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                    action: "cannot read",
                    path: path.clone(),
                    source,
                })?;
                let name = path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into(),
                );
                CachePlan::from_json(&text, layers, &name)
            }
        }
    }
}

/// A parsed command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `kv-eval help`.
    Help,
    /// `kv-eval verify`.
    Verify {
        /// Common options.
        common: Common,
        /// `--tokens`.
        tokens: usize,
        /// `--decode`.
        decode: bool,
        /// `--reference`.
        reference: PathBuf,
        /// `--json`.
        json: Option<PathBuf>,
    },
    /// `kv-eval eval` and `kv-eval iso`.
    Eval {
        /// Common options.
        common: Common,
        /// Plans as given (`--codec` text, or the default codec's spec for `--bpv`).
        plans: Vec<PlanArg>,
        /// The settings.
        settings: EvalSettings,
        /// Whether to build the iso-quality table.
        iso: bool,
        /// `--json`.
        json: Option<PathBuf>,
        /// `--markdown` (iso only).
        markdown: Option<PathBuf>,
        /// `--merge` (iso only): an earlier report whose plans come first.
        merge: Option<PathBuf>,
        /// `--defaults` (iso only): the default sweep before the plans given.
        defaults: bool,
    },
    /// `kv-eval sensitivity`.
    Sensitivity {
        /// Common options.
        common: Common,
        /// `--probe`.
        probe: CodecSpec,
        /// `--protect`.
        protection: Protection,
        /// The settings.
        settings: EvalSettings,
        /// `--json`.
        json: Option<PathBuf>,
    },
    /// `kv-eval needle`.
    Needle {
        /// Common options.
        common: Common,
        /// Plans as given.
        plans: Vec<PlanArg>,
        /// The settings.
        settings: NeedleSettings,
        /// `--json`.
        json: Option<PathBuf>,
    },
    /// `kv-eval table FILE`.
    Table {
        /// The `iso --json` file.
        file: PathBuf,
        /// `--update`: rewrite the file's iso section.
        update: bool,
    },
}

/// Pulls option values off an argument list.
struct Args<I: Iterator<Item = String>> {
    rest: I,
    command: &'static str,
}

impl<I: Iterator<Item = String>> Args<I> {
    fn value(&mut self, option: &'static str) -> Result<String> {
        self.rest.next().ok_or(Error::MissingValue { option })
    }

    fn parsed<T: std::str::FromStr>(
        &mut self,
        option: &'static str,
        expected: &'static str,
    ) -> Result<T> {
        let value = self.value(option)?;
        value.parse().map_err(|_| Error::InvalidValue {
            option,
            value,
            expected,
        })
    }

    fn unknown(&self, option: String) -> Error {
        Error::UnknownOption {
            command: self.command,
            option,
        }
    }

    /// Handles a common option; `Ok(false)` when `arg` is not one.
    fn common(&mut self, arg: &str, c: &mut Common) -> Result<bool> {
        match arg {
            "--model" => c.model = self.value("--model")?.into(),
            "--text" => c.text = self.value("--text")?.into(),
            "--weights" => {
                c.weights = match self.value("--weights")?.as_str() {
                    "dequantized" => WeightMode::Dequantized,
                    "quantized" => WeightMode::Quantized,
                    other => {
                        return Err(Error::InvalidValue {
                            option: "--weights",
                            value: other.to_owned(),
                            expected: "dequantized or quantized",
                        });
                    }
                }
            }
            "--chunk" => c.chunk = self.parsed("--chunk", "a positive integer")?,
            "--quiet" => c.quiet = true,
            "--decoded-copy" => c.attention = AttentionPath::DecodedCopy,
            _ => return Ok(false),
        }
        if c.chunk == 0 {
            return Err(Error::InvalidValue {
                option: "--chunk",
                value: "0".to_owned(),
                expected: "a positive integer",
            });
        }
        Ok(true)
    }

    /// Handles `--codec`, `--plan` and `--bpv` (resolved to the default codec at that rate).
    fn plan(&mut self, arg: &str, plans: &mut Vec<PlanArg>) -> Result<bool> {
        match arg {
            "--codec" => plans.push(PlanArg::Text(self.value("--codec")?)),
            "--plan" => plans.push(PlanArg::File(self.value("--plan")?.into())),
            "--bpv" => {
                let bpv: f64 = self.parsed("--bpv", "a rate in bits per value")?;
                // head_dim 64 is SmolLM2's; the plan is rebuilt against the model's own
                // head_dim when the model is loaded.
                let spec = default_for_rate(bpv, 64).map_err(|source| Error::InvalidCodecSpec {
                    value: format!("--bpv {bpv}"),
                    source,
                })?;
                plans.push(PlanArg::Text(spec.to_string()));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Parses the arguments after the program name.
///
/// # Errors
/// The usage variants of [`Error`].
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command> {
    let mut it = args.into_iter();
    let Some(name) = it.next() else {
        return Err(Error::MissingCommand);
    };
    let command: &'static str = match name.as_str() {
        "help" | "-h" | "--help" => return Ok(Command::Help),
        "verify" => "verify",
        "eval" => "eval",
        "iso" => "iso",
        "sensitivity" => "sensitivity",
        "needle" => "needle",
        "table" => "table",
        _ => return Err(Error::UnknownCommand { command: name }),
    };
    let mut a = Args { rest: it, command };
    let mut common = Common::default();
    let mut json = None;
    match command {
        "verify" => {
            let (mut tokens, mut decode, mut reference) = (512, false, default_reference_path());
            while let Some(arg) = a.rest.next() {
                match arg.as_str() {
                    "--tokens" => tokens = a.parsed("--tokens", "a token count of at least 2")?,
                    "--decode" => decode = true,
                    "--reference" => reference = a.value("--reference")?.into(),
                    "--json" => json = Some(a.value("--json")?.into()),
                    other => {
                        if !a.common(other, &mut common)? {
                            return Err(a.unknown(arg));
                        }
                    }
                }
            }
            Ok(Command::Verify {
                common,
                tokens,
                decode,
                reference,
                json,
            })
        }
        "eval" | "iso" | "sensitivity" => {
            let mut plans = Vec::new();
            let (mut md, mut merge, mut defaults) = (None, None, false);
            let mut settings = EvalSettings::default();
            let mut probe: CodecSpec = DEFAULT_PROBE.parse().expect("valid built-in spec");
            let mut protection: Protection = "4:16:64".parse().expect("valid built-in protection");
            if command == "sensitivity" {
                (settings.cont, settings.skip) = (32, DEFAULT_SKIP);
            }
            while let Some(arg) = a.rest.next() {
                match arg.as_str() {
                    "--prefix" => settings.prefix = a.parsed("--prefix", "a token count")?,
                    "--cont" => settings.cont = a.parsed("--cont", "a token count")?,
                    "--passages" => settings.passages = a.parsed("--passages", "a count")?,
                    "--skip" => settings.skip = a.parsed("--skip", "a token count")?,
                    "--json" => json = Some(a.value("--json")?.into()),
                    "--markdown" if command == "iso" => md = Some(a.value("--markdown")?.into()),
                    "--merge" if command == "iso" => merge = Some(a.value("--merge")?.into()),
                    "--defaults" if command == "iso" => defaults = true,
                    "--probe" if command == "sensitivity" => {
                        let value = a.value("--probe")?;
                        probe = value
                            .parse()
                            .map_err(|source| Error::InvalidCodecSpec { value, source })?;
                    }
                    "--protect" if command == "sensitivity" => {
                        let value = a.value("--protect")?;
                        protection = value.parse().map_err(|_| Error::InvalidValue {
                            option: "--protect",
                            value,
                            expected: "S:R:C or S:R:C:int8 (token counts, window format)",
                        })?;
                    }
                    other => {
                        let plan = command != "sensitivity" && a.plan(other, &mut plans)?;
                        if !plan && !a.common(other, &mut common)? {
                            return Err(a.unknown(arg));
                        }
                    }
                }
            }
            if command == "eval" && plans.is_empty() {
                plans.push(PlanArg::Text(
                    default_for_rate(4.0, 64).map_or_else(|_| "bf16".to_owned(), |s| s.to_string()),
                ));
            }
            if settings.prefix == 0 || settings.cont == 0 || settings.passages == 0 {
                return Err(Error::InvalidValue {
                    option: "--prefix/--cont/--passages",
                    value: "0".to_owned(),
                    expected: "positive counts",
                });
            }
            settings.chunk = common.chunk;
            settings.attention = common.attention;
            if command == "sensitivity" {
                return Ok(Command::Sensitivity {
                    common,
                    probe,
                    protection,
                    settings,
                    json,
                });
            }
            Ok(Command::Eval {
                common,
                plans,
                settings,
                iso: command == "iso",
                json,
                markdown: md,
                merge,
                defaults,
            })
        }
        "needle" => {
            let (mut plans, mut settings) = (Vec::new(), NeedleSettings::default());
            while let Some(arg) = a.rest.next() {
                match arg.as_str() {
                    "--context" => settings.context = a.parsed("--context", "a token count")?,
                    "--depths" => {
                        let v = a.value("--depths")?;
                        settings.depths = v
                            .split(',')
                            .map(|d| {
                                d.trim()
                                    .parse::<f64>()
                                    .ok()
                                    .filter(|d| (0.0..=1.0).contains(d))
                            })
                            .collect::<Option<Vec<f64>>>()
                            .ok_or(Error::InvalidValue {
                                option: "--depths",
                                value: v,
                                expected: "comma-separated fractions in [0, 1]",
                            })?;
                    }
                    "--skip" => settings.skip = a.parsed("--skip", "a token count")?,
                    "--max-new" => settings.max_new = a.parsed("--max-new", "a token count")?,
                    "--json" => json = Some(a.value("--json")?.into()),
                    other => {
                        if !a.common(other, &mut common)? && !a.plan(other, &mut plans)? {
                            return Err(a.unknown(arg));
                        }
                    }
                }
            }
            if plans.is_empty() {
                for bpv in [3.0, 4.0] {
                    if let Ok(s) = default_for_rate(bpv, 64) {
                        plans.push(PlanArg::Text(s.to_string()));
                    }
                }
                plans.push(PlanArg::Text("turboquant-b3".to_owned()));
            }
            settings.chunk = common.chunk;
            settings.attention = common.attention;
            Ok(Command::Needle {
                common,
                plans,
                settings,
                json,
            })
        }
        _ => {
            let (mut file, mut update) = (None, false);
            while let Some(arg) = a.rest.next() {
                match arg.as_str() {
                    "--update" => update = true,
                    _ if file.is_none() && !arg.starts_with("--") => file = Some(arg.into()),
                    _ => return Err(a.unknown(arg)),
                }
            }
            let file = file.ok_or(Error::MissingValue { option: "FILE" })?;
            Ok(Command::Table { file, update })
        }
    }
}

/// What a JSON report says about the model.
#[derive(Clone, Debug, Serialize)]
struct ModelInfo {
    file: String,
    weights: WeightMode,
    config: LlamaConfig,
}

/// The envelope of every JSON report.
#[derive(Debug, Serialize)]
struct Envelope<'a, T: Serialize> {
    tool: String,
    /// The command line that produced the report.
    command: String,
    model: ModelInfo,
    text: String,
    machine: kv_audit::rd::Machine,
    #[serde(flatten)]
    body: &'a T,
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })?;
    std::fs::write(path, text + "\n").map_err(|source| Error::Io {
        action: "cannot write",
        path: path.to_owned(),
        source,
    })
}

fn io(out: &mut dyn Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes()).map_err(|source| Error::Io {
        action: "cannot write",
        path: PathBuf::from("<stdout>"),
        source,
    })
}

/// Loads what every model command needs.
fn setup(common: &Common) -> Result<(Llama, GgufTokenizer, Corpus)> {
    let model = Llama::load(&common.model, common.weights)?;
    let tokenizer = GgufTokenizer::load(&common.model)?;
    let corpus = Corpus::load(&common.text, &tokenizer)?;
    if !common.quiet {
        let c = model.config();
        eprintln!(
            "[load] {}: {} layers, {} heads / {} KV heads × {}, {:?} weights; text {} tokens",
            common.model.display(),
            c.layers,
            c.heads,
            c.kv_heads,
            c.head_dim,
            common.weights,
            corpus.tokens.len()
        );
    }
    Ok((model, tokenizer, corpus))
}

fn envelope<'a, T: Serialize>(
    tool: &str,
    common: &Common,
    model: &Llama,
    body: &'a T,
) -> Envelope<'a, T> {
    Envelope {
        tool: format!("kv-eval {tool}"),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        model: ModelInfo {
            file: common.model.file_name().map_or_else(
                || MODEL_FILE.to_owned(),
                |n| n.to_string_lossy().into_owned(),
            ),
            weights: model.weight_mode(),
            config: model.config().clone(),
        },
        text: common
            .text
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        machine: kv_audit::rd::Machine::current(),
        body,
    }
}

fn plans(args: &[PlanArg], layers: usize) -> Result<Vec<CachePlan>> {
    args.iter().map(|a| a.resolve(layers)).collect()
}

/// Runs a command, writing its report to `out`.
///
/// # Errors
/// Whatever the command fails with.
pub fn run(command: &Command, out: &mut dyn Write) -> Result<()> {
    match command {
        Command::Help => io(out, USAGE),
        Command::Verify {
            common,
            tokens,
            decode,
            reference,
            json,
        } => {
            let (model, _, corpus) = setup(common)?;
            let reference = Reference::load(reference)?;
            let r = verify(
                &model,
                &corpus.tokens,
                &reference,
                *tokens,
                *decode,
                common.quiet,
            )?;
            let decode_text = r
                .ppl_decode
                .map_or_else(String::new, |p| format!(", token by token {p:.4}"));
            io(
                out,
                &format!(
                    "tokens: {} checked, {} differ from the reference\n\
                     perplexity of the first {} tokens (exact cache): prefill {:.4}{decode_text} \
                     (reference {} for 512)\n\
                     K vs reference: max |ΔK|/max|K| {:.2e} (worst layer), rel-MSE {:.2e}\n\
                     V vs reference: max |ΔV|/max|V| {:.2e} (worst layer), rel-MSE {:.2e}\n",
                    r.tokens,
                    r.token_mismatches,
                    r.tokens,
                    r.ppl_prefill,
                    r.ppl_reference_512,
                    r.k_max_rel_err,
                    r.k_rel_mse,
                    r.v_max_rel_err,
                    r.v_rel_mse
                ),
            )?;
            if let Some(path) = json {
                write_json(path, &envelope("verify", common, &model, &r))?;
            }
            Ok(())
        }
        Command::Eval {
            common,
            plans: texts,
            settings,
            iso,
            json,
            markdown: md,
            merge,
            defaults,
        } => {
            // An earlier report is read before the run, so that a bad file fails at once.
            let earlier = merge.as_deref().map(read_eval_report).transpose()?;
            let (model, _, corpus) = setup(common)?;
            let layers = model.config().layers;
            let mut list = if *iso && (texts.is_empty() || *defaults) {
                default_plans(layers)
            } else {
                Vec::new()
            };
            list.extend(plans(texts, layers)?);
            let mut report = evaluate(&model, &corpus, &list, settings, common.quiet)?;
            if let (Some(path), Some((_, earlier))) = (merge, earlier) {
                report = match report.clone().after(earlier) {
                    Ok(merged) => merged,
                    Err(what) => {
                        // The run is not lost: its own report goes beside the JSON asked for.
                        let kept = json.as_ref().map(|j| j.with_extension("unmerged.json"));
                        if let Some(k) = &kept {
                            let body = serde_json::json!({ "eval": &report });
                            write_json(k, &envelope("iso", common, &model, &body))?;
                        }
                        return Err(Error::MergeMismatch {
                            path: path.clone(),
                            what,
                            kept,
                        });
                    }
                };
            }
            io(out, &crate::eval::table(&report))?;
            #[derive(Serialize)]
            struct IsoBody<'a> {
                eval: &'a EvalReport,
                #[serde(skip_serializing_if = "Option::is_none")]
                iso: Option<crate::iso::IsoTable>,
            }
            let table = iso.then(|| iso_table(&report));
            if let Some(t) = &table {
                let text = markdown(&report, t);
                io(out, &format!("\n{text}"))?;
                if let Some(path) = md {
                    std::fs::write(path, &text).map_err(|source| Error::Io {
                        action: "cannot write",
                        path: path.clone(),
                        source,
                    })?;
                }
            }
            if let Some(path) = json {
                let body = IsoBody {
                    eval: &report,
                    iso: table,
                };
                write_json(
                    path,
                    &envelope(if *iso { "iso" } else { "eval" }, common, &model, &body),
                )?;
            }
            Ok(())
        }
        Command::Sensitivity {
            common,
            probe,
            protection,
            settings,
            json,
        } => {
            let (model, _, corpus) = setup(common)?;
            let report = sensitivity(&model, &corpus, *probe, *protection, settings, common.quiet)?;
            io(out, &crate::sensitivity::table(&report))?;
            if let Some(path) = json {
                write_json(path, &envelope("sensitivity", common, &model, &report))?;
            }
            Ok(())
        }
        Command::Needle {
            common,
            plans: texts,
            settings,
            json,
        } => {
            let (model, tokenizer, corpus) = setup(common)?;
            let list = plans(texts, model.config().layers)?;
            let report = needle(&model, &tokenizer, &corpus, &list, settings, common.quiet)?;
            io(out, &crate::needle::table(&report))?;
            if let Some(path) = json {
                write_json(path, &envelope("needle", common, &model, &report))?;
            }
            Ok(())
        }
        Command::Table { file, update } => {
            let (mut value, report) = read_eval_report(file)?;
            let table = iso_table(&report);
            if *update {
                value["iso"] = serde_json::to_value(&table).map_err(|source| Error::Json {
                    path: file.clone(),
                    source,
                })?;
                write_json(file, &value)?;
            }
            io(out, &markdown(&report, &table))
        }
    }
}

/// An `eval`/`iso --json` file, as JSON and as the evaluation report it holds.
fn read_eval_report(file: &Path) -> Result<(serde_json::Value, EvalReport)> {
    let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
        action: "cannot read",
        path: file.to_owned(),
        source,
    })?;
    let bad = |source| Error::Json {
        path: file.to_owned(),
        source,
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
    let report =
        serde_json::from_value(value.get("eval").cloned().unwrap_or_default()).map_err(bad)?;
    Ok((value, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command> {
        parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn commands_parse() {
        assert_eq!(p(&["help"]).unwrap(), Command::Help);
        match p(&[
            "eval",
            "--codec",
            "int8",
            "--bpv",
            "4",
            "--passages",
            "3",
            "--quiet",
        ])
        .unwrap()
        {
            Command::Eval {
                plans,
                settings,
                iso,
                common,
                ..
            } => {
                assert_eq!(plans[0], PlanArg::Text("int8".to_owned()));
                assert!(matches!(&plans[1], PlanArg::Text(t) if t.starts_with("voronoi-e8-")));
                assert_eq!(settings.passages, 3);
                assert_eq!(settings.attention, AttentionPath::Pages);
                assert!(!iso && common.quiet);
            }
            other => panic!("{other:?}"),
        }
        match p(&[
            "iso",
            "--plan",
            "p.json",
            "--codec",
            "kivi-b2-g32-r32",
            "--decoded-copy",
            "--merge",
            "old.json",
            "--defaults",
        ])
        .unwrap()
        {
            Command::Eval {
                plans,
                settings,
                merge,
                defaults,
                ..
            } => {
                assert!(defaults);
                assert_eq!(plans[0], PlanArg::File("p.json".into()));
                assert_eq!(plans[1].resolve(30).unwrap().label(), "kivi-b2-g32-r32");
                assert_eq!(settings.attention, AttentionPath::DecodedCopy);
                assert_eq!(merge, Some(PathBuf::from("old.json")));
            }
            other => panic!("{other:?}"),
        }
        // Only iso merges and adds the defaults.
        assert!(p(&["eval", "--merge", "old.json"]).is_err());
        assert!(p(&["eval", "--defaults"]).is_err());
        match p(&["sensitivity", "--protect", "1:8:0", "--passages", "2"]).unwrap() {
            Command::Sensitivity {
                probe,
                protection,
                settings,
                ..
            } => {
                assert_eq!(probe.to_string(), DEFAULT_PROBE);
                assert_eq!(
                    protection,
                    Protection {
                        sink_tokens: 1,
                        recent_tokens: 8,
                        ..Protection::NONE
                    }
                );
                assert_eq!(
                    (settings.passages, settings.cont, settings.skip),
                    (2, 32, DEFAULT_SKIP)
                );
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            &["sensitivity", "--probe", "nope"][..],
            &["sensitivity", "--protect", "1:2"],
            &["sensitivity", "--codec", "int8"],
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
        match p(&["needle", "--depths", "0.25,0.75", "--context", "1024"]).unwrap() {
            Command::Needle {
                settings, plans, ..
            } => {
                assert_eq!(settings.depths, vec![0.25, 0.75]);
                assert_eq!(settings.context, 1024);
                assert_eq!(plans.len(), 3);
            }
            other => panic!("{other:?}"),
        }
        match p(&["verify", "--tokens", "32", "--weights", "quantized"]).unwrap() {
            Command::Verify { tokens, common, .. } => {
                assert_eq!(tokens, 32);
                assert_eq!(common.weights, WeightMode::Quantized);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn misuse_is_a_usage_error() {
        for args in [
            &[][..],
            &["frobnicate"],
            &["eval", "--nope"],
            &["eval", "--passages"],
            &["eval", "--passages", "x"],
            &["eval", "--passages", "0"],
            &["needle", "--depths", "0.5,2"],
            &["verify", "--weights", "q8"],
            &["iso", "--chunk", "0"],
            &["eval", "--bpv", "0.1"],
            &["table"],
            &["eval", "--plan"],
            &["eval", "--redecode"],
        ] {
            let e = p(args).unwrap_err();
            assert!(e.is_usage(), "{args:?}: {e}");
        }
    }

    #[test]
    fn table_is_derived_from_the_eval_section_and_can_update_the_file() {
        use crate::eval::{ExactResult, PlanResult};
        use crate::stats::MeanCi;
        let plan = |name: &str, bpv: f64, delta: &[f64]| PlanResult {
            plan: name.to_owned(),
            family: Some("turboquant".to_owned()),
            bits_per_value: bpv,
            held_bits_per_value: None,
            compression_vs_bf16: 16.0 / bpv,
            held_bytes_per_token: 0.0,
            ppl: 10.0,
            ppl_passages: vec![10.0; delta.len()],
            delta_ppl_pct: MeanCi::of(delta),
            delta_ppl_pct_passages: delta.to_vec(),
            kl: MeanCi::of(&[0.01, 0.02]),
            top1_agreement: 0.9,
        };
        let report = EvalReport {
            settings: EvalSettings::default(),
            passage_starts: vec![0, 10],
            exact: ExactResult {
                ppl: 10.0,
                ppl_passages: vec![10.0, 10.0],
                held_bytes_per_token: 0.0,
            },
            plans: vec![
                plan("turboquant-b4", 4.25, &[3.0, 3.2]),
                plan("turboquant-b5", 5.25, &[0.3, 0.31]),
            ],
            seconds: 1.0,
            decode_step_seconds: 0.0,
        };
        let path = std::env::temp_dir().join(format!("kv-eval-table-{}.json", std::process::id()));
        let stale = serde_json::json!({ "tool": "kv-eval iso", "eval": report, "iso": null });
        std::fs::write(&path, stale.to_string()).unwrap();
        let mut out = Vec::new();
        let cmd = p(&["table", path.to_str().unwrap(), "--update"]).unwrap();
        run(&cmd, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("| turboquant (2 settings) | 5.25 bpv"),
            "{text}"
        );
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written["tool"], "kv-eval iso");
        assert!(written["iso"]["rows"][0]["cells"][1]["interpolated_bits_per_value"].is_number());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn plan_files_are_read() {
        let path = std::env::temp_dir().join(format!("kv-eval-plan-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"layers":[{"k":"int8","v":"int4"},{"k":null,"v":null}]}"#,
        )
        .unwrap();
        let arg = PlanArg::File(path.clone());
        let plan = arg.resolve(2).unwrap();
        assert_eq!(plan.layers[1], crate::plan::LayerChoice::RAW);
        assert!(arg.resolve(3).unwrap_err().is_usage());
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(arg.resolve(2), Err(Error::Io { .. })));
    }

    #[test]
    fn help_is_printed() {
        let mut out = Vec::new();
        run(&Command::Help, &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("kv-eval needle"));
    }
}
