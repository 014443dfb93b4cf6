//! Editing a manifest file in the user's editor (`config edit`): a private temporary copy,
//! `$VISUAL`/`$EDITOR` run on it, the edited text read back. The copy is kept when the
//! edit cannot be saved, so no work is lost.
//!
//! Owns: the copy's life and running the editor (argv only, never a shell). Must not
//! know: validation (the caller checks the result like any other change).

use std::path::PathBuf;

use super::EditError;

/// A temporary copy of one manifest, removed when dropped unless [`TempCopy::keep`] is called.
pub struct TempCopy {
    path: tempfile::TempPath,
}

impl TempCopy {
    /// A new file with an unpredictable name, created exclusively (O_EXCL) and 0600 (no
    /// other user can read it or plant a link where it is written), holding `text`.
    ///
    /// # Errors
    /// The temporary directory cannot be written.
    pub fn new(file: &str, text: &str) -> Result<TempCopy, EditError> {
        let name = file.rsplit('/').next().unwrap_or("manifest.yaml");
        let io = |path: String| move |source| EditError::Io { path, source };
        let copy = tempfile::Builder::new()
            .prefix("celeroot-edit-")
            .suffix(&format!("-{name}"))
            .tempfile()
            .map_err(io("a temporary copy".into()))?;
        std::io::Write::write_all(&mut copy.as_file(), text.as_bytes())
            .map_err(io(copy.path().display().to_string()))?;
        Ok(TempCopy {
            path: copy.into_temp_path(),
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Runs `editor` (a command line such as `code --wait`, split on whitespace) on the
    /// copy and waits for it.
    ///
    /// # Errors
    /// The editor cannot be started, or exits with a failure.
    pub fn edit_with(&self, editor: &str) -> Result<(), EditError> {
        let mut words = editor.split_whitespace();
        let program = words.next().unwrap_or("vi");
        let status = std::process::Command::new(program)
            .args(words)
            .arg(&*self.path)
            .status()
            .map_err(|source| EditError::NoEditor {
                program: program.to_string(),
                source,
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(EditError::EditorFailed(status))
        }
    }

    /// The copy's text now.
    ///
    /// # Errors
    /// The copy cannot be read.
    pub fn read(&self) -> Result<String, EditError> {
        std::fs::read_to_string(&self.path).map_err(|source| EditError::Io {
            path: self.path.display().to_string(),
            source,
        })
    }

    /// Keeps the copy on disk; returns where it is.
    pub fn keep(self) -> PathBuf {
        self.path.keep().unwrap_or_else(|e| e.path.to_path_buf())
    }
}

/// The editor to run: `$VISUAL`, `$EDITOR`, or `vi`.
pub fn editor() -> String {
    ["VISUAL", "EDITOR"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| "vi".into())
}
