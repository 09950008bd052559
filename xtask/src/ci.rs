//! `cargo xtask ci`: every check the project runs before a change lands, in a fixed order.
//!
//! The plan is data: [`plan`] turns a few facts read from the manifests (which packages
//! declare features, which declare a `cuda` feature) into a list of steps, so that a step
//! such as the `--features cuda` clippy run switches itself on once the feature exists.
//!
//! All steps share the default target directory and profiles. Clippy, `cargo doc` and
//! `cargo check` then reuse each other's dependency metadata builds, and only the test build
//! compiles code generation artifacts; nothing sets `RUSTFLAGS`, which would invalidate them
//! (the target CPU of `.cargo/config.toml` applies to every step alike), except the last
//! step, which checks the golden bytes on a baseline x86-64 build in a target directory of
//! its own.

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::{manifest, metadata, tidy};

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Run `cargo` with these arguments and extra environment variables.
    Cargo {
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
    /// Run the tidy checks in this process.
    Tidy,
    /// Nothing to do in this workspace, for the given reason.
    Skip(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    name: &'static str,
    action: Action,
}

/// What the plan depends on, gathered from the workspace and the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Facts {
    /// Members whose manifests declare a `cuda` feature (kv-codec's GPU backend and the
    /// crates that forward it), linted with it on.
    cuda_packages: Vec<String>,
    /// Members whose manifests declare a `[features]` table with at least one feature.
    packages_with_features: Vec<String>,
    /// `CI` is already set in the environment (and then left alone).
    ci_var_set: bool,
    /// The caller's `RUSTDOCFLAGS`, extended rather than replaced.
    rustdocflags: Option<String>,
    /// The host is x86_64, where `.cargo/config.toml` builds for x86-64-v3: the golden
    /// bytes are also checked on a baseline x86-64 build.
    x86_64: bool,
}

fn cargo(args: &[&str], env: Vec<(String, String)>) -> Action {
    Action::Cargo {
        args: args.iter().map(|&a| a.to_owned()).collect(),
        env,
    }
}

/// The ordered steps of `cargo xtask ci`.
fn plan(facts: &Facts) -> Vec<Step> {
    let test_env = if facts.ci_var_set {
        Vec::new()
    } else {
        // insta fails on a drifted or missing snapshot instead of writing a new one when CI is set.
        vec![("CI".to_owned(), "true".to_owned())]
    };
    let rustdocflags = match &facts.rustdocflags {
        Some(flags) if !flags.trim().is_empty() => format!("{} -D warnings", flags.trim()),
        _ => "-D warnings".to_owned(),
    };

    let clippy_cuda = if facts.cuda_packages.is_empty() {
        Action::Skip("no member declares a `cuda` feature".to_owned())
    } else {
        let mut args = vec!["clippy".to_owned()];
        for package in &facts.cuda_packages {
            args.push("--package".to_owned());
            args.push(package.clone());
        }
        args.extend(
            [
                "--all-targets",
                "--features",
                "cuda",
                "--locked",
                "--",
                "-D",
                "warnings",
            ]
            .map(str::to_owned),
        );
        Action::Cargo {
            args,
            env: Vec::new(),
        }
    };

    let test_no_default = if facts.packages_with_features.is_empty() {
        Action::Skip("no member declares features".to_owned())
    } else {
        let mut args = vec!["test".to_owned()];
        for package in &facts.packages_with_features {
            args.push("--package".to_owned());
            args.push(package.clone());
        }
        args.extend(["--no-default-features", "--locked"].map(str::to_owned));
        Action::Cargo {
            args,
            env: test_env.clone(),
        }
    };

    // The workspace builds for x86-64-v3 (.cargo/config.toml); crates that depend on
    // kv-codec build for whatever they choose, so the golden bytes are checked on a baseline
    // build too (its own target directory: other flags would invalidate the shared one).
    let golden_baseline = if facts.x86_64 {
        let mut env = test_env.clone();
        env.push(("RUSTFLAGS".to_owned(), "-C target-cpu=x86-64".to_owned()));
        env.push((
            "CARGO_TARGET_DIR".to_owned(),
            "target/baseline-x86-64".to_owned(),
        ));
        cargo(
            &[
                "test",
                "--package",
                "kv-codec",
                "--test",
                "format",
                "--locked",
            ],
            env,
        )
    } else {
        Action::Skip("the workspace picks no target CPU off x86_64".to_owned())
    };

    vec![
        Step {
            name: "fmt",
            action: cargo(&["fmt", "--all", "--", "--check"], Vec::new()),
        },
        Step {
            name: "clippy",
            action: cargo(
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--locked",
                    "--",
                    "-D",
                    "warnings",
                ],
                Vec::new(),
            ),
        },
        Step {
            name: "clippy (cuda feature)",
            action: clippy_cuda,
        },
        Step {
            name: "test",
            action: cargo(&["test", "--workspace", "--locked"], test_env),
        },
        Step {
            name: "test (no default features)",
            action: test_no_default,
        },
        Step {
            name: "tidy",
            action: Action::Tidy,
        },
        Step {
            name: "doc",
            action: cargo(
                &["doc", "--workspace", "--no-deps", "--locked"],
                vec![("RUSTDOCFLAGS".to_owned(), rustdocflags)],
            ),
        },
        Step {
            name: "check benches and examples",
            action: cargo(
                &[
                    "check",
                    "--workspace",
                    "--benches",
                    "--examples",
                    "--locked",
                ],
                Vec::new(),
            ),
        },
        Step {
            name: "golden bytes (baseline x86-64)",
            action: golden_baseline,
        },
    ]
}

/// Reads the facts the plan needs from the workspace at `root`.
fn gather_facts(root: &Path) -> Result<Facts, String> {
    let workspace = metadata::load(root)?;
    let mut packages_with_features = Vec::new();
    let mut cuda_packages = Vec::new();
    for member in &workspace.members {
        let text = fs::read_to_string(&member.manifest_path)
            .map_err(|e| format!("cannot read {}: {e}", member.manifest_path.display()))?;
        let features = manifest::declared_features(&text);
        if !features.is_empty() {
            packages_with_features.push(member.name.clone());
        }
        if features.iter().any(|f| f == "cuda") {
            cuda_packages.push(member.name.clone());
        }
    }
    Ok(Facts {
        cuda_packages,
        packages_with_features,
        ci_var_set: std::env::var_os("CI").is_some(),
        rustdocflags: std::env::var_os("RUSTDOCFLAGS")
            .map(|f: OsString| f.to_string_lossy().into_owned()),
        x86_64: cfg!(target_arch = "x86_64"),
    })
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Passed(Duration),
    Failed(Duration),
    Skipped(String),
}

/// Entry point of `cargo xtask ci`.
pub(crate) fn run(root: &Path) -> ExitCode {
    let facts = match gather_facts(root) {
        Ok(facts) => facts,
        Err(e) => {
            eprintln!("error: ci: cannot plan the steps: {e}");
            return ExitCode::FAILURE;
        }
    };
    let steps = plan(&facts);
    let started = Instant::now();
    let mut outcomes: Vec<(&'static str, Outcome)> = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let number = index + 1;
        let outcome = run_step(root, number, steps.len(), step);
        let failed = matches!(outcome, Outcome::Failed(_));
        outcomes.push((step.name, outcome));
        if failed {
            print_summary(&outcomes, &steps, started.elapsed());
            println!("\nci: FAILED at step {number} ({})", step.name);
            return ExitCode::FAILURE;
        }
    }
    print_summary(&outcomes, &steps, started.elapsed());
    println!("\nci: all steps passed");
    ExitCode::SUCCESS
}

fn run_step(root: &Path, number: usize, total: usize, step: &Step) -> Outcome {
    let header = format!("[{number}/{total}] {}", step.name);
    let start = Instant::now();
    let ok = match &step.action {
        Action::Skip(reason) => {
            println!("\n==> {header}: skipped ({reason})");
            return Outcome::Skipped(reason.clone());
        }
        Action::Tidy => {
            println!("\n==> {header}: cargo xtask tidy (in process)");
            tidy::run(root)
        }
        Action::Cargo { args, env } => {
            let env_text: String = env.iter().map(|(k, v)| format!("{k}={v:?} ")).collect();
            println!("\n==> {header}: {env_text}cargo {}", args.join(" "));
            let mut command = crate::cargo();
            command
                .args(args)
                .current_dir(root)
                .envs(env.iter().map(|(k, v)| (k, v)));
            match command.status() {
                Ok(status) => status.success(),
                Err(e) => {
                    eprintln!("error: cannot run cargo: {e}");
                    false
                }
            }
        }
    };
    let elapsed = start.elapsed();
    let verdict = if ok { "ok" } else { "FAILED" };
    println!("<== {header}: {verdict} in {:.1}s", elapsed.as_secs_f64());
    if ok {
        Outcome::Passed(elapsed)
    } else {
        Outcome::Failed(elapsed)
    }
}

fn print_summary(outcomes: &[(&'static str, Outcome)], steps: &[Step], total: Duration) {
    println!("\n{}", summary_table(outcomes, steps, total));
}

/// The final table: every planned step with its result and time; steps after a failure show as not run.
fn summary_table(outcomes: &[(&'static str, Outcome)], steps: &[Step], total: Duration) -> String {
    let width = steps
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(4)
        .max("total".len());
    let mut out = format!("{:<width$}  {:<8}  {:>8}\n", "step", "result", "time");
    out.push_str(&format!("{}\n", "-".repeat(width + 20)));
    for (index, step) in steps.iter().enumerate() {
        let (result, time) = match outcomes.get(index).map(|(_, o)| o) {
            Some(Outcome::Passed(d)) => ("ok", format!("{:.1}s", d.as_secs_f64())),
            Some(Outcome::Failed(d)) => ("FAILED", format!("{:.1}s", d.as_secs_f64())),
            Some(Outcome::Skipped(_)) => ("skipped", "-".to_owned()),
            None => ("not run", "-".to_owned()),
        };
        out.push_str(&format!("{:<width$}  {result:<8}  {time:>8}\n", step.name));
    }
    out.push_str(&format!("{}\n", "-".repeat(width + 20)));
    out.push_str(&format!(
        "{:<width$}  {:<8}  {:>8}",
        "total",
        "",
        format!("{:.1}s", total.as_secs_f64())
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_of(step: &Step) -> Option<String> {
        match &step.action {
            Action::Cargo { args, .. } => Some(args.join(" ")),
            _ => None,
        }
    }

    fn env_of(step: &Step) -> Vec<(String, String)> {
        match &step.action {
            Action::Cargo { env, .. } => env.clone(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn today_plan_runs_nine_steps_in_order_and_skips_the_feature_steps() {
        let steps = plan(&Facts::default());
        let names: Vec<&str> = steps.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "fmt",
                "clippy",
                "clippy (cuda feature)",
                "test",
                "test (no default features)",
                "tidy",
                "doc",
                "check benches and examples",
                "golden bytes (baseline x86-64)"
            ]
        );
        assert_eq!(args_of(&steps[0]).unwrap(), "fmt --all -- --check");
        assert_eq!(
            args_of(&steps[1]).unwrap(),
            "clippy --workspace --all-targets --locked -- -D warnings"
        );
        assert!(matches!(steps[2].action, Action::Skip(_)));
        assert_eq!(args_of(&steps[3]).unwrap(), "test --workspace --locked");
        assert!(matches!(steps[4].action, Action::Skip(_)));
        assert_eq!(steps[5].action, Action::Tidy);
        assert_eq!(
            args_of(&steps[6]).unwrap(),
            "doc --workspace --no-deps --locked"
        );
        assert_eq!(
            env_of(&steps[6]),
            vec![("RUSTDOCFLAGS".to_owned(), "-D warnings".to_owned())]
        );
        assert_eq!(
            args_of(&steps[7]).unwrap(),
            "check --workspace --benches --examples --locked"
        );
        assert!(matches!(steps[8].action, Action::Skip(_)));
    }

    #[test]
    fn x86_64_hosts_check_the_golden_bytes_on_a_baseline_build() {
        let steps = plan(&Facts {
            x86_64: true,
            ..Facts::default()
        });
        assert_eq!(
            args_of(&steps[8]).unwrap(),
            "test --package kv-codec --test format --locked"
        );
        let env = env_of(&steps[8]);
        assert!(env.contains(&("RUSTFLAGS".to_owned(), "-C target-cpu=x86-64".to_owned())));
        assert!(env.iter().any(|(k, _)| k == "CARGO_TARGET_DIR"));
        assert!(env.contains(&("CI".to_owned(), "true".to_owned())));
    }

    #[test]
    fn feature_steps_switch_on_from_the_facts() {
        let facts = Facts {
            cuda_packages: vec!["kv-codec".to_owned(), "kv-audit".to_owned()],
            packages_with_features: vec!["kv-codec".to_owned(), "hadamard".to_owned()],
            ..Facts::default()
        };
        let steps = plan(&facts);
        assert_eq!(
            args_of(&steps[2]).unwrap(),
            "clippy --package kv-codec --package kv-audit --all-targets --features cuda --locked -- -D warnings"
        );
        assert_eq!(
            args_of(&steps[4]).unwrap(),
            "test --package kv-codec --package hadamard --no-default-features --locked"
        );
        assert_eq!(
            env_of(&steps[4]),
            vec![("CI".to_owned(), "true".to_owned())]
        );
    }

    #[test]
    fn caller_environment_is_respected() {
        let facts = Facts {
            ci_var_set: true,
            rustdocflags: Some("--cfg docsrs".to_owned()),
            ..Facts::default()
        };
        let steps = plan(&facts);
        assert!(
            env_of(&steps[3]).is_empty(),
            "CI was already set and must be left alone"
        );
        assert_eq!(
            env_of(&steps[6]),
            vec![(
                "RUSTDOCFLAGS".to_owned(),
                "--cfg docsrs -D warnings".to_owned()
            )]
        );
        let unset = plan(&Facts::default());
        assert_eq!(
            env_of(&unset[3]),
            vec![("CI".to_owned(), "true".to_owned())]
        );
    }

    #[test]
    fn summary_lists_every_step() {
        let steps = plan(&Facts::default());
        let outcomes = vec![
            ("fmt", Outcome::Passed(Duration::from_millis(1500))),
            ("clippy", Outcome::Failed(Duration::from_secs(42))),
        ];
        let table = summary_table(&outcomes, &steps, Duration::from_secs(44));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + steps.len() + 2);
        assert!(
            lines[2].starts_with("fmt ") && lines[2].contains("ok") && lines[2].ends_with("1.5s"),
            "{table}"
        );
        assert!(
            lines[3].contains("FAILED") && lines[3].ends_with("42.0s"),
            "{table}"
        );
        assert!(lines[4].contains("not run"), "{table}");
        assert!(
            lines.last().unwrap().starts_with("total") && lines.last().unwrap().ends_with("44.0s")
        );
    }
}
