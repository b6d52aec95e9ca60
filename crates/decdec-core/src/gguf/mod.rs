//! GGUF v2/v3 parsing, ggml dequantization to f32 and the mapping of llama-family
//! GGUF checkpoints back to the Hugging Face layout.
//!
//! Everything here works on bytes: the caller mmaps the file, calls
//! [`GgufFile::parse`] and adds the file path to errors with `anyhow::Context`.
//! Nothing panics on malformed input; every size is checked against the buffer.
//!
//! # Parsing
//! * [`GgufFile::parse`]`(bytes) -> Result<GgufFile>` — header, metadata (all value
//!   types, nested arrays), tensor infos, `general.alignment` (default 32) and the
//!   aligned data section. GGUF v1 and big-endian files are rejected.
//! * [`GgufFile::metadata`]`(key) -> Option<&GgufValue>`, [`GgufFile::metadata_entries`];
//!   typed helpers [`GgufFile::get_u32`], [`GgufFile::get_u64`], [`GgufFile::get_usize`],
//!   [`GgufFile::get_i64`], [`GgufFile::get_f32`], [`GgufFile::get_f64`],
//!   [`GgufFile::get_bool`], [`GgufFile::get_str`], [`GgufFile::get_array`]
//!   (integers are accepted at whatever width the file stores them, as long as the
//!   value fits), [`GgufFile::architecture`].
//! * [`GgufFile::tensors`]`() -> &[GgufTensorInfo]` (file order), [`GgufFile::tensor`]`(name)`,
//!   [`GgufFile::tensor_bytes`]`(info) -> Result<&[u8]>`,
//!   [`GgufFile::tensor_f32`]`(info) -> Result<Vec<f32>>` (dequantized, ggml element order).
//!
//! [`GgufTensorInfo::dims`] is in ggml order (`ne0` fastest-varying);
//! [`GgufTensorInfo::hf_shape`] is the reversed, row-major (PyTorch) shape.
//!
//! # Dequantization
//! [`dequantize`]`(ty, bytes, n_elements) -> Result<Vec<f32>>` for F32, F16, BF16, F64,
//! I8/I16/I32, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, exactly as
//! ggml's `dequantize_row_*` (rayon over blocks for large tensors). Other ggml types
//! (IQ*, TQ*, MXFP4, Q8_K) parse, but dequantizing them is an error naming the type.
//!
//! # Hugging Face mapping (llama, mistral, qwen2, phi3)
//! * [`hf_tensor_name`]`(arch, gguf_name) -> Option<String>` — `blk.N.attn_q.weight` ->
//!   `model.layers.N.self_attn.q_proj.weight` etc. (phi3's fused `ffn_up` is `gate_up_proj`).
//! * [`unpermute_rope_rows`]`(w, rows, cols, n_head) -> Result<Vec<f32>>` — undoes
//!   llama.cpp's q/k row permutation (use `n_head` for q and `n_kv_head` for k);
//!   [`permute_rope_rows`] is the forward permutation.
//! * [`hf_config_from_gguf`]`(&GgufFile) -> Result<serde_json::Value>` — a config.json object.
//! * [`load_hf_tensors`]`(&GgufFile) -> Result<Vec<HfTensor>>` (an [`HfTensor`] is
//!   `(String /*hf name*/, Vec<usize> /*hf shape*/, Vec<f32>)`) — every
//!   weight under its HF name and shape, dequantized, q/k un-permuted for llama/mistral;
//!   [`load_hf_tensor`] does the same for one tensor (to stream large models).

mod dequant;
mod hf;
mod types;

#[cfg(test)]
mod tests;

pub use dequant::dequantize;
pub use hf::{
    hf_config_from_gguf, hf_tensor_name, load_hf_tensor, load_hf_tensors, permute_rope_rows,
    rope_permuted_by_converter, unpermute_rope_rows, HfTensor, SUPPORTED_ARCHITECTURES,
};
pub use types::{GgmlType, QK_K};

use anyhow::{anyhow, bail, Result};
use std::borrow::Cow;
use std::collections::HashMap;

/// "GGUF" as stored at offset 0.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of tensor offsets when `general.alignment` is absent.
pub const GGUF_DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest nesting of arrays we accept (the format allows arrays of arrays; a
/// hostile file must not overflow the stack).
const MAX_ARRAY_DEPTH: usize = 16;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;

/// The type tag of a GGUF metadata value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl GgufValueType {
    pub fn from_id(id: u32) -> Option<Self> {
        use GgufValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        use GgufValueType::*;
        match self {
            U8 => 0,
            I8 => 1,
            U16 => 2,
            I16 => 3,
            U32 => 4,
            I32 => 5,
            F32 => 6,
            Bool => 7,
            String => 8,
            Array => 9,
            U64 => 10,
            I64 => 11,
            F64 => 12,
        }
    }

    /// Smallest encoded size of one value of this type (used to bound array counts
    /// by the bytes left before allocating).
    fn min_encoded_size(self) -> usize {
        use GgufValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 => 8,
            String => 8,
            Array => 12,
        }
    }
}

/// One metadata value. Strings borrow from the file when they are valid UTF-8
/// (invalid sequences are replaced, never rejected: tokenizer vocabularies may hold
/// raw bytes).
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue<'a> {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(Cow<'a, str>),
    /// Element type and elements (elements may themselves be arrays).
    Array(GgufValueType, Vec<GgufValue<'a>>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl<'a> GgufValue<'a> {
    pub fn value_type(&self) -> GgufValueType {
        match self {
            GgufValue::U8(_) => GgufValueType::U8,
            GgufValue::I8(_) => GgufValueType::I8,
            GgufValue::U16(_) => GgufValueType::U16,
            GgufValue::I16(_) => GgufValueType::I16,
            GgufValue::U32(_) => GgufValueType::U32,
            GgufValue::I32(_) => GgufValueType::I32,
            GgufValue::F32(_) => GgufValueType::F32,
            GgufValue::Bool(_) => GgufValueType::Bool,
            GgufValue::String(_) => GgufValueType::String,
            GgufValue::Array(..) => GgufValueType::Array,
            GgufValue::U64(_) => GgufValueType::U64,
            GgufValue::I64(_) => GgufValueType::I64,
            GgufValue::F64(_) => GgufValueType::F64,
        }
    }

    /// Any integer type as i128 (lossless for every GGUF integer width).
    fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            GgufValue::U8(v) => v.into(),
            GgufValue::I8(v) => v.into(),
            GgufValue::U16(v) => v.into(),
            GgufValue::I16(v) => v.into(),
            GgufValue::U32(v) => v.into(),
            GgufValue::I32(v) => v.into(),
            GgufValue::U64(v) => v.into(),
            GgufValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// An integer of any stored width that fits in u64.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_i128().and_then(|v| u64::try_from(v).ok())
    }

    /// An integer of any stored width that fits in u32.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_i128().and_then(|v| u32::try_from(v).ok())
    }

    /// An integer of any stored width that fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// A float (f32 or f64) or an integer, as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue<'a>]> {
        match self {
            GgufValue::Array(_, items) => Some(items),
            _ => None,
        }
    }
}

/// One tensor's descriptor from the GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` (ne0) varies fastest.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Product of `dims`.
    pub n_elements: u64,
    /// Bytes of data (`n_elements / block_size * type_size`).
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    /// Row-major (Hugging Face / PyTorch) shape: the ggml dims reversed.
    pub fn hf_shape(&self) -> Vec<usize> {
        // Parsing checked that the element count (hence every dim) fits in usize.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file borrowing the caller's bytes (typically an mmap).
#[derive(Debug)]
pub struct GgufFile<'a> {
    bytes: &'a [u8],
    version: u32,
    metadata: Vec<(String, GgufValue<'a>)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

/// Bounds-checked little-endian cursor over the file bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => bail!(
                "truncated GGUF header: {} needs {} bytes at offset {}, file has {} bytes",
                what(),
                n,
                self.pos,
                self.bytes.len()
            ),
        }
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// A GGUF string: u64 length + bytes (no terminator).
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<Cow<'a, str>> {
        let at = self.pos;
        let len = self.u64(&|| format!("length of {}", what()))?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.remaining())
            .ok_or_else(|| {
                anyhow!(
                    "{} has string length {} at offset {}, more than the {} bytes left in the file",
                    what(),
                    len,
                    at,
                    self.remaining()
                )
            })?;
        let raw = self.take(len, what)?;
        Ok(String::from_utf8_lossy(raw))
    }

    fn value(
        &mut self,
        ty: GgufValueType,
        depth: usize,
        what: &dyn Fn() -> String,
    ) -> Result<GgufValue<'a>> {
        Ok(match ty {
            GgufValueType::U8 => GgufValue::U8(self.array::<1>(what)?[0]),
            GgufValueType::I8 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            GgufValueType::U16 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            GgufValueType::I16 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            GgufValueType::U32 => GgufValue::U32(u32::from_le_bytes(self.array(what)?)),
            GgufValueType::I32 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            GgufValueType::F32 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            GgufValueType::U64 => GgufValue::U64(u64::from_le_bytes(self.array(what)?)),
            GgufValueType::I64 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            GgufValueType::F64 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            GgufValueType::Bool => {
                let b = self.array::<1>(what)?[0];
                match b {
                    0 => GgufValue::Bool(false),
                    1 => GgufValue::Bool(true),
                    _ => bail!("{} is a bool stored as {b}, expected 0 or 1", what()),
                }
            }
            GgufValueType::String => GgufValue::String(self.string(what)?),
            GgufValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    bail!(
                        "{} nests arrays deeper than {MAX_ARRAY_DEPTH} levels",
                        what()
                    );
                }
                let elem_id = self.u32(&|| format!("element type of {}", what()))?;
                let elem_ty = GgufValueType::from_id(elem_id).ok_or_else(|| {
                    anyhow!("{} has unknown array element type {elem_id}", what())
                })?;
                let at = self.pos;
                let count = self.u64(&|| format!("element count of {}", what()))?;
                // Every element takes at least min_encoded_size bytes, so a count the
                // rest of the file cannot hold is rejected before allocating.
                let fits = usize::try_from(count)
                    .ok()
                    .and_then(|c| c.checked_mul(elem_ty.min_encoded_size()))
                    .is_some_and(|need| need <= self.remaining());
                if !fits {
                    bail!(
                        "{} claims {count} array elements at offset {at}, more than the {} bytes left in the file can hold",
                        what(),
                        self.remaining()
                    );
                }
                let count = count as usize;
                let mut items = Vec::with_capacity(count);
                for i in 0..count {
                    items.push(self.value(elem_ty, depth + 1, &|| format!("{}[{i}]", what()))?);
                }
                GgufValue::Array(elem_ty, items)
            }
        })
    }
}

impl<'a> GgufFile<'a> {
    /// Parses and validates a whole GGUF v2/v3 file held in memory.
    pub fn parse(bytes: &'a [u8]) -> Result<GgufFile<'a>> {
        let mut r = Reader { bytes, pos: 0 };
        let magic: [u8; 4] = r.array(&|| "magic".to_string()).map_err(|_| {
            anyhow!(
                "not a GGUF file: only {} bytes, too short for the magic",
                bytes.len()
            )
        })?;
        if magic != GGUF_MAGIC {
            bail!(
                "not a GGUF file: bad magic {:02x?} (\"{}\"), expected \"GGUF\"",
                magic,
                String::from_utf8_lossy(&magic).escape_debug()
            );
        }
        let version = r.u32(&|| "version".to_string())?;
        match version {
            2 | 3 => {}
            1 => bail!("GGUF version 1 is not supported (only v2 and v3); re-convert the model with a current llama.cpp"),
            // A byte-swapped small number means a big-endian file.
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
                bail!("big-endian GGUF files are not supported (version field reads {v:#x})")
            }
            v => bail!("unsupported GGUF version {v} (only v2 and v3 are supported)"),
        }
        let n_tensors = r.u64(&|| "tensor count".to_string())?;
        let n_kv = r.u64(&|| "metadata count".to_string())?;

        // Each metadata entry needs >= 8 (key length) + 4 (type) + 1 bytes, each tensor
        // info >= 8 + 4 + 4 + 8: counts that cannot fit are rejected before allocating.
        let bound = |count: u64, min: usize, what: &str, r: &Reader| -> Result<usize> {
            usize::try_from(count)
                .ok()
                .filter(|c| c.checked_mul(min).is_some_and(|n| n <= r.remaining()))
                .ok_or_else(|| {
                    anyhow!(
                        "GGUF header claims {count} {what}, more than the {} bytes left in the file can hold",
                        r.remaining()
                    )
                })
        };
        let n_kv = bound(n_kv, 13, "metadata entries", &r)?;
        let n_tensors = bound(n_tensors, 24, "tensors", &r)?;

        let mut metadata = Vec::with_capacity(n_kv);
        let mut metadata_index = HashMap::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = r
                .string(&|| format!("key of metadata entry {i}"))?
                .into_owned();
            let ty_id = r.u32(&|| format!("type of metadata '{key}'"))?;
            let ty = GgufValueType::from_id(ty_id)
                .ok_or_else(|| anyhow!("metadata '{key}' has unknown value type {ty_id}"))?;
            let value = r.value(ty, 0, &|| format!("metadata '{key}'"))?;
            if metadata_index.insert(key.clone(), metadata.len()).is_some() {
                bail!("duplicate metadata key '{key}'");
            }
            metadata.push((key, value));
        }

        let alignment = match metadata_index.get("general.alignment") {
            None => GGUF_DEFAULT_ALIGNMENT,
            Some(&i) => {
                let v = &metadata[i].1;
                match v.as_u64() {
                    Some(a) if a > 0 && a.is_power_of_two() => a,
                    _ => bail!("metadata 'general.alignment' is {v:?}, expected a power of two"),
                }
            }
        };

        let mut tensors = Vec::with_capacity(n_tensors);
        let mut tensor_index = HashMap::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = r.string(&|| format!("name of tensor {i}"))?.into_owned();
            let n_dims = r.u32(&|| format!("dimension count of tensor '{name}'"))?;
            if n_dims > MAX_DIMS {
                bail!("tensor '{name}' has {n_dims} dimensions, ggml allows at most {MAX_DIMS}");
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                dims.push(r.u64(&|| format!("dimension {d} of tensor '{name}'"))?);
            }
            let ty_id = r.u32(&|| format!("type of tensor '{name}'"))?;
            let ggml_type = GgmlType::from_id(ty_id).ok_or_else(|| {
                anyhow!("tensor '{name}' has unknown or unsupported ggml type id {ty_id}")
            })?;
            let offset = r.u64(&|| format!("data offset of tensor '{name}'"))?;

            let n_elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| usize::try_from(n).is_ok())
                .ok_or_else(|| {
                    anyhow!("tensor '{name}' dimensions {dims:?} overflow the element count")
                })?;
            let block = ggml_type.block_size() as u64;
            let ne0 = dims.first().copied().unwrap_or(1);
            if !ne0.is_multiple_of(block) {
                bail!(
                    "tensor '{name}' of type {ggml_type} has row length {ne0}, not a multiple of its block size {block}"
                );
            }
            let n_bytes = (n_elements / block)
                .checked_mul(ggml_type.type_size() as u64)
                .ok_or_else(|| anyhow!("tensor '{name}' byte size overflows"))?;
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                bail!("duplicate tensor name '{name}'");
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                n_elements,
                n_bytes,
            });
        }

        let data_offset = (r.pos as u64)
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| anyhow!("GGUF data section offset overflows"))?;
        let file = GgufFile {
            bytes,
            version,
            metadata,
            metadata_index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        };
        for t in &file.tensors {
            file.tensor_range(t)?;
        }
        Ok(file)
    }

    /// Absolute byte range of a tensor's data, checked against the file.
    fn tensor_range(&self, t: &GgufTensorInfo) -> Result<std::ops::Range<usize>> {
        let len = self.bytes.len() as u64;
        let start = self.data_offset.checked_add(t.offset).filter(|&s| s <= len);
        let Some(start) = start else {
            bail!(
                "tensor '{}' data offset {} (absolute {}) is beyond the end of the file ({} bytes)",
                t.name,
                t.offset,
                self.data_offset as u128 + t.offset as u128,
                len
            );
        };
        let end = start.checked_add(t.n_bytes).filter(|&e| e <= len);
        let Some(end) = end else {
            bail!(
                "tensor '{}' data is truncated: needs {} bytes at offset {}, file has {} bytes",
                t.name,
                t.n_bytes,
                start,
                len
            );
        };
        Ok(start as usize..end as usize)
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata entries in file order.
    pub fn metadata_entries(&self) -> &[(String, GgufValue<'a>)] {
        &self.metadata
    }

    pub fn metadata(&self, key: &str) -> Option<&GgufValue<'a>> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn get_u32(&self, key: &str) -> Option<u32> {
        self.metadata(key)?.as_u32()
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.metadata(key)?.as_u64()
    }

    pub fn get_usize(&self, key: &str) -> Option<usize> {
        usize::try_from(self.get_u64(key)?).ok()
    }

    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.metadata(key)?.as_i64()
    }

    /// A float or integer value as f32.
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get_f64(key).map(|v| v as f32)
    }

    /// A float or integer value as f64.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.metadata(key)?.as_f64()
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.metadata(key)?.as_bool()
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.metadata(key)?.as_str()
    }

    pub fn get_array(&self, key: &str) -> Option<&[GgufValue<'a>]> {
        self.metadata(key)?.as_array()
    }

    /// `general.architecture` (e.g. "llama").
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw (still quantized) bytes of a tensor.
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> Result<&'a [u8]> {
        let range = self.tensor_range(info)?;
        Ok(&self.bytes[range])
    }

    /// The tensor dequantized to f32, in ggml element order (ne0 fastest), which is
    /// the row-major order of [`GgufTensorInfo::hf_shape`].
    pub fn tensor_f32(&self, info: &GgufTensorInfo) -> Result<Vec<f32>> {
        let bytes = self.tensor_bytes(info)?;
        dequantize(info.ggml_type, bytes, info.n_elements as usize)
            .map_err(|e| anyhow!("tensor '{}': {e:#}", info.name))
    }
}
