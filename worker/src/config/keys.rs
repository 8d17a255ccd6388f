//! Secret keys: read from the configuration or a key file; the file is created only on request.
//!
//! Reading the configuration never writes a file. `q8s key` and `q8s cluster`
//! create the key file when no key is configured and the file is missing.

use std::path::{Path, PathBuf};

use super::urls::sqlite_path;
use super::{Config, ConfigError};

/// Name of the generated secret key file.
pub const DEFAULT_KEY_FILE: &str = "q8s.key";

impl Config {
    /// The key file in use when `secret_key` is not set: `secret_key_file`, else `q8s.key` beside the SQLite store.
    pub fn key_file(&self) -> PathBuf {
        self.secret_key_file.clone().unwrap_or_else(|| {
            let folder = sqlite_path(&self.store_url())
                .and_then(|db| db.parent().map(Path::to_path_buf))
                .unwrap_or_default();
            folder.join(DEFAULT_KEY_FILE)
        })
    }

    /// The secret keys, first one signing: from `secret_key`, else the key file. Writes nothing.
    pub fn secret_keys(&self) -> Result<Vec<String>, ConfigError> {
        if !self.secret_key.is_empty() {
            return Ok(self.secret_key.clone());
        }
        read_key_file(&self.key_file())
    }

    /// The signer of this cluster's packages: its keys, salted with its name.
    pub fn signer(&self) -> Result<crate::package::Signer, ConfigError> {
        crate::package::Signer::new(
            &self.secret_keys()?,
            &self.name,
            self.compress,
            self.max_package_size,
        )
        .map_err(|e| ConfigError::Inconsistent(e.to_string()))
    }

    /// Creates the key file with a new random key when no key is configured and the file
    /// is missing; returns the file when keys come from one, `None` when `secret_key` is set.
    pub fn ensure_key_file(&self) -> Result<Option<PathBuf>, ConfigError> {
        if !self.secret_key.is_empty() {
            return Ok(None);
        }
        let path = self.key_file();
        if !path.exists() {
            generate_key_file(&path)?;
        }
        Ok(Some(path))
    }
}

/// The keys of a key file's text: one per line, blank lines and `#` comments skipped.
pub fn key_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn read_key_file(path: &Path) -> Result<Vec<String>, ConfigError> {
    let key_error = |reason: String| ConfigError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            key_error(
                "it does not exist: run `q8s key` to create it (a cluster creates it when it \
                 starts), or set secret_key, or point secret_key_file at your key"
                    .into(),
            )
        } else {
            key_error(format!("cannot read it ({e})"))
        }
    })?;
    let keys = key_lines(&text);
    if keys.is_empty() {
        return Err(key_error("it holds no key; put one key per line".into()));
    }
    if keys.iter().any(|key| key.chars().count() < 16) {
        return Err(key_error("keys must be 16 characters or more".into()));
    }
    Ok(keys)
}

/// Writes 32 random bytes as hex into a new file readable only by its owner.
///
/// The key is written to a temporary file and linked into place, so two
/// processes starting at once agree on one key.
fn generate_key_file(path: &Path) -> Result<(), ConfigError> {
    use std::io::Write;
    let key_error = |reason: String| ConfigError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| key_error(format!("no randomness available ({e})")))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temporary = folder.join(format!(".{DEFAULT_KEY_FILE}.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(format!("{hex}\n").as_bytes())
            .and_then(|()| file.sync_all())
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(key_error(format!("cannot create it ({e})")));
    }
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(key_error(format!("cannot create it ({e})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_keys_writes_nothing_and_says_how_to_create_the_file() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let config = Config {
            store: Some(format!("sqlite://{}/q8s.db", dir.path().display())),
            ..Config::default()
        };
        let error = config.secret_keys().expect_err("no key yet");
        assert!(error.to_string().contains("run `q8s key`"), "{error}");
        assert!(!dir.path().join("q8s.key").exists(), "nothing written");
    }

    #[test]
    fn key_file_is_created_once_on_request_and_only_owner_can_read_it() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let config = Config {
            store: Some(format!("sqlite://{}/q8s.db", dir.path().display())),
            ..Config::default()
        };
        let path = config.ensure_key_file().expect("created").expect("a file");
        assert_eq!(path, dir.path().join("q8s.key"));
        let first = config.secret_keys().expect("read");
        config.ensure_key_file().expect("kept");
        assert_eq!(config.secret_keys().expect("read again"), first);
        assert_eq!(first[0].len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("key file exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
