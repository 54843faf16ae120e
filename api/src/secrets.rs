//! The server's master key, which seals node secrets at rest (see
//! `eventstore::vault`): from a file or the environment in production, or
//! generated into the data directory on first start (the embedded
//! default). Never logged, never on a command line.

use std::io::Write;
use std::path::{Path, PathBuf};

use eventstore::{MasterKey, Vault};

/// Where the master key comes from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MasterKeyArgs {
    /// The file holding the master key (64 hex digits) that seals node
    /// secrets; default `<data dir>/master.key`, created on first start.
    /// `FLATRENDER_MASTER_KEY` (the 64 hex digits themselves) wins over it.
    #[arg(long, env = "FLATRENDER_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// During a rotation: the file of the previous master key, which still
    /// opens secrets not yet sealed again (`flatrender secrets reseal`).
    #[arg(long, env = "FLATRENDER_PREVIOUS_MASTER_KEY_FILE")]
    pub previous_master_key_file: Option<PathBuf>,
}

fn read_key(path: &Path) -> anyhow::Result<MasterKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("master key {}: {e}", path.display()))?;
    MasterKey::from_hex(&text).map_err(|e| anyhow::anyhow!("master key {}: {e}", path.display()))
}

/// The master key of `<data_dir>/master.key`, created (mode 0600) with a
/// random key if there is none. Two processes starting at once agree:
/// the file is created exclusively, and the loser reads the winner's.
pub fn data_dir_key(data_dir: &Path) -> anyhow::Result<MasterKey> {
    let path = data_dir.join("master.key");
    if !path.exists() {
        std::fs::create_dir_all(data_dir)?;
        let key = MasterKey::generate()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => {
                file.write_all(key.as_bytes())?;
                file.write_all(b"\n")?;
                file.sync_all()?;
                tracing::info!(path = %path.display(), "created a master key for secrets at rest; back it up with the database");
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(anyhow::anyhow!("master key {}: {e}", path.display())),
        }
    }
    read_key(&path)
}

impl MasterKeyArgs {
    /// The vault these settings describe.
    pub fn vault(&self, data_dir: &Path) -> anyhow::Result<Vault> {
        let current = match std::env::var("FLATRENDER_MASTER_KEY") {
            Ok(hex) if !hex.is_empty() => MasterKey::from_hex(&hex)
                .map_err(|e| anyhow::anyhow!("FLATRENDER_MASTER_KEY: {e}"))?,
            _ => match &self.master_key_file {
                Some(path) => read_key(path)?,
                None => data_dir_key(data_dir)?,
            },
        };
        let mut vault = Vault::new(current);
        if let Some(path) = &self.previous_master_key_file {
            vault = vault.with_previous(read_key(path)?);
        }
        Ok(vault)
    }
}
