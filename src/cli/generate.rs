//! `celeroot completions` and `celeroot man`: shell completions and man pages generated
//! from the clap definitions, so they never drift from the real options.

use std::path::PathBuf;

use clap::{Args, CommandFactory, ValueEnum};

use super::{Cli, CommandError, EXIT_OK};

/// Print a shell completion script to stdout.
///
/// bash: `celeroot completions bash > ~/.local/share/bash-completion/completions/celeroot`;
/// zsh: `celeroot completions zsh > "${fpath[1]}/_celeroot"`;
/// fish: `celeroot completions fish > ~/.config/fish/completions/celeroot.fish`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

/// Print the man page (roff) to stdout, or write one page per command to a directory.
///
/// `celeroot man | man -l -` reads it; `celeroot man --out-dir /usr/local/share/man/man1`
/// installs celeroot.1 and celeroot-<command>.1 pages.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write celeroot.1 and a page per command (celeroot-hosts-add.1, ...) here.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

pub fn completions(a: &CompletionsArgs) -> Result<u8, CommandError> {
    use clap_complete::Shell as S;
    let shell = match a.shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
        Shell::Elvish => S::Elvish,
        Shell::Powershell => S::PowerShell,
    };
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "celeroot", &mut buf);
    out!("{}", String::from_utf8_lossy(&buf));
    Ok(EXIT_OK)
}

pub fn man(a: &ManArgs) -> Result<u8, CommandError> {
    let cmd = Cli::command();
    match &a.out_dir {
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .map_err(|e| CommandError::invalid(format!("cannot render the man page: {e}")))?;
            out!("{}", String::from_utf8_lossy(&buf));
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                CommandError::invalid(format!("cannot create {}: {e}", dir.display()))
            })?;
            let written = write_pages(&cmd, "celeroot", dir)?;
            outln!("wrote {written} man page(s) to {}", dir.display());
        }
    }
    Ok(EXIT_OK)
}

/// Writes the page of `cmd` (named `name`) and of every subcommand; returns the count.
fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &std::path::Path,
) -> Result<usize, CommandError> {
    let cmd = cmd.clone().name(name.to_string());
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .map_err(|e| CommandError::invalid(format!("cannot render {name}.1: {e}")))?;
    crate::edit::write_atomic(&path, &String::from_utf8_lossy(&buf))
        .map_err(|e| CommandError::invalid(format!("cannot write {}: {e}", path.display())))?;
    let mut count = 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_name = format!("{name}-{}", sub.get_name());
        count += write_pages(sub, &sub_name, dir)?;
    }
    Ok(count)
}
