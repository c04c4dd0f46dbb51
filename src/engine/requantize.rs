//! Writing a GGUF whose matrices are re-quantized: how the tests and benchmarks run the default
//! model in formats it does not ship in (K-quants, Q8_0, mixed recipes like Q4_K_M).
//!
//! Owns nothing but that one conversion; it reads and writes files through Candle's GGUF code
//! and must not import the server layers.

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

/// Copy the GGUF at `src` to `out`, each 2-D tensor re-quantized to `pick(name)` (kept as it is
/// where `pick` says `None`). A type whose blocks do not fit a tensor's rows falls back to Q5_0,
/// as llama.cpp's quantizer falls back for K-quants. Written to a temporary file and renamed, so
/// a reader never sees half a file.
pub fn requantize_gguf(
    src: &Path,
    out: &Path,
    pick: impl Fn(&str) -> Option<GgmlDType>,
) -> candle_core::Result<()> {
    let mut file = std::fs::File::open(src)?;
    let content = gguf_file::Content::read(&mut file)?;
    let mut tensors = Vec::new();
    for name in content.tensor_infos.keys() {
        let t = content.tensor(&mut file, name, &Device::Cpu)?;
        let dims = t.shape().dims().to_vec();
        let q = match pick(name).filter(|_| dims.len() == 2) {
            Some(ty) => {
                let ty = if dims[1].is_multiple_of(ty.block_size()) {
                    ty
                } else {
                    GgmlDType::Q5_0
                };
                QTensor::quantize(&t.dequantize(&Device::Cpu)?, ty)?
            }
            None => t,
        };
        tensors.push((name.clone(), q));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let tmp = out.with_extension(format!("{}.tmp", std::process::id()));
    let mut w = std::fs::File::create(&tmp)?;
    gguf_file::write(&mut w, &metadata, &refs)?;
    std::fs::rename(&tmp, out)?;
    Ok(())
}
