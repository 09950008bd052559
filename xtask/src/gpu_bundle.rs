//! `cargo xtask gpu-bundle`: builds the GPU test, parity and benchmark binaries on this
//! machine (release, `cuda` feature) into `gpu-bundle/`, next to a run script and the data
//! they read, and prints the command that runs them on a GPU machine.
//!
//! The GPU machine needs no Rust toolchain: the binaries load the CUDA driver and NVRTC at
//! run time (cudarc's `dynamic-loading`), so binaries built here run there unchanged. The
//! folder is ignored by git (`.git/info/exclude`), never committed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use crate::json;

/// The bundle's folder, relative to the workspace root.
pub(crate) const DIR: &str = "gpu-bundle";

/// A binary of the bundle: its name there and the cargo arguments that build it.
struct Build {
    name: &'static str,
    args: &'static [&'static str],
}

const BUILDS: [Build; 5] = [
    Build {
        name: "kv-cuda-unit-tests",
        args: &["test", "--release", "--no-run", "-p", "kv-cuda", "--lib"],
    },
    Build {
        name: "kv-codec-cuda-tests",
        args: &[
            "test",
            "--release",
            "--no-run",
            "-p",
            "kv-codec",
            "--features",
            "cuda",
            "--test",
            "cuda",
        ],
    },
    Build {
        name: "gpu_parity",
        args: &[
            "build",
            "--release",
            "-p",
            "kv-audit",
            "--features",
            "cuda",
            "--example",
            "gpu_parity",
        ],
    },
    Build {
        name: "gpu_bench",
        args: &[
            "build",
            "--release",
            "-p",
            "kv-codec",
            "--features",
            "cuda",
            "--example",
            "gpu_bench",
        ],
    },
    Build {
        name: "gpu_attention",
        args: &[
            "build",
            "--release",
            "-p",
            "kv-codec",
            "--features",
            "cuda",
            "--example",
            "gpu_attention",
        ],
    },
];

/// The PyTorch baseline of the attention step, relative to the workspace root (copied into
/// the bundle: the GPU machine gets the bundle, not necessarily this checkout).
const TORCH_SCRIPT: &str = "bench/attention_torch.py";

/// The real K/V the parity run checks, relative to the workspace root.
const DATA: &str = "../shared/data/smollm2-pp512/kv.safetensors";

/// The script that runs the bundle on the GPU machine.
const RUN_SH: &str = r#"#!/bin/sh
# Written by `cargo xtask gpu-bundle`: runs kv-codec's GPU checks and benchmarks with the
# binaries next to this script (no Rust toolchain needed). Steps, in the order given:
#   tests     kv-cuda unit tests, then the CPU<->CUDA parity tests of kv-codec
#   parity    gpu_parity: 10^7 random vectors and every vector of data/kv.safetensors
#   bench     gpu_bench: throughput at 1M and 16M vectors, d = 64, 128, 256
#   attention decode attention on compressed pages (gpu_attention) and PyTorch's bf16
#             scaled_dot_product_attention (attention_torch.py), same shapes, same run
#   memcheck  compute-sanitizer memcheck over the fault, host-API and attention-error tests
# Default: all five. Logs and results go to $OUT (default: this folder's out/).
set -u
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here/out}
mkdir -p "$out"
# cudarc loads libcuda and libnvrtc at run time: add the toolkit's library folders.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  if [ -d "$d" ]; then LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
done
export LD_LIBRARY_PATH
summary=""
step() {
  name=$1; shift
  start=$(date +%s)
  if "$@" > "$out/$name.log" 2>&1; then result=ok; else result="FAILED($?)"; fi
  summary="$summary$(printf '%-10s %-10s %5ss  %s' "$name" "$result" "$(( $(date +%s) - start ))" "$out/$name.log")\n"
}
{ nvidia-smi -L; ldconfig -p | grep -E 'libcuda\.so|libnvrtc'; echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; } > "$out/device.log" 2>&1
for s in ${*:-tests parity bench attention memcheck}; do
  case $s in
    tests)
      step unit "$here/bin/kv-cuda-unit-tests"
      step tests "$here/bin/kv-codec-cuda-tests" --test-threads 1 --nocapture ;;
    parity)
      step parity "$here/bin/gpu_parity" --data "$here/data/kv.safetensors" --json "$out/parity.json" ;;
    bench)
      step bench "$here/bin/gpu_bench" --date "$(date +%F)" --json "$out/bench.json" --markdown "$out/bench.md" ;;
    attention)
      step torch python3 "$here/attention_torch.py" --json "$out/torch-attention.json"
      step attention "$here/bin/gpu_attention" --date "$(date +%F)" --torch "$out/torch-attention.json" --json "$out/attention.json" --markdown "$out/attention.md" ;;
    memcheck)
      cs=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1)
      if [ -n "$cs" ]; then
        step memcheck "$cs" --tool memcheck --error-exitcode 9 "$here/bin/kv-codec-cuda-tests" --test-threads 1 faults_are_the_cpus host_api attention_errors
      else
        summary="${summary}memcheck   skipped (no compute-sanitizer found)\n"
      fi ;;
    *) echo "unknown step $s (tests, parity, bench, attention, memcheck)"; exit 2 ;;
  esac
done
cat "$out/device.log"
if [ -f "$out/tests.log" ]; then grep -E "^test |SKIPPED|test result" "$out/tests.log"; fi
if [ -f "$out/memcheck.log" ]; then grep -E "ERROR SUMMARY|test result" "$out/memcheck.log"; fi
if [ -f "$out/parity.log" ]; then sed -n '/^| codec/,$p' "$out/parity.log"; fi
if [ -f "$out/bench.md" ]; then cat "$out/bench.md"; fi
if [ -f "$out/attention.md" ]; then cat "$out/attention.md"; fi
printf '\n%b' "$summary"
case $summary in *FAILED*) exit 1 ;; esac
"#;

/// The executable cargo reports last in its JSON messages (`--message-format=json`).
fn executable(messages: &str) -> Option<String> {
    messages
        .lines()
        .rev()
        .filter_map(|line| json::parse(line).ok())
        .filter(|m| m.get("reason").and_then(json::Value::as_str) == Some("compiler-artifact"))
        .find_map(|m| m.get("executable")?.as_str().map(str::to_owned))
}

fn build(root: &Path, b: &Build) -> Result<PathBuf, String> {
    println!("==> cargo {}", b.args.join(" "));
    let output = crate::cargo()
        .args(b.args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo {} failed", b.args.join(" ")));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    executable(&text)
        .map(PathBuf::from)
        .ok_or_else(|| format!("cargo {} reported no executable", b.args.join(" ")))
}

/// Drops the debug sections of a copied binary (line tables make the bundle ten times larger
/// than the transfer to the GPU machine allows). Without a `strip` program the binary stays
/// as it is, which only costs size.
fn strip(binary: &Path) {
    let stripped = std::process::Command::new("strip")
        .arg(binary)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        println!(
            "note: could not strip {}; it keeps its debug sections",
            binary.display()
        );
    }
}

fn bundle(root: &Path) -> Result<(), String> {
    let dir = root.join(DIR);
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).map_err(|e| format!("cannot create {}: {e}", bin.display()))?;
    for b in &BUILDS {
        let exe = build(root, b)?;
        let to = bin.join(b.name);
        fs::copy(&exe, &to).map_err(|e| format!("cannot copy {}: {e}", exe.display()))?;
        strip(&to);
    }
    let data = root.join(DATA);
    if data.is_file() {
        let to = dir.join("data");
        fs::create_dir_all(&to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
        fs::copy(&data, to.join("kv.safetensors"))
            .map_err(|e| format!("cannot copy {}: {e}", data.display()))?;
    } else {
        println!("note: {DATA} not found; the parity step will fail without data/kv.safetensors");
    }
    let script = root.join(TORCH_SCRIPT);
    fs::copy(&script, dir.join("attention_torch.py"))
        .map_err(|e| format!("cannot copy {}: {e}", script.display()))?;
    fs::write(dir.join("run.sh"), RUN_SH).map_err(|e| format!("cannot write run.sh: {e}"))?;
    let mut bytes = 0u64;
    for entry in fs::read_dir(&bin).map_err(|e| e.to_string())?.flatten() {
        bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
    }
    println!(
        "\n{DIR}/ is ready ({:.1} MiB of binaries). On the GPU machine, from the repository root:\n\n    sh {DIR}/run.sh [tests] [parity] [bench] [attention] [memcheck]\n\n(logs and results under $OUT, default {DIR}/out; with the `run` tool, pass carry: [\"{DIR}\"] and OUT=$OUT).",
        bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// Entry point of `cargo xtask gpu-bundle`.
pub(crate) fn main(root: &Path) -> ExitCode {
    match bundle(root) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: gpu-bundle: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_executable_artifact_is_taken() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","package_id":"a","executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","package_id":"b","executable":"/t/release/deps/cuda-0123"}"#,
            "\n",
            "not json\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n"
        );
        assert_eq!(
            executable(messages).as_deref(),
            Some("/t/release/deps/cuda-0123")
        );
        assert_eq!(executable(r#"{"reason":"build-finished"}"#), None);
    }

    #[test]
    fn every_build_is_release_with_the_cuda_feature_where_it_matters() {
        for b in &BUILDS {
            assert!(b.args.contains(&"--release"), "{}", b.name);
            let uses_codec_gpu = b.name != "kv-cuda-unit-tests";
            assert_eq!(b.args.contains(&"cuda"), uses_codec_gpu, "{}", b.name);
            assert!(RUN_SH.contains(&format!("bin/{}", b.name)), "{}", b.name);
        }
    }
}
