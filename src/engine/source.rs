//! Where a model comes from: resolving a user's model reference to files on disk.
//!
//! This module owns the mapping from a model reference string to a [`ModelSource`]:
//!
//! - a local `.gguf` file,
//! - a local directory in the Hugging Face layout (`config.json` plus `*.safetensors`),
//! - `hf:org/repo[@revision]/path/file.gguf` — one GGUF file from a Hub repository,
//! - `hf:org/repo[@revision]` — a safetensors repository (config, weights, tokenizer files).
//!
//! `hf:` references are looked up in the local Hugging Face cache first (the standard
//! `models--org--repo/{refs,snapshots}` layout that `hf-hub` and `huggingface_hub` share), and
//! only downloaded with `hf-hub`'s blocking API when not offline. Offline mode is the `offline`
//! argument or the `HF_HUB_OFFLINE` environment variable.

use std::ffi::OsString;
use std::fs;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};

/// The URI scheme prefix for Hugging Face Hub references.
pub const HF_PREFIX: &str = "hf:";

const CONFIG_FILE: &str = "config.json";
const SHARD_INDEX_FILE: &str = "model.safetensors.index.json";
const SINGLE_WEIGHTS_FILE: &str = "model.safetensors";
// Downloaded alongside a safetensors model when the repository has them: the tokenizer and
// chat template live next to the weights.
const COMPANION_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
];
const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// Why a model reference could not be resolved. Every message names the path, repository or
/// file involved.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A local path that does not exist.
    #[error("model path {} does not exist", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// A local file that is neither named `.gguf` nor starts with the GGUF magic bytes.
    #[error("{} is not a GGUF model file (expected a .gguf file or a directory with config.json and *.safetensors)", path.display())]
    NotGguf {
        /// The offending file.
        path: PathBuf,
    },
    /// A model directory without `config.json`.
    #[error("model directory {} has no config.json", dir.display())]
    MissingConfig {
        /// The directory.
        dir: PathBuf,
    },
    /// A model directory without any `*.safetensors` weights.
    #[error("model directory {} has no *.safetensors weight files", dir.display())]
    MissingWeights {
        /// The directory.
        dir: PathBuf,
    },
    /// A sharded model directory missing a shard listed in `model.safetensors.index.json`.
    #[error("model directory {} is missing weight shard {shard} listed in {SHARD_INDEX_FILE}", dir.display())]
    MissingShard {
        /// The directory.
        dir: PathBuf,
        /// The missing shard's file name.
        shard: String,
    },
    /// `model.safetensors.index.json` could not be parsed.
    #[error("cannot parse {}: {source}", path.display())]
    BadShardIndex {
        /// The index file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// An `hf:` reference that does not follow `hf:org/repo[@revision][/path/file.gguf]`.
    #[error("invalid model reference {reference:?}: {reason} (expected hf:org/repo[@revision] or hf:org/repo[@revision]/path/file.gguf)")]
    BadReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Offline, and the requested files are not in the local Hugging Face cache.
    #[error("{what} from {repo}@{revision} is not in the Hugging Face cache (looked in {}) and offline mode is on (offline flag or HF_HUB_OFFLINE)", looked_in.display())]
    NotCached {
        /// The repository id (`org/repo`).
        repo: String,
        /// The requested revision.
        revision: String,
        /// What was looked for (a file name, or a description of the safetensors set).
        what: String,
        /// The repository's folder in the cache.
        looked_in: PathBuf,
    },
    /// No cache directory was given and none could be derived from the environment.
    #[error("no Hugging Face cache directory: pass one, or set HF_HUB_CACHE, HF_HOME or HOME")]
    NoCacheDir,
    /// A download from the Hub failed.
    #[error("downloading {file} from {repo}@{revision} failed: {source}")]
    Download {
        /// The repository id (`org/repo`).
        repo: String,
        /// The requested revision.
        revision: String,
        /// The file being fetched (or `repository info`).
        file: String,
        /// The underlying `hf-hub` error, boxed because it is large.
        source: Box<ApiError>,
    },
    /// Reading a local file or directory failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path being read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A resolved model: what kind it is and where its files are.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A single GGUF file (weights, tokenizer and metadata in one).
    Gguf(PathBuf),
    /// A directory with `config.json`, `*.safetensors` weights and usually `tokenizer.json`.
    SafetensorsDir(PathBuf),
}

impl ModelSource {
    /// The GGUF file or the safetensors directory.
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Gguf(path) | ModelSource::SafetensorsDir(path) => path,
        }
    }
}

/// Resolves a model reference (see the module docs for the accepted forms).
///
/// `hf:` references are looked up in `cache_dir` or, when `None`, the cache `hf-hub` and
/// `huggingface_hub` use (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`). When not found there and neither `offline` nor
/// `HF_HUB_OFFLINE` is set, they are downloaded into that cache.
pub fn resolve(
    reference: &str,
    cache_dir: Option<&Path>,
    offline: bool,
) -> Result<ModelSource, SourceError> {
    let Some(hub_ref) = reference.strip_prefix(HF_PREFIX) else {
        return resolve_local(Path::new(reference));
    };
    let hub = HubRef::parse(reference, hub_ref)?;
    let cache = match cache_dir {
        Some(dir) => dir.to_path_buf(),
        None => default_cache_dir(
            std::env::var_os("HF_HUB_CACHE"),
            std::env::var_os("HF_HOME"),
            home_dir(),
        )
        .ok_or(SourceError::NoCacheDir)?,
    };
    let offline = offline || env_offline();

    if let Some(found) = hub.find_in_cache(&cache)? {
        return Ok(found);
    }
    if offline {
        return Err(SourceError::NotCached {
            repo: hub.repo.clone(),
            revision: hub.revision.clone(),
            what: match &hub.file {
                Some(file) => file.clone(),
                None => "a complete safetensors model (config.json and weights)".to_owned(),
            },
            looked_in: cache.join(hub.folder_name()),
        });
    }
    hub.download(&cache)
}

/// Resolves a local `.gguf` file or safetensors directory.
fn resolve_local(path: &Path) -> Result<ModelSource, SourceError> {
    if !path.exists() {
        return Err(SourceError::NotFound {
            path: path.to_path_buf(),
        });
    }
    if path.is_dir() {
        check_safetensors_dir(path)?;
        return Ok(ModelSource::SafetensorsDir(path.to_path_buf()));
    }
    if has_gguf_extension(path) || starts_with_gguf_magic(path)? {
        Ok(ModelSource::Gguf(path.to_path_buf()))
    } else {
        Err(SourceError::NotGguf {
            path: path.to_path_buf(),
        })
    }
}

fn has_gguf_extension(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("gguf"))
}

fn starts_with_gguf_magic(path: &Path) -> Result<bool, SourceError> {
    let io_err = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut magic = [0u8; 4];
    let mut file = fs::File::open(path).map_err(io_err)?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == GGUF_MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io_err(e)),
    }
}

/// Checks that `dir` holds `config.json` and its weights: every shard named by
/// `model.safetensors.index.json` when there is one, otherwise at least one `*.safetensors`.
fn check_safetensors_dir(dir: &Path) -> Result<(), SourceError> {
    if !dir.join(CONFIG_FILE).is_file() {
        return Err(SourceError::MissingConfig {
            dir: dir.to_path_buf(),
        });
    }
    let index = dir.join(SHARD_INDEX_FILE);
    if index.is_file() {
        for shard in shard_names(&index)? {
            if !dir.join(&shard).is_file() {
                return Err(SourceError::MissingShard {
                    dir: dir.to_path_buf(),
                    shard,
                });
            }
        }
        return Ok(());
    }
    let entries = fs::read_dir(dir).map_err(|source| SourceError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let has_weights = entries.filter_map(Result::ok).any(|entry| {
        let path = entry.path();
        path.is_file()
            && path
                .extension()
                .is_some_and(|ext| ext.eq_ignore_ascii_case("safetensors"))
    });
    if has_weights {
        Ok(())
    } else {
        Err(SourceError::MissingWeights {
            dir: dir.to_path_buf(),
        })
    }
}

/// The distinct shard file names in a `model.safetensors.index.json`, sorted.
fn shard_names(index: &Path) -> Result<Vec<String>, SourceError> {
    #[derive(serde::Deserialize)]
    struct ShardIndex {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = fs::read_to_string(index).map_err(|source| SourceError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let parsed: ShardIndex =
        serde_json::from_str(&text).map_err(|source| SourceError::BadShardIndex {
            path: index.to_path_buf(),
            source,
        })?;
    let mut shards: Vec<String> = parsed.weight_map.into_values().collect();
    shards.sort();
    shards.dedup();
    Ok(shards)
}

/// A parsed `hf:` reference.
#[derive(Debug, Clone, PartialEq)]
struct HubRef {
    repo: String,
    revision: String,
    file: Option<String>,
}

impl HubRef {
    /// Parses `org/repo[@revision][/path/file.gguf]` (the part after `hf:`). The revision may
    /// not contain `/`; a path, when present, must name a `.gguf` file.
    fn parse(reference: &str, rest: &str) -> Result<Self, SourceError> {
        let bad = |reason: &str| SourceError::BadReference {
            reference: reference.to_owned(),
            reason: reason.to_owned(),
        };
        if rest.chars().any(char::is_whitespace) {
            return Err(bad("it contains whitespace"));
        }
        let mut parts = rest.splitn(3, '/');
        let org = parts.next().unwrap_or_default();
        let repo_and_rev = parts.next().unwrap_or_default();
        let file = parts.next();
        if org.is_empty() || repo_and_rev.is_empty() {
            return Err(bad("the repository must be written org/repo"));
        }
        let (name, revision) = match repo_and_rev.split_once('@') {
            Some((name, rev)) => (name, rev),
            None => (repo_and_rev, "main"),
        };
        if name.is_empty() || org.contains('@') {
            return Err(bad("the repository must be written org/repo"));
        }
        if revision.is_empty() || revision.contains('@') {
            return Err(bad("the revision after '@' is empty or malformed"));
        }
        let file = match file {
            None => None,
            Some(path) => {
                let is_clean = !path.is_empty()
                    && path
                        .split('/')
                        .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
                if !is_clean {
                    return Err(bad("the file path is empty or malformed"));
                }
                if !has_gguf_extension(Path::new(path)) {
                    return Err(bad(
                        "a file path must name a .gguf file (use hf:org/repo for safetensors)",
                    ));
                }
                Some(path.to_owned())
            }
        };
        Ok(Self {
            repo: format!("{org}/{name}"),
            revision: revision.to_owned(),
            file,
        })
    }

    fn hf_repo(&self) -> Repo {
        Repo::with_revision(self.repo.clone(), RepoType::Model, self.revision.clone())
    }

    fn folder_name(&self) -> String {
        self.hf_repo().folder_name()
    }

    /// The snapshot directory for this revision in `cache`, if the revision is known there:
    /// through `refs/<revision>` (a branch or tag), or directly when the revision is a commit
    /// hash with a snapshot folder.
    fn snapshot_dir(&self, cache: &Path) -> Option<PathBuf> {
        let repo_dir = cache.join(self.folder_name());
        let commit = match fs::read_to_string(repo_dir.join("refs").join(&self.revision)) {
            Ok(hash) => hash.trim().to_owned(),
            Err(_) => self.revision.clone(),
        };
        if commit.is_empty() || commit.contains(['/', '\\']) || commit.starts_with('.') {
            return None;
        }
        let dir = repo_dir.join("snapshots").join(commit);
        dir.is_dir().then_some(dir)
    }

    /// Looks the reference up in the cache; `Ok(None)` when it is not (completely) there.
    fn find_in_cache(&self, cache: &Path) -> Result<Option<ModelSource>, SourceError> {
        let Some(snapshot) = self.snapshot_dir(cache) else {
            return Ok(None);
        };
        match &self.file {
            Some(file) => {
                let path = snapshot.join(file);
                Ok(path.is_file().then_some(ModelSource::Gguf(path)))
            }
            None => match check_safetensors_dir(&snapshot) {
                Ok(()) => Ok(Some(ModelSource::SafetensorsDir(snapshot))),
                // A partial snapshot (e.g. only a tokenizer was fetched) is simply "not cached".
                Err(
                    SourceError::MissingConfig { .. }
                    | SourceError::MissingWeights { .. }
                    | SourceError::MissingShard { .. },
                ) => Ok(None),
                Err(other) => Err(other),
            },
        }
    }

    /// Downloads the reference into `cache` with `hf-hub`'s blocking API.
    fn download(&self, cache: &Path) -> Result<ModelSource, SourceError> {
        let download_err = |file: &str, source: ApiError| SourceError::Download {
            repo: self.repo.clone(),
            revision: self.revision.clone(),
            file: file.to_owned(),
            source: Box::new(source),
        };
        // from_env picks up HF_ENDPOINT; the token comes from the cache's parent as hf-hub does.
        let api = ApiBuilder::from_env()
            .with_cache_dir(cache.to_path_buf())
            .with_progress(std::io::stderr().is_terminal())
            .build()
            .map_err(|e| download_err("(client setup)", e))?;
        let repo = api.repo(self.hf_repo());

        if let Some(file) = &self.file {
            tracing::info!(repo = %self.repo, revision = %self.revision, %file, "downloading GGUF");
            let path = repo.get(file).map_err(|e| download_err(file, e))?;
            return Ok(ModelSource::Gguf(path));
        }

        let info = repo
            .info()
            .map_err(|e| download_err("(repository info)", e))?;
        let listed: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
        let config = repo
            .get(CONFIG_FILE)
            .map_err(|e| download_err(CONFIG_FILE, e))?;
        let dir = config
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| SourceError::NotFound {
                path: config.clone(),
            })?;

        let weights: Vec<String> = if listed.contains(&SHARD_INDEX_FILE) {
            let index = repo
                .get(SHARD_INDEX_FILE)
                .map_err(|e| download_err(SHARD_INDEX_FILE, e))?;
            shard_names(&index)?
        } else if listed.contains(&SINGLE_WEIGHTS_FILE) {
            vec![SINGLE_WEIGHTS_FILE.to_owned()]
        } else {
            // Top-level *.safetensors only: subfolders hold other formats or originals.
            listed
                .iter()
                .filter(|f| !f.contains('/') && f.ends_with(".safetensors"))
                .map(|f| (*f).to_owned())
                .collect()
        };
        if weights.is_empty() {
            return Err(SourceError::MissingWeights { dir });
        }
        let companions = COMPANION_FILES.iter().filter(|f| listed.contains(f));
        for file in weights
            .iter()
            .map(String::as_str)
            .chain(companions.copied())
        {
            tracing::info!(repo = %self.repo, revision = %self.revision, %file, "downloading");
            repo.get(file).map_err(|e| download_err(file, e))?;
        }
        check_safetensors_dir(&dir)?;
        Ok(ModelSource::SafetensorsDir(dir))
    }
}

/// Whether `HF_HUB_OFFLINE` asks for offline mode.
fn env_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| is_truthy(&v))
}

// huggingface_hub's convention for boolean environment variables.
fn is_truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// The default hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`
/// (empty variables count as unset).
fn default_cache_dir(
    hf_hub_cache: Option<OsString>,
    hf_home: Option<OsString>,
    home: Option<PathBuf>,
) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(cache) = set(hf_hub_cache) {
        return Some(cache);
    }
    if let Some(hf_home) = set(hf_home) {
        return Some(hf_home.join("hub"));
    }
    home.map(|home| home.join(".cache").join("huggingface").join("hub"))
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<HubRef, SourceError> {
        let rest = s.strip_prefix(HF_PREFIX).unwrap_or(s);
        HubRef::parse(s, rest)
    }

    fn hub(repo: &str, revision: &str, file: Option<&str>) -> HubRef {
        HubRef {
            repo: repo.into(),
            revision: revision.into(),
            file: file.map(Into::into),
        }
    }

    #[test]
    fn hub_refs_parse_repo_revision_and_file() {
        let cases = [
            ("hf:org/repo", hub("org/repo", "main", None)),
            ("hf:org/repo@v1.0", hub("org/repo", "v1.0", None)),
            (
                "hf:org/repo/file.gguf",
                hub("org/repo", "main", Some("file.gguf")),
            ),
            (
                "hf:org/repo@abc123/sub/dir/Model-Q4_K_M.GGUF",
                hub("org/repo", "abc123", Some("sub/dir/Model-Q4_K_M.GGUF")),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text).expect(text), expected, "{text}");
        }
    }

    #[test]
    fn malformed_hub_refs_are_rejected() {
        for bad in [
            "hf:",
            "hf:org",
            "hf:org/",
            "hf:/repo",
            "hf:org/@rev",
            "hf:org/repo@",
            "hf:org/repo@a@b",
            "hf:org/repo/",
            "hf:org/repo//x.gguf",
            "hf:org/repo/../x.gguf",
            "hf:org/repo/model.safetensors",
            "hf:org/repo name",
        ] {
            match parse(bad) {
                Err(SourceError::BadReference { reference, .. }) => assert_eq!(reference, bad),
                other => panic!("{bad:?} should be a BadReference, got {other:?}"),
            }
        }
    }

    #[test]
    fn hf_hub_offline_accepts_the_usual_truthy_values() {
        for yes in ["1", "true", "TRUE", "yes", "On", " 1 "] {
            assert!(is_truthy(yes), "{yes:?}");
        }
        for no in ["", "0", "false", "no", "off", "2"] {
            assert!(!is_truthy(no), "{no:?}");
        }
    }

    #[test]
    fn cache_dir_prefers_hf_hub_cache_then_hf_home_then_home() {
        let some = |s: &str| Some(OsString::from(s));
        assert_eq!(
            default_cache_dir(some("/c"), some("/h"), Some("/u".into())),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            default_cache_dir(None, some("/h"), Some("/u".into())),
            Some(PathBuf::from("/h/hub"))
        );
        assert_eq!(
            default_cache_dir(some(""), None, Some("/u".into())),
            Some(PathBuf::from("/u/.cache/huggingface/hub"))
        );
        assert_eq!(default_cache_dir(None, None, None), None);
    }

    #[test]
    fn error_messages_name_what_is_wrong() {
        let err = parse("hf:org").expect_err("malformed");
        assert!(err.to_string().contains("hf:org"), "{err}");
        let err = SourceError::NotCached {
            repo: "org/repo".into(),
            revision: "main".into(),
            what: "file.gguf".into(),
            looked_in: "/cache/models--org--repo".into(),
        };
        let msg = err.to_string();
        for needle in [
            "file.gguf",
            "org/repo@main",
            "/cache/models--org--repo",
            "offline",
        ] {
            assert!(msg.contains(needle), "{msg}");
        }
    }
}
