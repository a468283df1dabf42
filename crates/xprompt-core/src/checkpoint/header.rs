//! Reading a safetensors header without the data: why a file the reader refused is unreadable,
//! and the header bytes that identify a checkpoint (for fingerprints).

use std::io::Read;
use std::path::Path;

/// Headers larger than this are refused before allocation (real checkpoints' headers are a
/// few hundred KB; the format's own reader caps them at 100 MB too).
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Bytes per element of a safetensors dtype name; `None` for names it does not define.
fn dtype_size(name: &str) -> Option<u64> {
    Some(match name {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// The JSON header of a safetensors file followed by the file's size as 8 little-endian bytes:
/// names, shapes, dtypes and offsets of every tensor, cheap to hash as the identity of a
/// weights file (retrieval databases record it to know their embedder).
pub fn header_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER_BYTES || header_len > size.saturating_sub(8) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the safetensors header claims {header_len} bytes but the file has {size}"),
        ));
    }
    let mut out = vec![0u8; header_len as usize];
    f.read_exact(&mut out)?;
    out.extend_from_slice(&size.to_le_bytes());
    Ok(out)
}

/// Why a safetensors file that the reader refused is unreadable, naming the tensor at fault
/// where one is: the reader's own errors do not. Reads only the header (bounded by the file's
/// length). `None` when no specific cause is found.
pub(crate) fn diagnose_header(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let file_len = f.metadata().ok()?.len();
    let mut len = [0u8; 8];
    if f.read_exact(&mut len).is_err() {
        return Some(format!(
            "{file_len} bytes, shorter than the 8-byte header length"
        ));
    }
    let header_len = u64::from_le_bytes(len);
    if header_len > file_len - 8 {
        return Some(format!(
            "the header claims {header_len} bytes but the file has {file_len}"
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).ok()?;
    let header: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&header) {
        Ok(h) => h,
        Err(e) => return Some(format!("the safetensors header is not valid JSON: {e}")),
    };
    let data_len = file_len - 8 - header_len;
    for (name, entry) in header.iter().filter(|(n, _)| *n != "__metadata__") {
        if let Some(why) = entry_problem(name, entry, data_len) {
            return Some(why);
        }
    }
    None
}

/// What is wrong with one tensor's header entry, given the length of the data section.
fn entry_problem(name: &str, entry: &serde_json::Value, data_len: u64) -> Option<String> {
    let dtype = entry.get("dtype").and_then(|d| d.as_str()).unwrap_or("?");
    let Some(size) = dtype_size(dtype) else {
        return Some(format!("tensor {name} has an unknown dtype {dtype:?}"));
    };
    let numbers = |key: &str| -> Option<Vec<u64>> {
        entry
            .get(key)
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect())
    };
    let (Some(shape), Some(offsets)) = (numbers("shape"), numbers("data_offsets")) else {
        return Some(format!(
            "tensor {name}: shape or data_offsets is missing or not numbers"
        ));
    };
    let [begin, end] = offsets[..] else {
        return Some(format!("tensor {name}: data_offsets must be two numbers"));
    };
    let bytes = shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d));
    if end > data_len || begin > end {
        return Some(format!(
            "tensor {name} lies at bytes {begin}..{end} of the data, but the file holds {data_len}"
        ));
    }
    if bytes != Some(end - begin) {
        return Some(format!(
            "tensor {name}: shape {shape:?} in {dtype} needs {} bytes, its data_offsets span {}",
            bytes.map_or("too many".to_string(), |b| b.to_string()),
            end - begin
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, header: &str, data: usize) -> std::path::PathBuf {
        let p = dir.join(name);
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data, 0);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn header_bytes_cover_header_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let p = write(dir.path(), "a.safetensors", h, 8);
        let got = header_bytes(&p).unwrap();
        assert_eq!(got.len(), h.len() + 8);
        assert_eq!(&got[..h.len()], h.as_bytes());
        let size = u64::from_le_bytes(got[h.len()..].try_into().unwrap());
        assert_eq!(size, (8 + h.len() + 8) as u64);
    }

    #[test]
    fn header_bytes_refuse_a_length_past_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        let mut bytes = (1u64 << 40).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(&p, bytes).unwrap();
        let e = header_bytes(&p).unwrap_err();
        assert!(e.to_string().contains("claims"), "{e}");
    }

    #[test]
    fn diagnosis_names_the_tensor_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "b.safetensors",
            r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            8,
        );
        let why = diagnose_header(&p).unwrap();
        assert!(why.contains("tensor w lies at bytes 0..16"), "{why}");
        let p = write(
            dir.path(),
            "c.safetensors",
            r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
            16,
        );
        let why = diagnose_header(&p).unwrap();
        assert!(why.contains("needs 12 bytes"), "{why}");
    }
}
