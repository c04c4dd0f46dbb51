//! Bad GGUF files get clear errors naming the file and the problem, never a panic.

use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use hearth::engine::loader::{load_gguf, LoadError, LoadOptions};

fn default_model() -> PathBuf {
    std::env::var_os("HEARTH_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

fn load_err(path: &Path) -> LoadError {
    match load_gguf(path, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e,
    }
}

/// A tiny GGUF with the given architecture and one 32×32 tensor.
fn tiny_gguf(path: &Path, arch: &str) {
    let t = Tensor::zeros((32, 32), candle_core::DType::F32, &Device::Cpu).expect("zeros");
    let q = QTensor::quantize(&t, GgmlDType::Q8_0).expect("quantize");
    let arch_v = gguf_file::Value::String(arch.to_string());
    let mut f = std::fs::File::create(path).expect("create");
    gguf_file::write(
        &mut f,
        &[("general.architecture", &arch_v)],
        &[("token_embd.weight", &q)],
    )
    .expect("write gguf");
}

#[test]
fn a_missing_file_is_an_open_error_naming_it() {
    let err = load_err(Path::new("/nonexistent/model.gguf"));
    assert!(matches!(err, LoadError::Open { .. }));
    assert!(err.to_string().contains("/nonexistent/model.gguf"), "{err}");
}

#[test]
fn a_file_that_is_not_gguf_is_a_format_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("notes.gguf");
    std::fs::write(&p, b"this is not a model").expect("write");
    let err = load_err(&p);
    assert!(matches!(err, LoadError::Format { .. }), "{err}");
    assert!(err.to_string().contains("notes.gguf"), "{err}");
    assert!(err.to_string().contains("GGUF"), "{err}");
}

#[test]
fn a_truncated_file_names_the_file_and_the_missing_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("cut.gguf");
    let data = std::fs::read(default_model()).expect("default model (run scripts/fetch-model.sh)");
    std::fs::write(&p, &data[..data.len() / 2]).expect("write");
    let err = load_err(&p).to_string();
    assert!(err.contains("cut.gguf"), "{err}");
    assert!(err.contains("tensor") && err.contains("remaining"), "{err}");
}

#[test]
fn an_unknown_architecture_is_unsupported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("gpt.gguf");
    tiny_gguf(&p, "gpt2");
    let err = load_err(&p);
    assert!(matches!(err, LoadError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("gpt2"), "{err}");
}

#[test]
fn an_unknown_quantization_type_is_a_format_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("odd.gguf");
    tiny_gguf(&p, "llama");
    // Patch the tensor's type id (the u32 after its two u64 dims) to one no one defines.
    let mut data = std::fs::read(&p).expect("read");
    let name = b"token_embd.weight";
    let at = data
        .windows(name.len())
        .position(|w| w == name)
        .expect("tensor name in header");
    let dtype_at = at + name.len() + 4 + 2 * 8;
    let q8_0 = 8u32.to_le_bytes();
    assert_eq!(&data[dtype_at..dtype_at + 4], &q8_0, "layout as expected");
    data[dtype_at..dtype_at + 4].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&p, &data).expect("write");
    let err = load_err(&p);
    assert!(matches!(err, LoadError::Format { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("odd.gguf") && msg.contains("99"), "{msg}");
}

#[test]
fn a_llama_file_missing_hyperparameters_says_which_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bare.gguf");
    tiny_gguf(&p, "llama");
    let err = load_err(&p).to_string();
    assert!(err.contains("llama.embedding_length"), "{err}");
}
