//! Rate–distortion sweeps: encode and decode every vector of a [`KvSource`] with each codec
//! setting, and measure rate, distortion (rel-MSE, SNR, Shannon gap, per layer too) and
//! throughput.

use std::time::{Duration, Instant};

use kv_codec::codecs::voronoi::default_for_rate;
use kv_codec::{CodecConfig, CodecSpec, Input, Output};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::metrics::{ErrorEnergy, shannon_gap_db, snr_db};
use crate::source::{KvSource, Segment, SourceInfo};

/// Rates (bits per value) swept when neither codecs nor rates are asked for.
pub const DEFAULT_RATES: [f64; 3] = [3.0, 4.0, 5.0];

/// One codec to measure, and the rate it was chosen for, if any.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Setting {
    /// The codec.
    pub spec: CodecSpec,
    /// The `--bpv` rate [`default_for_rate`] resolved to `spec`, if it came from one.
    pub from_bpv: Option<f64>,
}

/// The settings of a sweep: each explicit codec, then the default codec at each rate (at
/// [`DEFAULT_RATES`] when both lists are empty). A spec already in the list is not repeated.
///
/// # Errors
/// [`Error::Codec`] when no default codec reaches a rate at this head_dim.
pub fn resolve_settings(
    codecs: &[CodecSpec],
    rates: &[f64],
    head_dim: usize,
) -> Result<Vec<Setting>> {
    let rates: &[f64] = if codecs.is_empty() && rates.is_empty() {
        &DEFAULT_RATES
    } else {
        rates
    };
    let mut out: Vec<Setting> = Vec::new();
    for &spec in codecs {
        if !out.iter().any(|s| s.spec == spec) {
            out.push(Setting {
                spec,
                from_bpv: None,
            });
        }
    }
    for &bpv in rates {
        let spec = default_for_rate(bpv, head_dim).map_err(|source| Error::Codec {
            spec: format!("bpv {bpv}"),
            source,
        })?;
        if !out.iter().any(|s| s.spec == spec) {
            out.push(Setting {
                spec,
                from_bpv: Some(bpv),
            });
        }
    }
    Ok(out)
}

/// Codec families measured by [`family_settings`], with every setting of each that a sweep
/// from 2 to 8 bits per value can use. The default family (`voronoi`) resolves rates through
/// [`default_for_rate`] instead of a list.
pub const FAMILIES: [&str; 9] = [
    "voronoi",
    "compat-d4",
    "compat-e8",
    "turboquant",
    "int",
    "fp8-e4m3",
    "q4_0",
    "q8_0",
    "strawman",
];

/// The settings of `family` (one of [`FAMILIES`]) that parse and build at `head_dim`.
fn family_specs(family: &str, head_dim: usize) -> Vec<CodecSpec> {
    let names: Vec<String> = match family {
        "compat-d4" | "compat-e8" => (1..=64).map(|q| format!("{family}-q{q}")).collect(),
        "turboquant" | "strawman" => (2..=8).map(|b| format!("{family}-b{b}")).collect(),
        "int" => (2..=8).map(|b| format!("int{b}")).collect(),
        fixed => vec![fixed.to_string()],
    };
    names
        .iter()
        .filter_map(|name| name.parse::<CodecSpec>().ok())
        .filter(|&spec| CodecConfig::new(spec, head_dim).build().is_ok())
        .collect()
}

/// For every family of [`FAMILIES`] and every rate, the family's setting nearest that rate
/// in bits per value (the lower one on ties; the default family: [`default_for_rate`]),
/// kept only within half a bit of the rate, so that fixed-rate baselines join the sweep
/// near their own rate only. A spec already in the list is not repeated.
///
/// # Errors
/// [`Error::Codec`] when a codec cannot be built at this head_dim.
pub fn family_settings(rates: &[f64], head_dim: usize) -> Result<Vec<Setting>> {
    let mut out: Vec<Setting> = Vec::new();
    for family in FAMILIES {
        let specs = family_specs(family, head_dim);
        for &bpv in rates {
            let nearest = if family == "voronoi" {
                default_for_rate(bpv, head_dim).ok()
            } else {
                let mut by_distance = Vec::new();
                for &spec in &specs {
                    let codec = CodecConfig::new(spec, head_dim).build().map_err(|source| {
                        Error::Codec {
                            spec: spec.to_string(),
                            source,
                        }
                    })?;
                    let rate = codec.bits_per_value();
                    by_distance.push(((rate - bpv).abs(), rate, spec));
                }
                by_distance
                    .into_iter()
                    .filter(|(distance, _, _)| *distance <= 0.5)
                    .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)))
                    .map(|(_, _, spec)| spec)
            };
            if let Some(spec) = nearest
                && !out.iter().any(|s| s.spec == spec)
            {
                out.push(Setting {
                    spec,
                    from_bpv: Some(bpv),
                });
            }
        }
    }
    Ok(out)
}

/// The measurements of one codec over a whole source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RdResult {
    /// The codec spec string.
    pub codec: String,
    /// The `--bpv` rate this codec was resolved from, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_bpv: Option<f64>,
    /// Bits per value as stored: bits_per_vector / head_dim (algorithm brief §4: every stored
    /// bit of a vector, scales and norms included, over d). Batches are packed at bit
    /// granularity, so `8 · bytes / (vectors · head_dim)` exceeds it only by the padding of
    /// the last byte.
    pub bits_per_value: f64,
    /// Bits per vector, everything stored included.
    pub bits_per_vector: u32,
    /// Encoded bytes of every vector of the source (one batch).
    pub bytes: usize,
    /// Values per vector.
    pub head_dim: usize,
    /// Vectors encoded.
    pub vectors: usize,
    /// Σ‖x − x̂‖² / Σ‖x‖² over all K.
    pub rel_mse_k: f64,
    /// Σ‖x − x̂‖² / Σ‖x‖² over all V.
    pub rel_mse_v: f64,
    /// −10·log10(rel_mse_k).
    pub snr_db_k: f64,
    /// −10·log10(rel_mse_v).
    pub snr_db_v: f64,
    /// Mean over K and V of 20·log10(2)·bits_per_value − SNR.
    pub shannon_gap_db: f64,
    /// Million vectors per second of the encode call (wall clock).
    pub encode_mvec_s: f64,
    /// Million vectors per second of the decode call (wall clock).
    pub decode_mvec_s: f64,
    /// Seconds of the encode call.
    pub encode_s: f64,
    /// Seconds of the decode call.
    pub decode_s: f64,
    /// Rayon threads the codec ran on.
    pub threads: usize,
    /// rel-MSE of each K segment (layer), in the order of the source's `k_tensors`.
    pub rel_mse_k_layers: Vec<f64>,
    /// rel-MSE of each V segment (layer), in the order of the source's `v_tensors`.
    pub rel_mse_v_layers: Vec<f64>,
}

/// The machine a sweep ran on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// The CPU's model name from `/proc/cpuinfo`, where readable.
    pub cpu: Option<String>,
    /// Rayon threads.
    pub threads: usize,
    /// Operating system (`std::env::consts::OS`).
    pub os: &'static str,
    /// CPU architecture (`std::env::consts::ARCH`).
    pub arch: &'static str,
}

impl Machine {
    /// This machine.
    pub fn current() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            });
        Self {
            cpu,
            threads: rayon::current_num_threads(),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        }
    }
}

/// A whole sweep: what was measured, where, and the results, one per codec.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RdReport {
    /// The source of the vectors.
    pub source: SourceInfo,
    /// The machine.
    pub machine: Machine,
    /// One result per codec setting, in the order given.
    pub results: Vec<RdResult>,
}

/// Sums of each segment, and of all of them.
fn segment_sums(
    source: &KvSource,
    decoded: &[f32],
    segments: &[Segment],
) -> (ErrorEnergy, Vec<f64>) {
    let d = source.head_dim;
    let mut total = ErrorEnergy::default();
    let layers = segments
        .iter()
        .map(|s| {
            let r = s.vectors.start * d..s.vectors.end * d;
            let e = ErrorEnergy::of(&source.values[r.clone()], &decoded[r]);
            total.merge(e);
            e.rel_mse()
        })
        .collect();
    (total, layers)
}

fn mvec_per_s(vectors: usize, t: Duration) -> f64 {
    vectors as f64 / t.as_secs_f64() / 1e6
}

/// Encodes and decodes the whole source with one codec (in one batch each, on rayon's
/// global pool, as the codec's own entry points do) and measures it.
///
/// # Errors
/// [`Error::Codec`] if the codec cannot be built at this head_dim or rejects the data.
pub fn run_codec(source: &KvSource, setting: &Setting) -> Result<RdResult> {
    let spec = setting.spec;
    let codec_err = |source| Error::Codec {
        spec: spec.to_string(),
        source,
    };
    let codec = CodecConfig::new(spec, source.head_dim)
        .build()
        .map_err(codec_err)?;
    let n = source.vectors();
    let mut bytes = vec![0u8; codec.encoded_len(n)];
    let mut decoded = vec![0f32; source.values.len()];

    let t0 = Instant::now();
    codec
        .encode(Input::F32(&source.values), &mut bytes)
        .map_err(codec_err)?;
    let t_enc = t0.elapsed();
    let t0 = Instant::now();
    codec
        .decode(&bytes, Output::F32(&mut decoded))
        .map_err(codec_err)?;
    let t_dec = t0.elapsed();

    let (k, rel_mse_k_layers) = segment_sums(source, &decoded, &source.k);
    let (v, rel_mse_v_layers) = segment_sums(source, &decoded, &source.v);
    let bits_per_value = f64::from(codec.bits_per_vector()) / source.head_dim as f64;
    let (rel_mse_k, rel_mse_v) = (k.rel_mse(), v.rel_mse());
    let (snr_db_k, snr_db_v) = (snr_db(rel_mse_k), snr_db(rel_mse_v));
    Ok(RdResult {
        codec: spec.to_string(),
        from_bpv: setting.from_bpv,
        bits_per_value,
        bits_per_vector: codec.bits_per_vector(),
        bytes: bytes.len(),
        head_dim: source.head_dim,
        vectors: n,
        rel_mse_k,
        rel_mse_v,
        snr_db_k,
        snr_db_v,
        shannon_gap_db: (shannon_gap_db(bits_per_value, snr_db_k)
            + shannon_gap_db(bits_per_value, snr_db_v))
            / 2.0,
        encode_mvec_s: mvec_per_s(n, t_enc),
        decode_mvec_s: mvec_per_s(n, t_dec),
        encode_s: t_enc.as_secs_f64(),
        decode_s: t_dec.as_secs_f64(),
        threads: rayon::current_num_threads(),
        rel_mse_k_layers,
        rel_mse_v_layers,
    })
}

/// Runs every setting over the source.
///
/// # Errors
/// As [`run_codec`].
pub fn sweep(source: &KvSource, settings: &[Setting]) -> Result<RdReport> {
    // Start every pool thread before the first timed call, so it does not pay for that.
    rayon::broadcast(|_| ());
    let results = settings
        .iter()
        .map(|s| run_codec(source, s))
        .collect::<Result<_>>()?;
    Ok(RdReport {
        source: source.info.clone(),
        machine: Machine::current(),
        results,
    })
}
