//! [`RuntimeDir`]: the private directory that holds the server's socket,
//! lock, pid file, logs and TCP secret, and how it is found.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The environment variable that names the runtime directory, overriding
/// the default (`$XDG_RUNTIME_DIR/rpty`, else `rpty-UID` under the
/// temporary directory).
pub const RUNTIME_DIR_ENV: &str = "RPTY_RUNTIME_DIR";

/// The directory of one user's server: a private (0700) directory owned by
/// the user.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("rpty-doc-{}", std::process::id()));
/// let runtime = rpty::RuntimeDir::at(&dir)?;
/// assert_eq!(runtime.socket(), dir.join("server.sock"));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    /// The runtime directory for this user: [`RUNTIME_DIR_ENV`] if set,
    /// else `rpty` under `$XDG_RUNTIME_DIR`, else `rpty-UID` under the
    /// temporary directory. It is created (mode 0700) when missing.
    ///
    /// # Errors
    ///
    /// As [`RuntimeDir::at`].
    pub fn locate() -> io::Result<RuntimeDir> {
        let path = match std::env::var_os(RUNTIME_DIR_ENV).filter(|value| !value.is_empty()) {
            Some(path) => PathBuf::from(path),
            None => match std::env::var_os("XDG_RUNTIME_DIR").filter(|value| !value.is_empty()) {
                Some(base) => PathBuf::from(base).join("rpty"),
                None => std::env::temp_dir().join(format!("rpty-{}", rustix::process::geteuid().as_raw())),
            },
        };
        RuntimeDir::at(path)
    }

    /// The runtime directory at `path`, created with mode 0700 when
    /// missing.
    ///
    /// # Errors
    ///
    /// When it cannot be created, or when it exists but is not a directory,
    /// belongs to another user, or is open to the group or others (the
    /// message says how to fix it).
    pub fn at(path: impl Into<PathBuf>) -> io::Result<RuntimeDir> {
        let path = path.into();
        let path = if path.is_relative() { std::env::current_dir()?.join(path) } else { path };
        match DirBuilder::new().recursive(true).mode(0o700).create(&path) {
            Ok(()) => {}
            Err(err) => {
                let message = format!("cannot create the runtime directory {}: {err}", path.display());
                return Err(io::Error::new(err.kind(), message));
            }
        }
        let meta = fs::symlink_metadata(&path)?;
        let uid = rustix::process::geteuid().as_raw();
        if !meta.is_dir() {
            return Err(io::Error::other(format!("the runtime directory {} is not a directory", path.display())));
        }
        if meta.uid() != uid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the runtime directory {} belongs to uid {}, not to you (uid {uid})",
                    path.display(),
                    meta.uid()
                ),
            ));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the runtime directory {} is open to others (mode {mode:03o}); fix it with: chmod 700 {}",
                    path.display(),
                    path.display()
                ),
            ));
        }
        Ok(RuntimeDir { path })
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The server's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.path.join("server.sock")
    }

    /// The lock file a running server holds.
    pub fn lock_file(&self) -> PathBuf {
        self.path.join("server.lock")
    }

    /// The file holding the running server's process id.
    pub fn pid_file(&self) -> PathBuf {
        self.path.join("server.pid")
    }

    /// The server's log.
    pub fn server_log(&self) -> PathBuf {
        self.path.join("server.log")
    }

    /// The clients' log.
    pub fn client_log(&self) -> PathBuf {
        self.path.join("client.log")
    }

    /// The default secret file of a server that listens on TCP.
    pub fn secret_file(&self) -> PathBuf {
        self.path.join("secret")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("rpty-paths-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_missing_directory_is_created_private() {
        let dir = scratch("new").join("nested");
        let runtime = RuntimeDir::at(&dir).unwrap();
        assert_eq!(fs::metadata(runtime.path()).unwrap().permissions().mode() & 0o777, 0o700);
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_directory_open_to_others_is_refused_with_the_fix() {
        let dir = scratch("open");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let err = RuntimeDir::at(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("chmod 700"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_in_the_way_is_refused() {
        let file = scratch("file");
        fs::write(&file, b"x").unwrap();
        assert!(RuntimeDir::at(&file).is_err());
        fs::remove_file(&file).unwrap();
    }
}
