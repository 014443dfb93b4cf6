//! Where the daemon reads revisions from: a local repository (watched on disk) or a
//! remote one mirrored into a bare clone in a cache directory and fetched with git2.
//!
//! Credentials (an HTTPS token, an SSH key or agent) are handed to git2 in callbacks and
//! never appear in URLs, logs or errors.

use std::path::{Path, PathBuf};

use git2::{Cred, CredentialType, FetchOptions, RemoteCallbacks, Repository};

use super::SourceError;

/// Where the repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A path on this machine (a work tree or a bare repository).
    Local(PathBuf),
    /// `https://`, `http://`, `ssh://`, `git://`, `file://` or scp-like `user@host:path`.
    Remote(String),
}

impl Origin {
    /// Tells a URL from a local path.
    pub fn parse(s: &str) -> Origin {
        let scp_like = !s.contains("://")
            && s.split_once(':').is_some_and(|(host, path)| {
                host.contains('@') && !host.contains('/') && !path.is_empty()
            });
        if s.contains("://") || scp_like {
            Origin::Remote(s.to_string())
        } else {
            Origin::Local(PathBuf::from(s))
        }
    }

    /// The origin for logs and `/status`: a URL without its password.
    pub fn redacted(&self) -> String {
        match self {
            Origin::Local(p) => p.display().to_string(),
            Origin::Remote(url) => redact_url(url),
        }
    }
}

/// Removes a password (or token) from `scheme://user:password@host/...`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => url.to_string(),
    }
}

/// The scheme and `host[:port]` of a URL (lowercased host; userinfo removed).
fn scheme_and_authority(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some((scheme.to_ascii_lowercase(), hostport.to_ascii_lowercase()))
}

/// Whether the HTTPS token may be sent to `url` (where libgit2 asks for credentials,
/// after any redirect) for the configured `origin`: only over `https://`, and only to the
/// origin's own host and port.
///
/// # Errors
/// Why not, for the error message (without the token).
pub fn token_allowed(origin: &str, url: &str) -> Result<(), String> {
    let (Some((os, oa)), Some((us, ua))) =
        (scheme_and_authority(origin), scheme_and_authority(url))
    else {
        return Err("the git token is sent only over https://".into());
    };
    if os != "https" || us != "https" {
        return Err(format!(
            "refusing to send the git token over {us}://: it is sent only over https://"
        ));
    }
    if oa != ua {
        return Err(format!(
            "refusing to send the git token to {ua}: the origin {oa} redirected there, and credentials go only to the configured origin"
        ));
    }
    Ok(())
}

/// How to authenticate fetches.
#[derive(Clone, Default)]
pub struct Credentials {
    /// HTTPS token (sent as the password).
    pub token: Option<String>,
    /// SSH private key file; without it the SSH agent is asked.
    pub ssh_key: Option<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("ssh_key", &self.ssh_key)
            .finish()
    }
}

/// A repository the daemon reads: the local one, or the bare mirror of a remote one.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub origin: Origin,
    pub branch: String,
    /// The repository git2 opens (the local path, or the mirror in the cache directory).
    pub dir: PathBuf,
    credentials: Credentials,
}

/// The ref a branch is read from in a mirror.
fn mirror_ref(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}

impl Mirror {
    /// Opens a local repository, or creates (or reuses) the bare mirror of a remote one
    /// under `cache_dir`. Nothing is fetched yet.
    ///
    /// # Errors
    /// An invalid branch name, a local path that is no repository, or I/O errors.
    pub fn open(
        origin: Origin,
        branch: &str,
        cache_dir: &Path,
        credentials: Credentials,
    ) -> Result<Mirror, SourceError> {
        if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
            return Err(SourceError::UnknownRevision {
                rev: branch.to_string(),
                detail: "not a valid branch name".into(),
            });
        }
        if let (Origin::Remote(url), Some(_)) = (&origin, &credentials.token) {
            if let Err(why) = token_allowed(url, url) {
                return Err(SourceError::Git(git2::Error::from_str(&format!(
                    "{why}; use an https:// URL for {} or drop --git-token-file",
                    redact_url(url)
                ))));
            }
        }
        let dir = match &origin {
            Origin::Local(p) => {
                let repo = Repository::open(p).map_err(|_| SourceError::NotARepository {
                    path: p.display().to_string(),
                })?;
                repo.path().to_path_buf()
            }
            Origin::Remote(url) => {
                use sha2::{Digest, Sha256};
                let name = format!("{:x}", Sha256::digest(url.as_bytes()));
                let dir = cache_dir.join(format!("{}.git", &name[..16]));
                if Repository::open_bare(&dir).is_err() {
                    std::fs::create_dir_all(&dir).map_err(|source| SourceError::Io {
                        path: dir.display().to_string(),
                        source,
                    })?;
                    Repository::init_bare(&dir)?;
                }
                dir
            }
        };
        Ok(Mirror {
            origin,
            branch: branch.to_string(),
            dir,
            credentials,
        })
    }

    /// Opens the repository (cheap; git2 repositories are not shared across threads).
    ///
    /// # Errors
    /// Git errors.
    pub fn repo(&self) -> Result<Repository, SourceError> {
        Ok(Repository::open(&self.dir)?)
    }

    /// The local work tree, when the origin is a non-bare local repository.
    pub fn workdir(&self) -> Option<PathBuf> {
        match &self.origin {
            Origin::Local(_) => self.repo().ok()?.workdir().map(Path::to_path_buf),
            Origin::Remote(_) => None,
        }
    }

    /// Fetches the branch from a remote origin (a no-op for a local one).
    ///
    /// # Errors
    /// Network, authentication or git errors (without credentials in the message).
    pub fn fetch(&self) -> Result<(), SourceError> {
        let Origin::Remote(url) = &self.origin else {
            return Ok(());
        };
        let repo = self.repo()?;
        let mut callbacks = RemoteCallbacks::new();
        let creds = self.credentials.clone();
        let origin = url.clone();
        let mut attempts = 0;
        callbacks.credentials(move |asking, username, allowed| {
            // libgit2 asks again after a rejected credential: give up instead of looping.
            attempts += 1;
            if attempts > 3 {
                return Err(git2::Error::from_str("authentication failed"));
            }
            if allowed.contains(CredentialType::SSH_KEY) {
                let user = username.unwrap_or("git");
                return match &creds.ssh_key {
                    Some(key) => Cred::ssh_key(user, None, key, None),
                    None => Cred::ssh_key_from_agent(user),
                };
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                if let Some(token) = &creds.token {
                    token_allowed(&origin, asking).map_err(|m| git2::Error::from_str(&m))?;
                    return Cred::userpass_plaintext(
                        username.unwrap_or("x-access-token"),
                        token,
                    );
                }
            }
            Err(git2::Error::from_str(
                "the remote asks for credentials and none are configured (--git-token-file or --ssh-key)",
            ))
        });
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(callbacks);
        // An anonymous remote keeps the URL out of the mirror's config.
        let mut remote = repo.remote_anonymous(url)?;
        let refspec = format!("+refs/heads/{0}:{1}", self.branch, mirror_ref(&self.branch));
        remote
            .fetch(&[refspec.as_str()], Some(&mut opts), None)
            .map_err(|e| {
                SourceError::Git(git2::Error::from_str(&format!(
                    "fetching {} from {}: {}",
                    self.branch,
                    redact_url(url),
                    e.message()
                )))
            })?;
        Ok(())
    }

    /// The commit at the tip of the branch.
    ///
    /// # Errors
    /// [`SourceError::UnknownRevision`] when the branch does not exist (yet).
    pub fn head(&self) -> Result<String, SourceError> {
        let repo = self.repo()?;
        let name = match &self.origin {
            Origin::Local(_) => format!("refs/heads/{}", self.branch),
            Origin::Remote(_) => mirror_ref(&self.branch),
        };
        let oid = repo
            .refname_to_id(&name)
            .map_err(|e| SourceError::UnknownRevision {
                rev: self.branch.clone(),
                detail: e.message().to_string(),
            })?;
        Ok(oid.to_string())
    }

    /// The paths to watch for changes of a local repository: its git directory (refs,
    /// packed-refs, HEAD) and, with `worktree`, the manifests directory.
    pub fn watch_paths(&self, worktree: bool, manifests: &str) -> Vec<(PathBuf, bool)> {
        let Origin::Local(_) = &self.origin else {
            return Vec::new();
        };
        let mut out = vec![(self.dir.clone(), false), (self.dir.join("refs"), true)];
        if worktree {
            if let Some(w) = self.workdir() {
                out.push((w.join(manifests), true));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_only_to_the_origin_over_https() {
        let o = "https://git.example/org/config.git";
        assert!(token_allowed(o, "https://git.example/org/config.git/info/refs").is_ok());
        assert!(token_allowed(o, "https://bot@GIT.example/other.git").is_ok());
        for bad in [
            "https://evil.example/org/config.git",
            "https://git.example:8443/org/config.git",
            "http://git.example/org/config.git",
            "https://git.example.evil.example/x",
        ] {
            assert!(token_allowed(o, bad).is_err(), "{bad}");
        }
        assert!(token_allowed("http://git.example/x.git", "http://git.example/x.git").is_err());
    }

    #[test]
    fn origins() {
        assert_eq!(
            Origin::parse("/srv/config.git"),
            Origin::Local("/srv/config.git".into())
        );
        assert_eq!(Origin::parse("config"), Origin::Local("config".into()));
        for url in [
            "https://example.org/ops/config.git",
            "ssh://git@example.org/ops/config.git",
            "git@example.org:ops/config.git",
            "file:///srv/config.git",
        ] {
            assert_eq!(Origin::parse(url), Origin::Remote(url.into()), "{url}");
        }
        // A colon in a relative path without a user is a path.
        assert_eq!(Origin::parse("a:b"), Origin::Local("a:b".into()));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("https://bot:ghp_secret@example.org/x.git"),
            "https://bot:***@example.org/x.git"
        );
        assert_eq!(
            redact_url("https://example.org/x.git"),
            "https://example.org/x.git"
        );
        assert_eq!(
            redact_url("ssh://git@example.org/x"),
            "ssh://git@example.org/x"
        );
        let c = Credentials {
            token: Some("tok".into()),
            ssh_key: None,
        };
        assert!(!format!("{c:?}").contains("tok\""));
    }

    #[test]
    fn bad_branch_names_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Mirror::open(
            Origin::Remote("file:///nowhere".into()),
            "a..b",
            dir.path(),
            Credentials::default(),
        );
        assert!(matches!(e, Err(SourceError::UnknownRevision { .. })));
    }
}
