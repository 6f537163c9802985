//! The TCP secret: read from a private file, or generated into one (mode
//! 0600) when the server starts and none exists.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use backedpipe::Secret;

/// Random bytes in a generated secret (written as hex).
const SECRET_BYTES: usize = 32;

/// The fewest characters a secret file must hold.
const MIN_SECRET_LEN: usize = 16;

/// Reads the secret in `path`, which must belong to this user and be
/// readable by nobody else.
pub(crate) fn load(path: &Path) -> Result<Secret> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read the secret file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "the secret file {} is open to others (mode {mode:03o}); fix it with: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        bail!("the secret file {} belongs to another user", path.display());
    }
    let text = fs::read_to_string(path).with_context(|| format!("cannot read the secret file {}", path.display()))?;
    let secret = text.trim();
    if secret.len() < MIN_SECRET_LEN {
        bail!("the secret in {} is too short (at least {MIN_SECRET_LEN} characters)", path.display());
    }
    Ok(Secret::new(secret.as_bytes().to_vec()))
}

/// Reads the secret in `path`, or writes a new random one there (mode
/// 0600) when the file does not exist. Returns the secret and whether it
/// was generated.
pub(crate) fn load_or_generate(path: &Path) -> Result<(Secret, bool)> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("cannot get random bytes for a secret: {err}"))?;
    let text: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut file) => {
            file.write_all(format!("{text}\n").as_bytes())
                .with_context(|| format!("cannot write the secret file {}", path.display()))?;
            Ok((Secret::new(text.into_bytes()), true))
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok((load(path)?, false)),
        Err(err) => Err(err).with_context(|| format!("cannot create the secret file {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_private_and_read_back_the_same() {
        let dir = std::env::temp_dir().join(format!("rpty-secret-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        let (generated, created) = load_or_generate(&path).unwrap();
        assert!(created);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, created) = load_or_generate(&path).unwrap();
        assert!(!created);
        assert_eq!(again, generated);
        assert_eq!(load(&path).unwrap(), generated);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "short\n").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("too short"));
        assert!(load(&dir.join("missing")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
