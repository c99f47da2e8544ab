//! The data directory is private to the account that runs Taskdeck: task
//! arguments, results and outputs often name paths, datasets or carry
//! credentials, and on a shared machine other accounts must not read them.
//!
//! Rules:
//! - the directory is `0700`, made so when it was created wider (earlier
//!   versions used the default `0755`);
//! - from the first call on, the process creates files `0600` and folders
//!   `0700` (its file mode mask becomes `077`), so the database and its
//!   journals, the process log, the task output logs, progress files and
//!   scratch folders, and whatever is created later or by a worker process,
//!   are private from the start, with no window where they are not;
//! - files an earlier version left readable by others, in the directory and
//!   its `logs` folder, lose their group and other permissions;
//! - the programs tasks run get the mask the user had (see [`user_umask`]),
//!   so files a task writes for its user's colleagues keep the modes the
//!   user expects.

use std::io;
use std::path::Path;
use std::sync::OnceLock;

/// The file mode mask the process had before [`protect`] narrowed it.
static USER_UMASK: OnceLock<u32> = OnceLock::new();

/// Permissions nobody but the owner may have.
const OTHERS: u32 = 0o077;

/// The file mode mask the process started with, once [`protect`] ran: what
/// task processes should run with. `None` before, when nothing changed.
pub fn user_umask() -> Option<u32> {
    USER_UMASK.get().copied()
}

/// Creates `dir` (and its parents) when missing and makes it and what is in
/// it private, by the rules in the module docs.
pub fn protect(dir: &Path) -> io::Result<()> {
    narrow_umask();
    std::fs::create_dir_all(dir)?;
    make_private(dir)?;
    for folder in [dir.to_owned(), crate::tasks::logfile::logs_dir(dir)] {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        if folder != dir {
            make_private(&folder)?;
        }
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_file()) {
                make_private(&entry.path())?;
            }
        }
    }
    Ok(())
}

/// Sets the process's file mode mask to `077`, once, remembering the one
/// it replaces.
fn narrow_umask() {
    USER_UMASK.get_or_init(|| {
        #[cfg(unix)]
        {
            // SAFETY: umask only swaps the process's mask; it cannot fail.
            let before = unsafe { libc::umask(OTHERS as libc::mode_t) };
            // `mode_t` is u32 on Linux and u16 on macOS.
            #[allow(clippy::useless_conversion)]
            u32::from(before)
        }
        #[cfg(not(unix))]
        {
            0
        }
    });
}

/// Takes the group's and others' permissions away from `path`.
fn make_private(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::symlink_metadata(path)?.permissions().mode();
        if mode & OTHERS != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !OTHERS))?;
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("the path should exist")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn a_wide_data_directory_and_its_files_become_private_and_new_files_are_born_private() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("data");
        let logs = crate::tasks::logfile::logs_dir(&dir);
        std::fs::create_dir_all(&logs).expect("create");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let old_db = dir.join("taskdeck.db");
        let old_log = logs.join("task-1-attempt-1.log");
        for file in [&old_db, &old_log] {
            std::fs::write(file, "x").expect("write");
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }

        protect(&dir).expect("protect");

        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&logs), 0o700);
        assert_eq!(mode(&old_db), 0o600);
        assert_eq!(mode(&old_log), 0o600);
        let new_file = dir.join("new.log");
        std::fs::write(&new_file, "y").expect("write");
        assert_eq!(
            mode(&new_file),
            0o600,
            "created after, private from the start"
        );
        let new_dir = dir.join("scratch");
        std::fs::create_dir(&new_dir).expect("mkdir");
        assert_eq!(mode(&new_dir), 0o700);
        assert!(user_umask().is_some(), "the user's mask is kept for tasks");
    }
}
