//! The report's tables (insta snapshots of fixed numbers), paired comparisons with their
//! confidence intervals, the codec families of the charts, and the JSON round trip that
//! `kvc report --from` relies on.

use kv_audit::chart::family;
use kv_audit::rd::{Machine, RdReport, RdResult};
use kv_audit::report::{
    compare, comparison_table, default_pairs, markdown_table, read_json, write_json,
};
use kv_audit::source::KvSource;
use kv_audit::stats::student_t_quantile;

fn result(codec: &str, bpv: f64, k: &[f64], v: &[f64]) -> RdResult {
    let pooled = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let snr = |x: f64| -10.0 * x.log10();
    RdResult {
        codec: codec.to_owned(),
        from_bpv: None,
        bits_per_value: bpv,
        bits_per_vector: (bpv * 64.0) as u32,
        bytes: 1000,
        head_dim: 64,
        vectors: 100,
        rel_mse_k: pooled(k),
        rel_mse_v: pooled(v),
        snr_db_k: snr(pooled(k)),
        snr_db_v: snr(pooled(v)),
        shannon_gap_db: 6.02 * bpv - (snr(pooled(k)) + snr(pooled(v))) / 2.0,
        encode_mvec_s: 1.0,
        decode_mvec_s: f64::INFINITY,
        encode_s: 0.1,
        decode_s: 0.0,
        threads: 2,
        rel_mse_k_layers: k.to_vec(),
        rel_mse_v_layers: v.to_vec(),
    }
}

fn results() -> Vec<RdResult> {
    vec![
        result(
            "turboquant-b3",
            3.25,
            &[0.03, 0.032, 0.031],
            &[0.033, 0.034, 0.035],
        ),
        result(
            "voronoi-e8-q6-s3",
            2.96875,
            &[0.03, 0.031, 0.032],
            &[0.031, 0.032, 0.033],
        ),
        result(
            "voronoi-e8-q9-s2",
            3.46875,
            &[0.016, 0.015, 0.017],
            &[0.016, 0.016, 0.016],
        ),
        result("bf16", 16.0, &[1e-5, 1e-5, 1e-5], &[0.0, 0.0, 0.0]),
    ]
}

#[test]
fn markdown_tables_snapshot() {
    let r = results();
    insta::assert_snapshot!("markdown_table", markdown_table(&r));
    let pairs = default_pairs(&r);
    // TurboQuant at 3.25 bits against the Voronoi code with the most bits not above it.
    assert_eq!(pairs, vec![(1, 0)]);
    let c: Vec<_> = pairs.iter().map(|&(a, b)| compare(&r[a], &r[b])).collect();
    insta::assert_snapshot!("comparison_table", comparison_table(&c));
}

#[test]
fn comparisons_are_paired_over_layers_with_student_t_intervals() {
    let r = results();
    let c = compare(&r[1], &r[0]);
    let snr = |x: f64| -10.0 * x.log10();
    let d: Vec<f64> = r[1]
        .rel_mse_k_layers
        .iter()
        .zip(&r[0].rel_mse_k_layers)
        .map(|(&a, &b)| snr(a) - snr(b))
        .collect();
    let mean = d.iter().sum::<f64>() / 3.0;
    let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    assert!((c.k_snr_diff_db.mean - mean).abs() < 1e-12);
    assert!(
        (c.k_snr_diff_db.half_width - student_t_quantile(0.95, 2) * sd / 3f64.sqrt()).abs() < 1e-12
    );
    assert_eq!(c.k_snr_diff_db.n, 3);
}

#[test]
fn families_group_one_scheme_per_line() {
    assert_eq!(family("voronoi-e8-q16-s4"), "voronoi-e8");
    assert_eq!(family("voronoi-e8-q190-s2"), "voronoi-e8");
    assert_eq!(family("compat-d4-q38"), "compat-d4");
    assert_eq!(family("compat-e8-q4-joint"), "compat-e8-joint");
    assert_eq!(family("turboquant-b3"), "turboquant");
    assert_eq!(family("int4-g32"), "int-g32");
    assert_eq!(family("q4_0"), "llama.cpp q_0");
    assert_eq!(family("not a codec"), "not a codec");
}

#[test]
fn a_written_report_reads_back_with_its_infinities() {
    let report = RdReport {
        source: KvSource::gaussian(8, 64, 1).unwrap().info,
        machine: Machine::current(),
        results: results(),
    };
    let path = std::env::temp_dir().join(format!("kvc-report-rt-{}.json", std::process::id()));
    write_json(&path, &report).unwrap();
    let back = read_json(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    // bf16's V error is zero: its SNR is +∞ and its gap −∞, written as null.
    assert_eq!(back.results[3].snr_db_v, f64::INFINITY);
    assert_eq!(back.results[3].shannon_gap_db, f64::NEG_INFINITY);
    // serde_json parses floats to within an ulp or so (not bit-exactly) by default.
    assert_eq!(back.source, report.source);
    assert_eq!(back.machine, report.machine);
    for (a, b) in back.results.iter().zip(&report.results) {
        assert_eq!(a.codec, b.codec);
        assert_eq!(a.bits_per_vector, b.bits_per_vector);
        for (x, y) in [
            (a.snr_db_k, b.snr_db_k),
            (a.bits_per_value, b.bits_per_value),
        ] {
            assert!(x == y || (x - y).abs() < 1e-12 * y.abs(), "{x} vs {y}");
        }
        assert_eq!(a.rel_mse_k_layers.len(), b.rel_mse_k_layers.len());
    }
}
