//! Integration tests for `hearth::engine::source::resolve`: local files and directories, and
//! `hf:` references served from a fake Hugging Face cache laid out exactly as `hf-hub` writes it
//! (`models--org--repo/{refs,snapshots,blobs}`). No network: every `hf:` call is offline.

use std::fs;
use std::path::{Path, PathBuf};

use hearth::engine::source::{resolve, ModelSource, SourceError};
use tempfile::TempDir;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const OTHER_COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";

fn write(path: &Path, contents: &str) {
    fs::create_dir_all(path.parent().expect("test paths have parents")).expect("mkdir");
    fs::write(path, contents).expect("write");
}

/// A fake hub cache. `add` places a file in `snapshots/<commit>/` the way hf-hub does: the
/// content in `blobs/<etag>` and a relative symlink to it in the snapshot (a copy where
/// symlinks are unavailable).
struct FakeCache {
    dir: TempDir,
}

impl FakeCache {
    fn new() -> Self {
        Self {
            dir: TempDir::new().expect("tempdir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.path()
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    fn set_ref(&self, repo: &str, name: &str, commit: &str) {
        write(&self.repo_dir(repo).join("refs").join(name), commit);
    }

    fn add(&self, repo: &str, commit: &str, file: &str, contents: &str) -> PathBuf {
        let repo_dir = self.repo_dir(repo);
        let etag = format!("etag-{}", file.replace('/', "-"));
        let blob = repo_dir.join("blobs").join(&etag);
        write(&blob, contents);
        let pointer = repo_dir.join("snapshots").join(commit).join(file);
        fs::create_dir_all(pointer.parent().expect("parent")).expect("mkdir");
        #[cfg(unix)]
        {
            let depth = file.split('/').count() + 1;
            let target = PathBuf::from("../".repeat(depth)).join("blobs").join(&etag);
            std::os::unix::fs::symlink(target, &pointer).expect("symlink");
        }
        #[cfg(not(unix))]
        fs::copy(&blob, &pointer).expect("copy");
        pointer
    }

    fn snapshot(&self, repo: &str, commit: &str) -> PathBuf {
        self.repo_dir(repo).join("snapshots").join(commit)
    }
}

fn resolve_offline(reference: &str, cache: &FakeCache) -> Result<ModelSource, SourceError> {
    resolve(reference, Some(cache.path()), true)
}

#[test]
fn a_cached_gguf_resolves_to_its_snapshot_path() {
    let cache = FakeCache::new();
    cache.set_ref("org/repo", "main", COMMIT);
    let path = cache.add("org/repo", COMMIT, "file.gguf", "GGUF....");
    assert_eq!(
        resolve_offline("hf:org/repo/file.gguf", &cache).expect("cached"),
        ModelSource::Gguf(path.clone())
    );
    assert_eq!(
        fs::read_to_string(path).expect("symlink resolves"),
        "GGUF...."
    );
}

#[test]
fn a_gguf_in_a_repo_subfolder_resolves() {
    let cache = FakeCache::new();
    cache.set_ref("org/repo", "main", COMMIT);
    let path = cache.add("org/repo", COMMIT, "quants/model-Q4_K_M.gguf", "GGUF");
    assert_eq!(
        resolve_offline("hf:org/repo/quants/model-Q4_K_M.gguf", &cache).expect("cached"),
        ModelSource::Gguf(path)
    );
}

#[test]
fn a_ref_file_with_a_trailing_newline_still_resolves() {
    let cache = FakeCache::new();
    cache.set_ref("org/repo", "main", &format!("{COMMIT}\n"));
    let path = cache.add("org/repo", COMMIT, "file.gguf", "GGUF");
    assert_eq!(
        resolve_offline("hf:org/repo/file.gguf", &cache).expect("cached"),
        ModelSource::Gguf(path)
    );
}

#[test]
fn a_revision_suffix_selects_that_branch() {
    let cache = FakeCache::new();
    cache.set_ref("org/repo", "main", COMMIT);
    cache.set_ref("org/repo", "v2", OTHER_COMMIT);
    cache.add("org/repo", COMMIT, "file.gguf", "main");
    let v2 = cache.add("org/repo", OTHER_COMMIT, "file.gguf", "v2");
    assert_eq!(
        resolve_offline("hf:org/repo@v2/file.gguf", &cache).expect("cached"),
        ModelSource::Gguf(v2)
    );
}

#[test]
fn a_revision_can_be_a_commit_hash_with_no_ref_file() {
    let cache = FakeCache::new();
    cache.set_ref("org/repo", "main", COMMIT);
    let pinned = cache.add("org/repo", OTHER_COMMIT, "file.gguf", "pinned");
    let reference = format!("hf:org/repo@{OTHER_COMMIT}/file.gguf");
    assert_eq!(
        resolve_offline(&reference, &cache).expect("cached"),
        ModelSource::Gguf(pinned)
    );
}

#[test]
fn a_file_missing_from_the_cache_is_a_clear_offline_error() {
    let cache = FakeCache::new();
    cache.set_ref("org/repo", "main", COMMIT);
    cache.add("org/repo", COMMIT, "file.gguf", "GGUF");
    let err = resolve_offline("hf:org/repo/other.gguf", &cache).expect_err("not cached");
    assert!(matches!(err, SourceError::NotCached { .. }), "{err:?}");
    let msg = err.to_string();
    for needle in [
        "other.gguf",
        "org/repo",
        "not in the Hugging Face cache",
        "offline",
    ] {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    assert!(
        msg.contains(&cache.repo_dir("org/repo").display().to_string()),
        "{msg}"
    );
}

#[test]
fn an_unknown_repo_or_revision_is_not_cached() {
    let cache = FakeCache::new();
    cache.set_ref("org/repo", "main", COMMIT);
    cache.add("org/repo", COMMIT, "file.gguf", "GGUF");
    for reference in [
        "hf:org/unknown/file.gguf",
        "hf:org/repo@nope/file.gguf",
        "hf:org/unknown",
    ] {
        let err = resolve_offline(reference, &cache).expect_err(reference);
        assert!(
            matches!(err, SourceError::NotCached { .. }),
            "{reference}: {err:?}"
        );
    }
}

#[test]
fn a_cached_safetensors_repo_resolves_to_its_snapshot_dir() {
    let cache = FakeCache::new();
    cache.set_ref("org/st", "main", COMMIT);
    cache.add("org/st", COMMIT, "config.json", "{}");
    cache.add("org/st", COMMIT, "model.safetensors", "weights");
    cache.add("org/st", COMMIT, "tokenizer.json", "{}");
    assert_eq!(
        resolve_offline("hf:org/st", &cache).expect("cached"),
        ModelSource::SafetensorsDir(cache.snapshot("org/st", COMMIT))
    );
}

#[test]
fn a_sharded_safetensors_repo_needs_every_shard_listed_in_its_index() {
    let cache = FakeCache::new();
    cache.set_ref("org/big", "main", COMMIT);
    cache.add("org/big", COMMIT, "config.json", "{}");
    cache.add(
        "org/big",
        COMMIT,
        "model.safetensors.index.json",
        r#"{"metadata":{},"weight_map":{
            "a":"model-00001-of-00002.safetensors",
            "b":"model-00002-of-00002.safetensors"}}"#,
    );
    cache.add("org/big", COMMIT, "model-00001-of-00002.safetensors", "w1");
    let err = resolve_offline("hf:org/big", &cache).expect_err("a shard is missing");
    assert!(matches!(err, SourceError::NotCached { .. }), "{err:?}");

    cache.add("org/big", COMMIT, "model-00002-of-00002.safetensors", "w2");
    assert_eq!(
        resolve_offline("hf:org/big", &cache).expect("complete"),
        ModelSource::SafetensorsDir(cache.snapshot("org/big", COMMIT))
    );
}

#[test]
fn a_safetensors_repo_without_weights_in_the_cache_is_not_cached() {
    let cache = FakeCache::new();
    cache.set_ref("org/st", "main", COMMIT);
    cache.add("org/st", COMMIT, "config.json", "{}");
    let err = resolve_offline("hf:org/st@main", &cache).expect_err("no weights");
    assert!(matches!(err, SourceError::NotCached { .. }), "{err:?}");
}

#[test]
fn malformed_hub_references_are_rejected() {
    let cache = FakeCache::new();
    for reference in [
        "hf:",
        "hf:justorg",
        "hf:org/repo@",
        "hf:org/repo/weights.bin",
    ] {
        let err = resolve_offline(reference, &cache).expect_err(reference);
        assert!(
            matches!(err, SourceError::BadReference { .. }),
            "{reference}: {err:?}"
        );
        assert!(err.to_string().contains(reference), "{err}");
    }
}

#[test]
fn a_local_gguf_file_resolves_to_itself() {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("model.gguf");
    write(&path, "GGUF");
    assert_eq!(
        resolve(path.to_str().expect("utf-8 path"), None, true).expect("exists"),
        ModelSource::Gguf(path)
    );
}

#[test]
fn a_local_file_with_gguf_magic_but_no_extension_is_accepted() {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("blob-without-extension");
    write(&path, "GGUF\u{3}\0\0\0rest");
    assert_eq!(
        resolve(path.to_str().expect("utf-8 path"), None, true).expect("magic"),
        ModelSource::Gguf(path)
    );
}

#[test]
fn a_local_file_that_is_not_gguf_is_rejected_by_name() {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("weights.bin");
    write(&path, "not a model");
    let err = resolve(path.to_str().expect("utf-8 path"), None, true).expect_err("not gguf");
    assert!(matches!(err, SourceError::NotGguf { .. }), "{err:?}");
    assert!(err.to_string().contains("weights.bin"), "{err}");
}

#[test]
fn a_missing_local_file_is_an_error_naming_it() {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("nope.gguf");
    let err = resolve(path.to_str().expect("utf-8 path"), None, true).expect_err("missing");
    assert!(matches!(err, SourceError::NotFound { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_local_safetensors_dir_resolves_to_itself() {
    let dir = TempDir::new().expect("tempdir");
    write(&dir.path().join("config.json"), "{}");
    write(&dir.path().join("model.safetensors"), "weights");
    assert_eq!(
        resolve(dir.path().to_str().expect("utf-8 path"), None, true).expect("complete"),
        ModelSource::SafetensorsDir(dir.path().to_path_buf())
    );
}

#[test]
fn a_local_dir_without_config_json_says_so() {
    let dir = TempDir::new().expect("tempdir");
    write(&dir.path().join("model.safetensors"), "weights");
    let err = resolve(dir.path().to_str().expect("utf-8 path"), None, true).expect_err("no config");
    assert!(matches!(err, SourceError::MissingConfig { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("config.json") && msg.contains(&dir.path().display().to_string()));
}

#[test]
fn a_local_dir_without_safetensors_says_so() {
    let dir = TempDir::new().expect("tempdir");
    write(&dir.path().join("config.json"), "{}");
    write(&dir.path().join("pytorch_model.bin"), "old weights");
    let err =
        resolve(dir.path().to_str().expect("utf-8 path"), None, true).expect_err("no weights");
    assert!(matches!(err, SourceError::MissingWeights { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("safetensors") && msg.contains(&dir.path().display().to_string()));
}

#[test]
fn a_local_dir_missing_a_listed_shard_names_the_shard() {
    let dir = TempDir::new().expect("tempdir");
    write(&dir.path().join("config.json"), "{}");
    write(
        &dir.path().join("model.safetensors.index.json"),
        r#"{"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#,
    );
    write(&dir.path().join("model-00001-of-00002.safetensors"), "w1");
    let err = resolve(dir.path().to_str().expect("utf-8 path"), None, true).expect_err("shard");
    assert!(matches!(err, SourceError::MissingShard { .. }), "{err:?}");
    assert!(
        err.to_string().contains("model-00002-of-00002.safetensors"),
        "{err}"
    );
}

#[test]
fn the_fake_cache_layout_is_the_one_hf_hub_itself_reads() {
    let cache = FakeCache::new();
    cache.set_ref("org/repo", "main", COMMIT);
    let path = cache.add("org/repo", COMMIT, "file.gguf", "GGUF");
    let hf = hf_hub::Cache::new(cache.path().to_path_buf());
    assert_eq!(
        hf.model("org/repo".into()).get("file.gguf"),
        Some(path.clone())
    );
    assert_eq!(
        resolve_offline("hf:org/repo/file.gguf", &cache).expect("cached"),
        ModelSource::Gguf(path)
    );
}
