//! `agentlog keygen` and the key files `--key` reads: an ed25519 key for
//! signing commands (docs/PROTOCOL.md, "Signed commands"). A key file is
//! JSON: `{"key_id", "public_key", "secret_key"}`, both keys base64 (the
//! secret key is the 32-byte seed), written readable by its owner only.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use agentlog_commands::Signer;
use agentlog_log::{HybridClock, RandomIdGen};
use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

#[derive(clap::Args)]
pub struct Args {
    /// The key id: the principal id an admin registers the public key
    /// under (letters, digits, '_', '-', ':', '@').
    #[arg(long)]
    id: String,
    /// Where to write the key file (refused if it exists).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    key_id: String,
    public_key: String,
    secret_key: String,
}

pub fn keygen(args: Args) -> anyhow::Result<ExitCode> {
    if !agentlog_log::api::is_valid_id(&args.id) {
        bail!("--id {:?} must be 1 to 128 ASCII letters, digits, '_', '-', ':' or '@'", args.id);
    }
    let seed = random()?;
    let signer = signer(&args.id, seed);
    let file = KeyFile {
        key_id: args.id.clone(),
        public_key: STANDARD.encode(signer.public_key()),
        secret_key: STANDARD.encode(seed),
    };
    write_private(&args.out, &serde_json::to_vec_pretty(&file)?)?;
    println!("key_id {}", file.key_id);
    println!("public_key {}", file.public_key);
    println!("wrote {} (keep it secret: it signs as {})", args.out.display(), file.key_id);
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the key file {} (it must not exist yet)", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// Bytes from the operating system's random source (a key's seed).
pub fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness from the operating system: {e}"))?;
    Ok(bytes)
}

/// A signer for `key_id` with the secret key `seed`, on the system clock.
pub fn signer(key_id: &str, seed: [u8; 32]) -> Signer {
    Signer::new(key_id, seed, Arc::new(HybridClock::system()), Arc::new(RandomIdGen::new()))
}

/// The signer a key file holds.
pub fn load(path: &Path) -> anyhow::Result<Signer> {
    let text = std::fs::read(path).with_context(|| format!("cannot read the key file {}", path.display()))?;
    let file: KeyFile = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a key file written by `agentlog keygen`", path.display()))?;
    let seed: [u8; 32] = STANDARD
        .decode(file.secret_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{}: secret_key is not 32 bytes of base64", path.display()))?;
    let signer = signer(&file.key_id, seed);
    if STANDARD.encode(signer.public_key()) != file.public_key.trim() {
        bail!("{}: public_key is not the secret key's; the file is damaged", path.display());
    }
    Ok(signer)
}
