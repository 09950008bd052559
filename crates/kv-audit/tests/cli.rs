//! The `kvc` command line: parsing of good and bad arguments into typed commands and
//! errors, and end-to-end runs of the binary on the committed sample.

use std::path::PathBuf;
use std::process::Command as Process;

use kv_audit::Error;
use kv_audit::cli::{
    AuditArgs, Command, PlanArgs, RdArgs, ReportArgs, SliceArgs, SourceArgs, find_eval_tool, parse,
};
use kv_audit::plan::{DEFAULT_PROBE_TOKENS, Objective};
use kv_codec::CodecSpec;
use kv_codec::cache::{Protection, WindowFormat};

fn spec(s: &str) -> CodecSpec {
    s.parse().unwrap()
}

#[test]
fn simple_commands_parse() {
    assert_eq!(parse(["codecs"]).unwrap(), Command::Codecs);
    for args in [
        &["help"][..],
        &["--help"],
        &["-h"],
        &["rd", "--help"],
        &["slice", "-h"],
        &["codecs", "--help"],
    ] {
        assert_eq!(
            parse(args.iter().copied()).unwrap(),
            Command::Help,
            "{args:?}"
        );
    }
    assert_eq!(parse(["rd"]).unwrap(), Command::Rd(RdArgs::default()));
}

#[test]
fn eval_passes_its_arguments_to_kv_eval() {
    let eval = |args: &[&str]| {
        let mut all = vec!["eval"];
        all.extend_from_slice(args);
        parse(all).unwrap()
    };
    let owned = |args: &[&str]| Command::Eval(args.iter().map(|a| (*a).to_string()).collect());
    assert_eq!(eval(&[]), owned(&["eval"]));
    assert_eq!(
        eval(&["--codec", "int4", "--passages", "2"]),
        owned(&["eval", "--codec", "int4", "--passages", "2"])
    );
    assert_eq!(eval(&["iso", "--defaults"]), owned(&["iso", "--defaults"]));
    assert_eq!(eval(&["needle"]), owned(&["needle"]));
    assert_eq!(eval(&["help"]), owned(&["help"]));
}

#[test]
fn the_eval_tool_is_found_beside_kvc_before_path() {
    let root = std::env::temp_dir().join(format!("kvc-eval-tool-{}", std::process::id()));
    let (beside, on_path, empty) = (root.join("beside"), root.join("path"), root.join("empty"));
    for dir in [&beside, &on_path, &empty] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let name = format!("kv-eval{}", std::env::consts::EXE_SUFFIX);
    std::fs::write(on_path.join(&name), b"").unwrap();
    let path = std::env::join_paths([&empty, &on_path]).unwrap();
    assert_eq!(
        find_eval_tool(&beside, Some(&path)),
        Some(on_path.join(&name))
    );
    std::fs::write(beside.join(&name), b"").unwrap();
    assert_eq!(
        find_eval_tool(&beside, Some(&path)),
        Some(beside.join(&name))
    );
    assert_eq!(find_eval_tool(&empty, None), None);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn rd_options_parse_in_both_forms() {
    let got = parse([
        "rd",
        "--input",
        "kv.safetensors",
        "--codec",
        "compat-d4-q38",
        "--codec=voronoi-e8-q16-s2",
        "--bpv",
        "3",
        "--bpv=4.5",
        "--json",
        "out.json",
    ])
    .unwrap();
    let want = RdArgs {
        source: SourceArgs {
            input: Some(PathBuf::from("kv.safetensors")),
            ..SourceArgs::default()
        },
        codecs: vec![spec("compat-d4-q38"), spec("voronoi-e8-q16-s2")],
        bpv: vec![3.0, 4.5],
        json: Some(PathBuf::from("out.json")),
        every_family: false,
    };
    assert_eq!(got, Command::Rd(want));

    let got = parse([
        "rd",
        "--gaussian",
        "1000",
        "--every-family",
        "--head-dim",
        "128",
        "--seed=7",
    ])
    .unwrap();
    let want = RdArgs {
        source: SourceArgs {
            gaussian: Some(1000),
            head_dim: Some(128),
            seed: Some(7),
            ..SourceArgs::default()
        },
        every_family: true,
        ..RdArgs::default()
    };
    assert_eq!(got, Command::Rd(want));
}

#[test]
fn slice_options_parse() {
    let got = parse([
        "slice",
        "--tokens",
        "128",
        "--out",
        "b.safetensors",
        "--input",
        "a.safetensors",
    ])
    .unwrap();
    let want = SliceArgs {
        input: "a.safetensors".into(),
        tokens: 128,
        out: "b.safetensors".into(),
    };
    assert_eq!(got, Command::Slice(want));
}

#[test]
fn audit_plan_and_report_take_a_bare_file_or_source_options() {
    let file = SourceArgs {
        input: Some(PathBuf::from("kv.safetensors")),
        ..SourceArgs::default()
    };
    assert_eq!(
        parse(["audit", "kv.safetensors", "--json", "a.json"]).unwrap(),
        Command::Audit(AuditArgs {
            source: file.clone(),
            json: Some(PathBuf::from("a.json")),
        })
    );
    assert_eq!(
        parse(["audit", "--gaussian", "64", "--head-dim", "128"]).unwrap(),
        Command::Audit(AuditArgs {
            source: SourceArgs {
                gaussian: Some(64),
                head_dim: Some(128),
                ..SourceArgs::default()
            },
            json: None,
        })
    );
    assert_eq!(
        parse(["plan", "kv.safetensors", "--target-snr", "25.5", "--verify"]).unwrap(),
        Command::Plan(PlanArgs {
            source: file.clone(),
            objective: Objective::TargetSnrDb(25.5),
            probe_tokens: DEFAULT_PROBE_TOKENS,
            out: None,
            prediction: None,
            sensitivity: None,
            candidates: None,
            protect: None,
            verify: true,
        })
    );
    assert_eq!(
        parse([
            "plan",
            "--budget-bpv=3.5",
            "--probe-tokens",
            "16",
            "--out",
            "p.json",
            "--prediction",
            "q.json",
            "--sensitivity",
            "s.json",
            "--candidates",
            "turboquant-b2, turboquant-b3",
            "--protect",
            "4:32:64:int8"
        ])
        .unwrap(),
        Command::Plan(PlanArgs {
            source: SourceArgs::default(),
            objective: Objective::BudgetBpv(3.5),
            probe_tokens: 16,
            out: Some(PathBuf::from("p.json")),
            prediction: Some(PathBuf::from("q.json")),
            sensitivity: Some(PathBuf::from("s.json")),
            candidates: Some(vec![
                "turboquant-b2".parse().unwrap(),
                "turboquant-b3".parse().unwrap()
            ]),
            protect: Some(Protection {
                sink_tokens: 4,
                recent_tokens: 32,
                key_centre_tokens: 64,
                window: WindowFormat::Int8,
            }),
            verify: false,
        })
    );
    for bad in ["4:32", "4:32:64:int4", "4:32:64:int8:1"] {
        assert!(
            matches!(
                parse([
                    "plan",
                    "--budget-bpv",
                    "3",
                    "--sensitivity",
                    "s.json",
                    "--protect",
                    bad
                ]),
                Err(Error::InvalidValue {
                    option: "--protect",
                    ..
                })
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        parse(["plan", "--budget-bpv", "3", "--protect", "4:16:64"]),
        Err(Error::MissingOption {
            option: "--sensitivity",
            ..
        })
    ));
    assert!(matches!(
        parse(["plan", "--budget-bpv", "3", "--candidates", "int4,nope"]),
        Err(Error::InvalidCodecSpec { .. })
    ));
    assert!(matches!(
        parse(["plan", "--target-snr", "20", "--sensitivity", "s.json"]),
        Err(Error::ConflictingOptions {
            option: "--sensitivity",
            ..
        })
    ));
    assert_eq!(
        parse(["report", "--from", "rd.json", "--out", "dir"]).unwrap(),
        Command::Report(ReportArgs {
            source: SourceArgs::default(),
            from: Some(PathBuf::from("rd.json")),
            out: Some(PathBuf::from("dir")),
        })
    );
    assert_eq!(
        parse(["report", "kv.safetensors"]).unwrap(),
        Command::Report(ReportArgs {
            source: file,
            ..ReportArgs::default()
        })
    );
}

/// Parses `args`, expecting a usage error, and returns it.
fn usage_error(args: &[&str]) -> Error {
    let e = parse(args.iter().copied()).expect_err(&format!("{args:?} should be rejected"));
    assert!(e.is_usage(), "{args:?} gave a non-usage error {e:?}");
    assert!(!e.to_string().is_empty());
    e
}

#[test]
fn bad_arguments_give_typed_errors() {
    assert!(matches!(usage_error(&[]), Error::MissingCommand));
    assert!(
        matches!(usage_error(&["frobnicate"]), Error::UnknownCommand { command } if command == "frobnicate")
    );
    assert!(
        matches!(usage_error(&["rd", "--frob"]), Error::UnknownOption { command: "rd", option } if option == "--frob")
    );
    assert!(matches!(
        usage_error(&["rd", "stray"]),
        Error::UnexpectedArgument { command: "rd", .. }
    ));
    assert!(matches!(
        usage_error(&["codecs", "extra"]),
        Error::UnexpectedArgument {
            command: "codecs",
            ..
        }
    ));
    assert!(matches!(
        usage_error(&["codecs", "--all"]),
        Error::UnknownOption {
            command: "codecs",
            ..
        }
    ));
    assert!(matches!(
        usage_error(&["rd", "--codec"]),
        Error::MissingValue { option: "--codec" }
    ));
    assert!(matches!(
        usage_error(&["slice", "--tokens"]),
        Error::MissingValue { option: "--tokens" }
    ));
    assert!(matches!(
        usage_error(&["rd", "--codec", "compat-d5-q3"]),
        Error::InvalidCodecSpec { value, source: kv_codec::Error::UnknownSpec { .. } } if value == "compat-d5-q3"
    ));
    assert!(matches!(
        usage_error(&["rd", "--codec", "compat-d4-q0"]),
        Error::InvalidCodecSpec {
            source: kv_codec::Error::InvalidParameter {
                name: "q",
                value: 0,
                ..
            },
            ..
        }
    ));
    for bad in ["-1", "0", "abc", "inf", "NaN", ""] {
        assert!(
            matches!(
                usage_error(&["rd", "--bpv", bad]),
                Error::InvalidValue {
                    option: "--bpv",
                    ..
                }
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        usage_error(&["rd", "--gaussian", "0", "--head-dim", "64"]),
        Error::InvalidValue {
            option: "--gaussian",
            ..
        }
    ));
    assert!(matches!(
        usage_error(&["rd", "--seed", "-3"]),
        Error::InvalidValue {
            option: "--seed",
            ..
        }
    ));
    assert!(matches!(
        usage_error(&["slice", "--tokens", "1.5"]),
        Error::InvalidValue {
            option: "--tokens",
            ..
        }
    ));
    assert!(matches!(
        usage_error(&["rd", "--gaussian", "10"]),
        Error::MissingOption {
            option: "--head-dim",
            ..
        }
    ));
    assert!(matches!(
        usage_error(&["rd", "--head-dim", "64"]),
        Error::ConflictingOptions {
            option: "--head-dim",
            problem: "needs",
            other: "--gaussian"
        }
    ));
    assert!(matches!(
        usage_error(&["rd", "--seed", "1"]),
        Error::ConflictingOptions {
            option: "--seed",
            ..
        }
    ));
    assert!(matches!(
        usage_error(&["rd", "--input", "a", "--gaussian", "5", "--head-dim", "8"]),
        Error::ConflictingOptions {
            option: "--gaussian",
            other: "--input",
            ..
        }
    ));
    assert!(matches!(
        usage_error(&["rd", "--input", "a", "--input=b"]),
        Error::RepeatedOption { option: "--input" }
    ));
    assert!(matches!(
        usage_error(&["plan"]),
        Error::MissingOption {
            command: "plan",
            ..
        }
    ));
    assert!(matches!(
        usage_error(&["plan", "--target-snr", "20", "--budget-bpv", "4"]),
        Error::ConflictingOptions {
            option: "--budget-bpv",
            ..
        }
    ));
    assert!(matches!(
        usage_error(&["plan", "--budget-bpv", "0"]),
        Error::InvalidValue {
            option: "--budget-bpv",
            ..
        }
    ));
    assert!(matches!(
        usage_error(&["plan", "--target-snr", "20", "--verify=yes"]),
        Error::InvalidValue {
            option: "--verify",
            ..
        }
    ));
    assert!(matches!(
        usage_error(&["audit", "a", "b"]),
        Error::RepeatedOption { option: "--input" }
    ));
    assert!(matches!(
        usage_error(&["report", "a", "--from", "rd.json"]),
        Error::ConflictingOptions {
            option: "--from",
            ..
        }
    ));
    assert!(matches!(
        usage_error(&["audit", "--head-dim", "64"]),
        Error::ConflictingOptions {
            option: "--head-dim",
            ..
        }
    ));
    assert!(matches!(
        usage_error(&["slice", "--input", "a", "--out", "b"]),
        Error::MissingOption {
            command: "slice",
            option: "--tokens"
        }
    ));
}

fn kvc(args: &[&str]) -> std::process::Output {
    Process::new(env!("CARGO_BIN_EXE_kvc"))
        .args(args)
        .output()
        .expect("kvc runs")
}

#[test]
fn binary_exit_codes_and_messages() {
    let out = kvc(&["help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kvc rd"));

    let out = kvc(&["codecs"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("voronoi-e8") && text.contains("compat-d4"),
        "{text}"
    );

    let out = kvc(&["rd", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--bogus") && err.contains("kvc help"), "{err}");

    let out = kvc(&["rd", "--input", "/nonexistent/kv.safetensors"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

/// `kvc rd` on the committed sample (the default input) with one codec writes a JSON report
/// holding every field the reports downstream rely on.
#[test]
fn rd_end_to_end_on_the_committed_sample() {
    let json = std::env::temp_dir().join(format!("kvc-rd-e2e-{}.json", std::process::id()));
    let out = kvc(&[
        "rd",
        "--codec",
        "compat-d4-q10",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("compat-d4-q10") && stdout.contains("rel-MSE K"),
        "{stdout}"
    );

    let text = std::fs::read_to_string(&json).unwrap();
    std::fs::remove_file(&json).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();

    let source = &doc["source"];
    assert!(
        source["path"]
            .as_str()
            .unwrap()
            .ends_with("smollm2-pp512-t128.safetensors")
    );
    assert_eq!(source["head_dim"], 64);
    assert_eq!(source["vectors"], 60 * 3 * 128);
    assert_eq!(source["k_tensors"].as_array().unwrap().len(), 30);
    assert!(doc["machine"]["threads"].as_u64().unwrap() >= 1);
    assert!(doc["machine"].get("cpu").is_some());

    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    let r = &results[0];
    for field in [
        "codec",
        "bits_per_value",
        "bits_per_vector",
        "bytes",
        "rel_mse_k",
        "rel_mse_v",
        "snr_db_k",
        "snr_db_v",
        "shannon_gap_db",
        "encode_mvec_s",
        "decode_mvec_s",
        "threads",
        "head_dim",
        "vectors",
        "rel_mse_k_layers",
        "rel_mse_v_layers",
    ] {
        assert!(
            r.get(field).is_some_and(|v| !v.is_null()),
            "missing field {field}"
        );
    }
    let num = |f: &str| r[f].as_f64().unwrap();
    assert_eq!(r["codec"], "compat-d4-q10");
    assert_eq!(num("bits_per_value"), 4.75);
    assert_eq!(r["bits_per_vector"], 304);
    assert_eq!(r["bytes"], 60 * 3 * 128 * 38);
    assert_eq!(r["vectors"], 60 * 3 * 128);
    assert_eq!(r["rel_mse_k_layers"].as_array().unwrap().len(), 30);
    assert_eq!(r["rel_mse_v_layers"].as_array().unwrap().len(), 30);
    // The published codec reaches 6.6e-3 on K over all 512 tokens; 128 tokens land close.
    assert!(
        (4e-3..1e-2).contains(&num("rel_mse_k")),
        "{}",
        num("rel_mse_k")
    );
    assert!(
        (4e-3..1e-2).contains(&num("rel_mse_v")),
        "{}",
        num("rel_mse_v")
    );
    assert!((num("snr_db_k") + 10.0 * num("rel_mse_k").log10()).abs() < 1e-9);
    let gap = 20.0 * 2f64.log10() * 4.75 - (num("snr_db_k") + num("snr_db_v")) / 2.0;
    assert!((num("shannon_gap_db") - gap).abs() < 1e-9);
    assert!(num("encode_mvec_s") > 0.0 && num("decode_mvec_s") > 0.0);
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kvc-{}-{name}", std::process::id()))
}

/// `kvc audit` on Gaussian vectors reads them as Gaussian, and writes its JSON.
#[test]
fn audit_end_to_end_on_gaussian_vectors() {
    let json = tmp("audit.json");
    let out = kvc(&[
        "audit",
        "--gaussian",
        "256",
        "--head-dim",
        "64",
        "--seed",
        "3",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // A Gaussian source counts its vectors as K and as V.
    assert!(stdout.contains("2 of 2 heads read as Gaussian"), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    assert_eq!(doc["heads"].as_array().unwrap().len(), 2);
    assert_eq!(doc["heads"][0]["gaussian"], true);
    assert_eq!(doc["references"][0]["tokens"], 256);
}

/// `kvc plan --out` writes the plan in exactly the schema the cache reads, and the
/// prediction (with the measured run) beside it.
#[test]
fn plan_end_to_end_writes_the_schema_and_the_prediction() {
    let plan = tmp("plan.json");
    let out = kvc(&[
        "plan",
        "--gaussian",
        "512",
        "--head-dim",
        "64",
        "--target-snr",
        "20",
        "--probe-tokens",
        "128",
        "--verify",
        "--out",
        plan.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("measured:"), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let layers = doc["layers"].as_array().unwrap();
    assert_eq!(doc.as_object().unwrap().len(), 1, "{doc}");
    assert_eq!(layers.len(), 1);
    for kind in ["k", "v"] {
        let spec: CodecSpec = layers[0][kind].as_str().unwrap().parse().unwrap();
        assert!(matches!(spec, CodecSpec::Voronoi { .. }), "{spec}");
    }
    let prediction = plan.with_extension("prediction.json");
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&prediction).unwrap()).unwrap();
    assert_eq!(
        p["predicted"]["total_bytes"], p["measured"]["total_bytes"],
        "{p}"
    );
    std::fs::remove_file(&plan).unwrap();
    std::fs::remove_file(&prediction).unwrap();
}

/// `kvc report` writes the JSON, the Markdown and every chart in both formats.
#[test]
fn report_end_to_end_writes_every_file() {
    let dir = tmp("report");
    let out = kvc(&[
        "report",
        "--gaussian",
        "64",
        "--head-dim",
        "64",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want = vec!["report.json".to_owned(), "report.md".to_owned()];
    for stem in [
        "rd",
        "gap",
        "audit-w1z",
        "audit-anisotropy",
        "audit-anisotropy-rotated",
        "audit-kurtosis",
        "audit-outliers",
    ] {
        want.push(format!("{stem}.svg"));
        want.push(format!("{stem}.png"));
    }
    want.sort();
    assert_eq!(names, want);
    let png = std::fs::read(dir.join("rd.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(dir.join("rd.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("Shannon bound"),
        "{}",
        &svg[..200]
    );
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("![SNR against bits per value](rd.svg)"), "{md}");
    assert!(md.contains("| `turboquant-b3` |"), "{md}");
    std::fs::remove_dir_all(&dir).unwrap();
}
