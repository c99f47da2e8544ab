//! The secret key the scheduler and its workers share, to sign every
//! message they put on the broker (see [`super::signing`]).
//!
//! Where a key comes from, first match wins:
//! - a key file named by `--broker-key-file` or `TASKDECK_BROKER_KEY_FILE`;
//! - the key itself in `TASKDECK_BROKER_KEY` (giving both is refused, so a
//!   forgotten variable never picks the key silently);
//! - `DATA_DIR/broker.key`: the scheduler creates it on its first start
//!   (32 random bytes as hex text, mode 0600); a worker only reads it, and
//!   without it refuses to start, saying what to copy where.
//!
//! The key is the file's (or variable's) text without surrounding white
//! space, at least [`MIN_KEY_BYTES`] bytes. A key file that other accounts
//! may read is refused, as ssh refuses such a private key. The key is never
//! logged and never part of the broker URL.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};

/// The environment variable naming a key file.
pub const KEY_FILE_ENV: &str = "TASKDECK_BROKER_KEY_FILE";
/// The environment variable holding the key itself.
pub const KEY_ENV: &str = "TASKDECK_BROKER_KEY";
/// The key file's name in the data directory.
pub const KEY_FILE: &str = "broker.key";
/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;
/// The longest key file read, in bytes (a key is short; this keeps a path
/// like /dev/zero from being read forever).
const MAX_KEY_BYTES: usize = 4096;
/// Random bytes in a generated key (written as twice as many hex digits).
const GENERATED_KEY_BYTES: usize = 32;

/// Where the key in use came from, for the log (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Read from this file.
    File(PathBuf),
    /// This file was created now, with a new random key.
    Created(PathBuf),
    /// The `TASKDECK_BROKER_KEY` variable.
    Environment,
    /// Made in memory for one run (benchmarks).
    Generated,
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) | Self::Created(path) => write!(f, "{}", path.display()),
            Self::Environment => f.write_str(KEY_ENV),
            Self::Generated => f.write_str("a key made for this run"),
        }
    }
}

/// The shared key. Its `Debug` shows where it came from, never the key.
#[derive(Clone)]
pub struct BrokerKey {
    hmac: hmac::Key,
    origin: KeyOrigin,
}

impl fmt::Debug for BrokerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerKey")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Why no key could be had. Messages say what to do, never the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A worker found no key where it looks when given none.
    #[error(
        "no broker key: a worker needs a copy of its scheduler's key to check what it is sent \
         and sign what it reports, and {path} does not exist. Copy the scheduler's key file \
         (broker.key in the scheduler's data directory, which it creates on its first start \
         with --broker) to {path} on this machine and make it private (chmod 600), or point \
         --broker-key-file (or {KEY_FILE_ENV}) at a copy"
    )]
    Missing {
        /// Where the key was looked for.
        path: PathBuf,
    },
    /// The key file may be read by other accounts.
    #[error(
        "the broker key file {path} can be read by other accounts (mode {mode:04o}); it must be \
         private to its owner: chmod 600 {path}"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key is too short to be a secret.
    #[error(
        "the broker key from {origin} is {bytes} bytes long; at least {MIN_KEY_BYTES} are needed \
         (`openssl rand -hex 32` makes a good one)"
    )]
    TooShort {
        /// Where it came from.
        origin: KeyOrigin,
        /// Its length.
        bytes: usize,
    },
    /// The key file is far longer than a key.
    #[error("the broker key file {path} is longer than {MAX_KEY_BYTES} bytes; it is not a key")]
    TooLong {
        /// The file.
        path: PathBuf,
    },
    /// Both a key file and the key itself were given.
    #[error(
        "both a broker key file (--broker-key-file or {KEY_FILE_ENV}) and {KEY_ENV} are set; \
         give one"
    )]
    Both,
    /// The key file cannot be read.
    #[error("cannot read the broker key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file cannot be created.
    #[error("cannot create the broker key file {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The system's random source failed.
    #[error("cannot make a broker key: the system's random source failed")]
    Random,
}

/// What to do when neither a key file nor the key itself is given.
#[derive(Debug, Clone, Copy)]
pub enum KeyFallback<'a> {
    /// The scheduler: use `DIR/broker.key`, creating it when missing.
    CreateIn(&'a Path),
    /// A worker: read `DIR/broker.key`; missing is an error.
    ReadIn(&'a Path),
}

/// The key given on the command line or in the environment, if any.
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    /// A key file (`--broker-key-file` or `TASKDECK_BROKER_KEY_FILE`).
    pub file: Option<PathBuf>,
    /// The key itself (`TASKDECK_BROKER_KEY`).
    pub text: Option<String>,
}

impl KeySources {
    /// `file` as given on the command line, and the key from the
    /// environment.
    pub fn with_environment(file: Option<PathBuf>) -> Self {
        Self {
            file,
            text: std::env::var(KEY_ENV).ok().filter(|text| !text.is_empty()),
        }
    }
}

impl BrokerKey {
    /// The key from `sources`, else as `fallback` says (see the module's
    /// rules).
    pub fn load(sources: KeySources, fallback: KeyFallback<'_>) -> Result<Self, KeyError> {
        match (sources.file, sources.text) {
            (Some(_), Some(_)) => Err(KeyError::Both),
            (Some(path), None) => Self::read_file(&path),
            (None, Some(text)) => Self::from_secret(text.as_bytes(), KeyOrigin::Environment),
            (None, None) => match fallback {
                KeyFallback::CreateIn(dir) => Self::read_or_create(&dir.join(KEY_FILE)),
                KeyFallback::ReadIn(dir) => {
                    let path = dir.join(KEY_FILE);
                    match Self::read_file(&path) {
                        Err(KeyError::Read { source, .. })
                            if source.kind() == std::io::ErrorKind::NotFound =>
                        {
                            Err(KeyError::Missing { path })
                        }
                        other => other,
                    }
                }
            },
        }
    }

    /// A key from its text (surrounding white space is not part of it).
    pub fn from_secret(secret: &[u8], origin: KeyOrigin) -> Result<Self, KeyError> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort {
                origin,
                bytes: secret.len(),
            });
        }
        Ok(Self {
            hmac: hmac::Key::new(hmac::HMAC_SHA256, secret),
            origin,
        })
    }

    /// Reads a key file, refusing one that other accounts may read.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let read_error = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        // The mode of the file opened, not of whatever the path names later.
        let metadata = file.metadata().map_err(read_error)?;
        check_private(path, &metadata)?;
        let mut secret = Vec::new();
        file.take(MAX_KEY_BYTES as u64 + 1)
            .read_to_end(&mut secret)
            .map_err(read_error)?;
        if secret.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong {
                path: path.to_owned(),
            });
        }
        Self::from_secret(&secret, KeyOrigin::File(path.to_owned()))
    }

    /// Reads `path`, or creates it with a new random key when missing.
    fn read_or_create(path: &Path) -> Result<Self, KeyError> {
        match Self::read_file(path) {
            Err(KeyError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            }
            other => return other,
        }
        let secret = new_secret()?;
        match create_private(path, secret.as_bytes()) {
            Ok(()) => Self::from_secret(secret.as_bytes(), KeyOrigin::Created(path.to_owned())),
            // Another process created it first: theirs is the key.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::read_file(path)
            }
            Err(source) => Err(KeyError::Create {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// A new random key in memory, and its text (to hand to child
    /// processes through their environment, never their command line).
    pub fn generate() -> Result<(Self, String), KeyError> {
        let secret = new_secret()?;
        let key = Self::from_secret(secret.as_bytes(), KeyOrigin::Generated)?;
        Ok((key, secret))
    }

    /// Where it came from.
    pub fn origin(&self) -> &KeyOrigin {
        &self.origin
    }

    /// The HMAC key, for signing and checking.
    pub(super) fn hmac(&self) -> &hmac::Key {
        &self.hmac
    }
}

/// 32 random bytes from the system's source, as hex text.
fn new_secret() -> Result<String, KeyError> {
    let mut bytes = [0u8; GENERATED_KEY_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Random)?;
    Ok(super::signing::hex(&bytes))
}

#[cfg(unix)]
fn check_private(path: &Path, metadata: &std::fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _metadata: &std::fs::Metadata) -> Result<(), KeyError> {
    // No permission bits to check here; the file's ACL is the owner's care.
    Ok(())
}

/// Writes `secret` to `path`, readable by its owner only, all at once: it
/// is written to a private temporary file first and linked into place,
/// which fails with `AlreadyExists` when `path` exists (never replacing
/// it), so no reader sees a partial key.
fn create_private(path: &Path, secret: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary)?;
        file.write_all(secret)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::hard_link(&temporary, path)
    })();
    // The temporary name goes either way; the link (or nothing) stays.
    let _ = std::fs::remove_file(&temporary);
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path)
            .expect("the key file exists")
            .permissions()
            .mode()
            & 0o777
    }

    #[cfg(unix)]
    fn write_with_mode(path: &Path, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(path, text).expect("written");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn the_scheduler_creates_a_private_key_once_and_reads_it_after() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let created = BrokerKey::load(KeySources::default(), KeyFallback::CreateIn(dir.path()))
            .expect("created");
        let path = dir.path().join(KEY_FILE);
        assert_eq!(created.origin(), &KeyOrigin::Created(path.clone()));
        let text = std::fs::read_to_string(&path).expect("readable by its owner");
        assert_eq!(text.trim().len(), 2 * GENERATED_KEY_BYTES, "{text}");
        assert!(text.trim().bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);
        // The temporary file is gone.
        assert_eq!(std::fs::read_dir(dir.path()).expect("a dir").count(), 1);
        let again = BrokerKey::load(KeySources::default(), KeyFallback::CreateIn(dir.path()))
            .expect("read");
        assert_eq!(again.origin(), &KeyOrigin::File(path.clone()));
        // A worker with the same data directory reads the same key.
        let worker =
            BrokerKey::load(KeySources::default(), KeyFallback::ReadIn(dir.path())).expect("read");
        let tag = ring::hmac::sign(created.hmac(), b"body");
        assert!(ring::hmac::verify(worker.hmac(), b"body", tag.as_ref()).is_ok());
    }

    #[test]
    fn a_worker_without_a_key_says_what_to_copy_where() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let error = BrokerKey::load(KeySources::default(), KeyFallback::ReadIn(dir.path()))
            .expect_err("no key");
        let text = error.to_string();
        let path = dir.path().join(KEY_FILE);
        assert!(matches!(error, KeyError::Missing { .. }), "{error:?}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("--broker-key-file"), "{text}");
        assert!(text.contains("chmod 600"), "{text}");
        assert!(!path.exists(), "a worker never creates a key");
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_other_accounts_can_read_is_refused() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("shared.key");
        write_with_mode(&path, "0123456789abcdef0123456789abcdef\n", 0o644);
        let sources = KeySources {
            file: Some(path.clone()),
            text: None,
        };
        let error = BrokerKey::load(sources.clone(), KeyFallback::ReadIn(dir.path()))
            .expect_err("too open");
        assert!(
            matches!(error, KeyError::TooOpen { mode: 0o644, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("chmod 600"), "{error}");
        write_with_mode(&path, "0123456789abcdef0123456789abcdef\n", 0o640);
        assert!(BrokerKey::load(sources.clone(), KeyFallback::ReadIn(dir.path())).is_err());
        write_with_mode(&path, "0123456789abcdef0123456789abcdef\n", 0o400);
        let key = BrokerKey::load(sources, KeyFallback::ReadIn(dir.path())).expect("private");
        assert_eq!(key.origin(), &KeyOrigin::File(path));
    }

    #[test]
    fn short_keys_and_two_sources_are_refused() {
        let short = BrokerKey::from_secret(b"  fifteen bytes!!\n", KeyOrigin::Environment);
        assert!(
            matches!(
                short,
                Err(KeyError::TooShort {
                    bytes: 15,
                    origin: KeyOrigin::Environment
                })
            ),
            "{short:?}"
        );
        assert!(BrokerKey::from_secret(b"sixteen bytes!!!", KeyOrigin::Environment).is_ok());
        let dir = tempfile::tempdir().expect("a temp dir");
        let both = KeySources {
            file: Some(dir.path().join("k")),
            text: Some("0123456789abcdef0123".into()),
        };
        assert!(matches!(
            BrokerKey::load(both, KeyFallback::CreateIn(dir.path())),
            Err(KeyError::Both)
        ));
        let text = KeySources {
            file: None,
            text: Some("0123456789abcdef0123".into()),
        };
        let key = BrokerKey::load(text, KeyFallback::CreateIn(dir.path())).expect("from text");
        assert_eq!(key.origin(), &KeyOrigin::Environment);
        assert!(!dir.path().join(KEY_FILE).exists(), "nothing created");
        // The key never shows in Debug.
        assert!(!format!("{key:?}").contains("0123456789"), "{key:?}");
    }

    #[test]
    fn generated_keys_differ() {
        let (_, one) = BrokerKey::generate().expect("a key");
        let (_, two) = BrokerKey::generate().expect("a key");
        assert_ne!(one, two);
        assert_eq!(one.len(), 2 * GENERATED_KEY_BYTES);
    }
}
