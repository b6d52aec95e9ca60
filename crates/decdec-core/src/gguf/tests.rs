//! Tests of GGUF parsing, dequantization and the Hugging Face mapping.
//!
//! Dequantization is checked against references built from the *quantizer* side
//! of ggml's layouts (how `quantize_row_*_ref` packs logical scales and quants
//! into bytes): random logical contents are packed, and the dequantized values
//! must equal the textbook formula (`d * scale * q - dmin * min`) computed from
//! the logical contents, bit for bit.

use super::*;
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------------------
// A tiny test-only GGUF writer.
// ---------------------------------------------------------------------------

struct TestTensor {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    data: Vec<u8>,
}

struct TestGguf {
    version: u32,
    kvs: Vec<(String, GgufValue<'static>)>,
    tensors: Vec<TestTensor>,
    alignment: usize,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(*x as u8),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(ty, items) => {
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                put_value(out, it);
            }
        }
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

impl TestGguf {
    fn new() -> Self {
        TestGguf {
            version: 3,
            kvs: Vec::new(),
            tensors: Vec::new(),
            alignment: 32,
        }
    }

    fn kv(mut self, key: &str, v: GgufValue<'static>) -> Self {
        self.kvs.push((key.to_string(), v));
        self
    }

    fn tensor(mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> Self {
        self.tensors.push(TestTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            type_id: ty.id(),
            data,
        });
        self
    }

    fn f32_tensor(self, name: &str, dims: &[u64], values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, dims, GgmlType::F32, data)
    }

    /// Serializes the file; tensor data is laid out in order, each aligned, and
    /// the file ends exactly where the last tensor's data ends. Also returns the
    /// absolute offset of the data section.
    fn build(&self) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        for (k, v) in &self.kvs {
            put_str(&mut out, k);
            out.extend_from_slice(&v.value_type().id().to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0usize;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            offset = offset.next_multiple_of(self.alignment);
            offsets.push(offset);
            offset += t.data.len();
        }
        for (t, off) in self.tensors.iter().zip(&offsets) {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.type_id.to_le_bytes());
            out.extend_from_slice(&(*off as u64).to_le_bytes());
        }
        let data_start = out.len().next_multiple_of(self.alignment);
        out.resize(data_start, 0);
        for (t, off) in self.tensors.iter().zip(&offsets) {
            out.resize(data_start + off, 0);
            out.extend_from_slice(&t.data);
        }
        (out, data_start)
    }
}

fn s(x: &str) -> GgufValue<'static> {
    GgufValue::String(Cow::Owned(x.to_string()))
}

fn err_of(bytes: &[u8]) -> String {
    match GgufFile::parse(bytes) {
        Ok(_) => panic!("parse unexpectedly succeeded"),
        Err(e) => format!("{e:#}"),
    }
}

fn small_file() -> TestGguf {
    let q: Vec<f32> = (0..64).map(|i| i as f32 * 0.5 - 3.0).collect();
    TestGguf::new()
        .kv("general.architecture", s("llama"))
        .kv("general.name", s("tiny"))
        .f32_tensor("blk.0.attn_q.weight", &[8, 8], &q)
        .f32_tensor("output_norm.weight", &[8], &[1.0; 8])
}

// ---------------------------------------------------------------------------
// Parsing.
// ---------------------------------------------------------------------------

#[test]
fn gguf_parses_all_metadata_types_and_tensors() {
    let nested = GgufValue::Array(
        GgufValueType::Array,
        vec![
            GgufValue::Array(
                GgufValueType::I16,
                vec![GgufValue::I16(-3), GgufValue::I16(7)],
            ),
            GgufValue::Array(GgufValueType::String, vec![s("a"), s("bc")]),
        ],
    );
    let kvs: Vec<(&str, GgufValue<'static>)> = vec![
        ("u8", GgufValue::U8(200)),
        ("i8", GgufValue::I8(-100)),
        ("u16", GgufValue::U16(60000)),
        ("i16", GgufValue::I16(-30000)),
        ("u32", GgufValue::U32(4_000_000_000)),
        ("i32", GgufValue::I32(-2_000_000_000)),
        ("f32", GgufValue::F32(1.5e-5)),
        ("bool", GgufValue::Bool(true)),
        ("str", s("héllo")),
        ("u64", GgufValue::U64(u64::MAX)),
        ("i64", GgufValue::I64(i64::MIN)),
        ("f64", GgufValue::F64(-2.25)),
        ("nested", nested.clone()),
        ("empty", GgufValue::Array(GgufValueType::U32, vec![])),
        ("general.alignment", GgufValue::U32(64)),
    ];
    for version in [2, 3] {
        let mut w = TestGguf::new();
        w.version = version;
        w.alignment = 64;
        for (k, v) in &kvs {
            w = w.kv(k, v.clone());
        }
        let vals: Vec<f32> = (0..12).map(|i| i as f32).collect();
        w = w
            .f32_tensor("a", &[4, 3], &vals)
            .f32_tensor("b", &[2], &[5.0, 6.0]);
        let (bytes, data_start) = w.build();
        let f = GgufFile::parse(&bytes).unwrap();
        assert_eq!(f.version(), version);
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.data_offset() as usize, data_start);
        assert_eq!(data_start % 64, 0);
        assert_eq!(f.metadata_entries().len(), kvs.len());
        for (k, v) in &kvs {
            assert_eq!(f.metadata(k), Some(v), "key {k}");
        }
        assert_eq!(f.get_u32("u8"), Some(200));
        assert_eq!(f.get_i64("i8"), Some(-100));
        assert_eq!(f.get_u32("i8"), None, "negative value is not a u32");
        assert_eq!(f.get_u32("u32"), Some(4_000_000_000));
        assert_eq!(f.get_u32("u64"), None, "u64::MAX does not fit a u32");
        assert_eq!(f.get_u64("u64"), Some(u64::MAX));
        assert_eq!(f.get_i64("i64"), Some(i64::MIN));
        assert_eq!(f.get_f32("f32"), Some(1.5e-5));
        assert_eq!(f.get_f64("f64"), Some(-2.25));
        assert_eq!(f.get_f64("u16"), Some(60000.0), "integers read as floats");
        assert_eq!(f.get_bool("bool"), Some(true));
        assert_eq!(f.get_str("str"), Some("héllo"));
        assert_eq!(f.get_str("u8"), None);
        assert_eq!(f.get_array("nested").unwrap().len(), 2);
        assert_eq!(
            f.get_array("nested").unwrap()[1].as_array().unwrap()[1].as_str(),
            Some("bc")
        );
        assert_eq!(f.get_array("empty"), Some(&[][..]));
        assert!(f.metadata("missing").is_none());

        assert_eq!(f.tensors().len(), 2);
        let a = f.tensor("a").unwrap();
        assert_eq!(a.dims, vec![4, 3]);
        assert_eq!(a.hf_shape(), vec![3, 4]);
        assert_eq!(a.ggml_type, GgmlType::F32);
        assert_eq!(a.n_elements, 12);
        assert_eq!(a.n_bytes, 48);
        assert_eq!(f.tensor_f32(a).unwrap(), vals);
        let b = f.tensor("b").unwrap();
        assert_eq!(b.offset % 64, 0);
        assert_eq!(f.tensor_f32(b).unwrap(), vec![5.0, 6.0]);
        assert_eq!(
            f.tensor_bytes(b).unwrap(),
            &bytes[data_start + b.offset as usize..]
        );
        assert!(f.tensor("c").is_none());
    }
}

#[test]
fn gguf_default_alignment_is_32_and_empty_file_parses() {
    let (bytes, start) = small_file().build();
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!(f.alignment(), 32);
    assert_eq!(start % 32, 0);
    assert_eq!(f.data_offset() as usize, start);
    assert_eq!(f.architecture(), Some("llama"));

    let (bytes, _) = TestGguf::new().build();
    let f = GgufFile::parse(&bytes).unwrap();
    assert!(f.tensors().is_empty() && f.metadata_entries().is_empty());
}

#[test]
fn gguf_rejects_bad_magic_and_versions() {
    let (good, _) = small_file().build();
    let mut b = good.clone();
    b[0..4].copy_from_slice(b"GGML");
    let e = err_of(&b);
    assert!(e.contains("not a GGUF file: bad magic"), "{e}");
    assert!(err_of(b"GG").contains("not a GGUF file"));
    assert!(err_of(b"").contains("not a GGUF file"));

    let mut b = good.clone();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    let e = err_of(&b);
    assert!(e.contains("version 1 is not supported"), "{e}");

    let mut b = good.clone();
    b[4..8].copy_from_slice(&4u32.to_le_bytes());
    assert!(err_of(&b).contains("unsupported GGUF version 4"));

    let mut b = good;
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(err_of(&b).contains("big-endian"));
}

#[test]
fn gguf_every_truncation_is_an_error() {
    let (good, data_start) = small_file().build();
    GgufFile::parse(&good).unwrap();
    for len in 0..good.len() {
        let e = err_of(&good[..len]);
        if len >= 8 && len < data_start - 31 {
            // Inside the header (before the alignment padding) it is a header error.
            assert!(
                e.contains("truncated GGUF header") || e.contains("more than the"),
                "len {len}: {e}"
            );
        }
        if len >= data_start {
            assert!(e.contains("data is truncated"), "len {len}: {e}");
            // Tensors are checked in file order: the first one that does not fit is named.
            let first = if len < data_start + 256 {
                "blk.0.attn_q.weight"
            } else {
                "output_norm.weight"
            };
            assert!(e.contains(first), "len {len}: {e}");
        }
    }
}

#[test]
fn gguf_truncated_tensor_data_names_the_tensor() {
    let (good, data_start) = small_file().build();
    // Cut into the first tensor: the second one is beyond the end, the first truncated.
    let cut = &good[..data_start + 100];
    let e = err_of(cut);
    assert!(
        e.contains("tensor 'blk.0.attn_q.weight' data is truncated: needs 256 bytes at offset"),
        "{e}"
    );
    assert!(
        e.contains(&format!("file has {} bytes", data_start + 100)),
        "{e}"
    );
}

/// Byte position of the offset field of tensor `index` in a file from [`small_file`].
fn tensor_offset_field(bytes: &[u8], name: &str) -> usize {
    let pat: Vec<u8> = {
        let mut p = (name.len() as u64).to_le_bytes().to_vec();
        p.extend_from_slice(name.as_bytes());
        p
    };
    let at = bytes.windows(pat.len()).position(|w| w == pat).unwrap();
    let n_dims = u32::from_le_bytes(
        bytes[at + pat.len()..at + pat.len() + 4]
            .try_into()
            .unwrap(),
    );
    at + pat.len() + 4 + 8 * n_dims as usize + 4
}

#[test]
fn gguf_offset_beyond_end_names_the_tensor() {
    let (mut b, _) = small_file().build();
    let off = tensor_offset_field(&b, "output_norm.weight");
    for bad in [1u64 << 40, u64::MAX, u64::MAX - 10] {
        b[off..off + 8].copy_from_slice(&bad.to_le_bytes());
        let e = err_of(&b);
        assert!(e.contains("tensor 'output_norm.weight' data offset"), "{e}");
        assert!(e.contains("beyond the end of the file"), "{e}");
    }
    // An offset inside the file whose data runs past the end.
    let len = b.len() as u64;
    let (_, data_start) = small_file().build();
    b[off..off + 8].copy_from_slice(&(len - data_start as u64 - 4).to_le_bytes());
    let e = err_of(&b);
    assert!(
        e.contains("tensor 'output_norm.weight' data is truncated: needs 32 bytes"),
        "{e}"
    );
}

#[test]
fn gguf_absurd_lengths_and_counts_are_errors() {
    let (good, _) = small_file().build();
    // The first metadata key length sits right after the 24-byte header.
    for bad in [u64::MAX, 1 << 62, good.len() as u64] {
        let mut b = good.clone();
        b[24..32].copy_from_slice(&bad.to_le_bytes());
        let e = err_of(&b);
        assert!(
            e.contains("key of metadata entry 0 has string length"),
            "{e}"
        );
    }
    // The value of general.architecture: u64 length after key + type.
    let key_end = 24 + 8 + "general.architecture".len();
    let mut b = good.clone();
    b[key_end + 4..key_end + 12].copy_from_slice(&(1u64 << 50).to_le_bytes());
    let e = err_of(&b);
    assert!(
        e.contains("metadata 'general.architecture' has string length"),
        "{e}"
    );

    // Tensor and metadata counts.
    let mut b = good.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err_of(&b).contains("tensors, more than the"));
    let mut b = good.clone();
    b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(err_of(&b).contains("metadata entries, more than the"));

    // A tensor name length.
    let name_at = good
        .windows(19)
        .position(|w| w == b"blk.0.attn_q.weight")
        .unwrap()
        - 8;
    let mut b = good;
    b[name_at..name_at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(err_of(&b).contains("name of tensor 0 has string length"));
}

#[test]
fn gguf_absurd_array_count_and_deep_nesting_are_errors() {
    let (b, _) = TestGguf::new()
        .kv(
            "tokenizer.ggml.tokens",
            GgufValue::Array(GgufValueType::String, vec![s("x")]),
        )
        .build();
    let count_at = 24 + 8 + "tokenizer.ggml.tokens".len() + 4 + 4;
    let mut bad = b.clone();
    bad[count_at..count_at + 8].copy_from_slice(&(1u64 << 61).to_le_bytes());
    let e = err_of(&bad);
    assert!(e.contains("metadata 'tokenizer.ggml.tokens' claims"), "{e}");

    let mut v = GgufValue::Array(GgufValueType::U8, vec![GgufValue::U8(1)]);
    for _ in 0..40 {
        v = GgufValue::Array(GgufValueType::Array, vec![v]);
    }
    let (b, _) = TestGguf::new().kv("deep", v).build();
    assert!(err_of(&b).contains("nests arrays deeper"));
}

#[test]
fn gguf_unknown_types_and_bad_shapes_name_the_tensor() {
    let mut w = small_file();
    w.tensors[0].type_id = 4; // Q4_2, removed from ggml
    let (b, _) = w.build();
    let e = err_of(&b);
    assert!(
        e.contains("tensor 'blk.0.attn_q.weight' has unknown or unsupported ggml type id 4"),
        "{e}"
    );

    let mut w = small_file();
    w.tensors[1].type_id = 1000;
    let e = err_of(&w.build().0);
    assert!(
        e.contains("'output_norm.weight'") && e.contains("1000"),
        "{e}"
    );

    // Row length not a multiple of the block size.
    let w = TestGguf::new().tensor("bad", &[16, 2], GgmlType::Q8_0, vec![0; 68]);
    let e = err_of(&w.build().0);
    assert!(
        e.contains("tensor 'bad' of type Q8_0 has row length 16"),
        "{e}"
    );

    // Too many dims, overflowing dims.
    let mut w = small_file();
    w.tensors[1].dims = vec![1, 1, 1, 1, 8];
    assert!(err_of(&w.build().0).contains("'output_norm.weight' has 5 dimensions"));
    let mut w = small_file();
    w.tensors[1].dims = vec![1 << 40, 1 << 40];
    assert!(err_of(&w.build().0).contains("overflow"));

    // Unknown metadata value type, bad bool, bad alignment, duplicates.
    let (mut b, _) = TestGguf::new().kv("k", GgufValue::U8(1)).build();
    b[24 + 8 + 1..24 + 8 + 5].copy_from_slice(&13u32.to_le_bytes());
    assert!(err_of(&b).contains("metadata 'k' has unknown value type 13"));
    let (mut b, _) = TestGguf::new().kv("k", GgufValue::Bool(true)).build();
    // header 24 + key (8 + 1) + type 4
    assert_eq!(b[37], 1);
    b[37] = 2;
    assert!(err_of(&b).contains("metadata 'k' is a bool stored as 2"));
    let b = TestGguf::new()
        .kv("general.alignment", GgufValue::U32(24))
        .build()
        .0;
    assert!(err_of(&b).contains("general.alignment"));
    let b = TestGguf::new()
        .kv("a", GgufValue::U8(1))
        .kv("a", GgufValue::U8(2))
        .build()
        .0;
    assert!(err_of(&b).contains("duplicate metadata key 'a'"));
    let w = TestGguf::new()
        .f32_tensor("t", &[1], &[1.0])
        .f32_tensor("t", &[1], &[2.0]);
    assert!(err_of(&w.build().0).contains("duplicate tensor name 't'"));
}

#[test]
fn gguf_known_but_undequantizable_type_errors_by_name() {
    // IQ4_NL parses (geometry known) but cannot be dequantized.
    let w = TestGguf::new().tensor("blk.3.ffn_up.weight", &[32], GgmlType::Iq4Nl, vec![0; 18]);
    let (b, _) = w.build();
    let f = GgufFile::parse(&b).unwrap();
    let t = f.tensor("blk.3.ffn_up.weight").unwrap();
    assert_eq!(f.tensor_bytes(t).unwrap().len(), 18);
    let e = format!("{:#}", f.tensor_f32(t).unwrap_err());
    assert!(
        e.contains("blk.3.ffn_up.weight") && e.contains("IQ4_NL"),
        "{e}"
    );
}

#[test]
fn gguf_random_corruption_never_panics() {
    let (good, _) = TestGguf::new()
        .kv("general.architecture", s("llama"))
        .kv(
            "arr",
            GgufValue::Array(GgufValueType::F32, vec![GgufValue::F32(1.0); 3]),
        )
        .tensor("q", &[256], GgmlType::Q4K, vec![7; 144])
        .tensor("p", &[32, 2], GgmlType::Q5_0, vec![9; 44])
        .f32_tensor("f", &[3], &[1.0, 2.0, 3.0])
        .build();
    GgufFile::parse(&good).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut ok = 0;
    for _ in 0..3000 {
        let mut b = good.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..b.len());
            b[i] = rng.random();
        }
        if rng.random_bool(0.2) {
            let cut = rng.random_range(0..b.len());
            b.truncate(cut);
        }
        if let Ok(f) = GgufFile::parse(&b) {
            ok += 1;
            for t in f.tensors() {
                let _ = f.tensor_f32(t);
            }
        }
    }
    // Most single-byte flips land in tensor data and leave a valid file.
    assert!(ok > 100, "{ok}");
}

// ---------------------------------------------------------------------------
// Dequantization: references packed the way ggml's quantizers pack.
// ---------------------------------------------------------------------------

fn rand_half(rng: &mut StdRng, scale: f32) -> (f32, [u8; 2]) {
    let h = f16::from_f32(rng.random_range(-scale..scale));
    (h.to_f32(), h.to_le_bytes())
}

/// Builds `n_blocks` blocks with `make` (returns block bytes and the expected
/// values), dequantizes them as one tensor and compares bit for bit.
fn check_blocks(
    ty: GgmlType,
    n_blocks: usize,
    seed: u64,
    mut make: impl FnMut(&mut StdRng) -> (Vec<u8>, Vec<f32>),
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..n_blocks {
        let (b, e) = make(&mut rng);
        assert_eq!(b.len(), ty.type_size());
        assert_eq!(e.len(), ty.block_size());
        bytes.extend(b);
        expected.extend(e);
    }
    let got = dequantize(ty, &bytes, expected.len()).unwrap();
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            g.to_bits(),
            e.to_bits(),
            "{ty} element {i}: got {g}, expected {e}"
        );
    }
}

/// Block counts: one small tensor (sequential path) and one past the parallel threshold.
fn block_counts(ty: GgmlType) -> [usize; 2] {
    [3, (1 << 17) / ty.block_size() + 5]
}

#[test]
fn gguf_dequant_q4_0_and_q4_1() {
    for n in block_counts(GgmlType::Q4_0) {
        check_blocks(GgmlType::Q4_0, n, 1, |rng| {
            let (d, db) = rand_half(rng, 0.1);
            let l: Vec<u8> = (0..32).map(|_| rng.random_range(0..16)).collect();
            let mut b = db.to_vec();
            b.extend((0..16).map(|j| l[j] | (l[j + 16] << 4)));
            (b, l.iter().map(|&q| (q as i32 - 8) as f32 * d).collect())
        });
        check_blocks(GgmlType::Q4_1, n, 2, |rng| {
            let (d, db) = rand_half(rng, 0.1);
            let (m, mb) = rand_half(rng, 1.0);
            let l: Vec<u8> = (0..32).map(|_| rng.random_range(0..16)).collect();
            let mut b = [db, mb].concat();
            b.extend((0..16).map(|j| l[j] | (l[j + 16] << 4)));
            (b, l.iter().map(|&q| q as f32 * d + m).collect())
        });
    }
}

/// Q5 packing as `quantize_row_q5_*_ref`: nibbles like Q4, bit 4 of element e in bit e of qh.
fn pack_q5(l: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut qh = 0u32;
    for (e, &q) in l.iter().enumerate() {
        qh |= (((q & 0x10) >> 4) as u32) << e;
    }
    let qs = (0..16)
        .map(|j| (l[j] & 0x0f) | ((l[j + 16] & 0x0f) << 4))
        .collect();
    (qh.to_le_bytes().to_vec(), qs)
}

#[test]
fn gguf_dequant_q5_0_and_q5_1() {
    for n in block_counts(GgmlType::Q5_0) {
        check_blocks(GgmlType::Q5_0, n, 3, |rng| {
            let (d, db) = rand_half(rng, 0.1);
            let l: Vec<u8> = (0..32).map(|_| rng.random_range(0..32)).collect();
            let (qh, qs) = pack_q5(&l);
            let b = [db.to_vec(), qh, qs].concat();
            (b, l.iter().map(|&q| (q as i32 - 16) as f32 * d).collect())
        });
        check_blocks(GgmlType::Q5_1, n, 4, |rng| {
            let (d, db) = rand_half(rng, 0.1);
            let (m, mb) = rand_half(rng, 1.0);
            let l: Vec<u8> = (0..32).map(|_| rng.random_range(0..32)).collect();
            let (qh, qs) = pack_q5(&l);
            let b = [db.to_vec(), mb.to_vec(), qh, qs].concat();
            (b, l.iter().map(|&q| q as f32 * d + m).collect())
        });
    }
}

#[test]
fn gguf_dequant_q8_0_and_q8_1() {
    for n in block_counts(GgmlType::Q8_0) {
        check_blocks(GgmlType::Q8_0, n, 5, |rng| {
            let (d, db) = rand_half(rng, 0.1);
            let q: Vec<i8> = (0..32).map(|_| rng.random()).collect();
            let mut b = db.to_vec();
            b.extend(q.iter().map(|&x| x as u8));
            (b, q.iter().map(|&x| x as f32 * d).collect())
        });
        check_blocks(GgmlType::Q8_1, n, 6, |rng| {
            let (d, db) = rand_half(rng, 0.1);
            let q: Vec<i8> = (0..32).map(|_| rng.random()).collect();
            let sum: i32 = q.iter().map(|&x| x as i32).sum();
            let sb = f16::from_f32(d * sum as f32).to_le_bytes();
            let mut b = [db, sb].concat();
            b.extend(q.iter().map(|&x| x as u8));
            (b, q.iter().map(|&x| x as f32 * d).collect())
        });
    }
}

#[test]
fn gguf_dequant_q2_k() {
    for n in block_counts(GgmlType::Q2K) {
        check_blocks(GgmlType::Q2K, n, 7, |rng| {
            let (d, db) = rand_half(rng, 0.05);
            let (dmin, mb) = rand_half(rng, 0.05);
            let ls: Vec<u8> = (0..16).map(|_| rng.random_range(0..16)).collect();
            let lm: Vec<u8> = (0..16).map(|_| rng.random_range(0..16)).collect();
            let l: Vec<u8> = (0..256).map(|_| rng.random_range(0..4)).collect();
            let mut b: Vec<u8> = (0..16).map(|j| ls[j] | (lm[j] << 4)).collect();
            for j in (0..256).step_by(128) {
                for i in 0..32 {
                    b.push(
                        l[j + i]
                            | (l[j + i + 32] << 2)
                            | (l[j + i + 64] << 4)
                            | (l[j + i + 96] << 6),
                    );
                }
            }
            b.extend(db);
            b.extend(mb);
            let e = (0..256)
                .map(|i| {
                    let s = i / 16;
                    d * ls[s] as f32 * l[i] as f32 - dmin * lm[s] as f32
                })
                .collect();
            (b, e)
        });
    }
}

#[test]
fn gguf_dequant_q3_k() {
    for n in block_counts(GgmlType::Q3K) {
        check_blocks(GgmlType::Q3K, n, 8, |rng| {
            let (d, db) = rand_half(rng, 0.05);
            // 6-bit scales stored with +32 offset, 3-bit quants stored with +4.
            let ls: Vec<u8> = (0..16).map(|_| rng.random_range(0..64)).collect();
            let l: Vec<u8> = (0..256).map(|_| rng.random_range(0..8)).collect();
            let mut hmask = [0u8; 32];
            let mut low = l.clone();
            for j in 0..256 {
                if low[j] > 3 {
                    hmask[j % 32] |= 1 << (j / 32);
                    low[j] -= 4;
                }
            }
            let mut qs = Vec::new();
            for j in (0..256).step_by(128) {
                for i in 0..32 {
                    qs.push(
                        low[j + i]
                            | (low[j + i + 32] << 2)
                            | (low[j + i + 64] << 4)
                            | (low[j + i + 96] << 6),
                    );
                }
            }
            let mut sc = [0u8; 12];
            for (j, &v) in ls.iter().enumerate() {
                if j < 8 {
                    sc[j] = v & 0x0f;
                } else {
                    sc[j - 8] |= (v & 0x0f) << 4;
                }
                sc[j % 4 + 8] |= (v >> 4) << (2 * (j / 4));
            }
            let b = [hmask.to_vec(), qs, sc.to_vec(), db.to_vec()].concat();
            let e = (0..256)
                .map(|i| d * (ls[i / 16] as i32 - 32) as f32 * (l[i] as i32 - 4) as f32)
                .collect();
            (b, e)
        });
    }
}

/// The 12-byte 6-bit scale/min packing of `quantize_row_q4_K_ref`.
fn pack_scales_k4(ls: &[u8], lm: &[u8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

#[test]
fn gguf_dequant_q4_k() {
    for n in block_counts(GgmlType::Q4K) {
        check_blocks(GgmlType::Q4K, n, 9, |rng| {
            let (d, db) = rand_half(rng, 0.01);
            let (dmin, mb) = rand_half(rng, 0.01);
            let ls: Vec<u8> = (0..8).map(|_| rng.random_range(0..64)).collect();
            let lm: Vec<u8> = (0..8).map(|_| rng.random_range(0..64)).collect();
            let l: Vec<u8> = (0..256).map(|_| rng.random_range(0..16)).collect();
            let mut b = [db, mb].concat();
            b.extend(pack_scales_k4(&ls, &lm));
            for j in (0..256).step_by(64) {
                for i in 0..32 {
                    b.push(l[j + i] | (l[j + i + 32] << 4));
                }
            }
            let e = (0..256)
                .map(|i| d * ls[i / 32] as f32 * l[i] as f32 - dmin * lm[i / 32] as f32)
                .collect();
            (b, e)
        });
    }
}

#[test]
fn gguf_dequant_q5_k() {
    for n in block_counts(GgmlType::Q5K) {
        check_blocks(GgmlType::Q5K, n, 10, |rng| {
            let (d, db) = rand_half(rng, 0.01);
            let (dmin, mb) = rand_half(rng, 0.01);
            let ls: Vec<u8> = (0..8).map(|_| rng.random_range(0..64)).collect();
            let lm: Vec<u8> = (0..8).map(|_| rng.random_range(0..64)).collect();
            let l: Vec<u8> = (0..256).map(|_| rng.random_range(0..32)).collect();
            let mut qh = [0u8; 32];
            let mut ql = Vec::new();
            let (mut m1, mut m2) = (1u8, 2u8);
            for n in (0..256).step_by(64) {
                for j in 0..32 {
                    let mut l1 = l[n + j];
                    if l1 > 15 {
                        l1 -= 16;
                        qh[j] |= m1;
                    }
                    let mut l2 = l[n + j + 32];
                    if l2 > 15 {
                        l2 -= 16;
                        qh[j] |= m2;
                    }
                    ql.push(l1 | (l2 << 4));
                }
                m1 = m1.wrapping_shl(2);
                m2 = m2.wrapping_shl(2);
            }
            let b = [
                db.to_vec(),
                mb.to_vec(),
                pack_scales_k4(&ls, &lm).to_vec(),
                qh.to_vec(),
                ql,
            ]
            .concat();
            let e = (0..256)
                .map(|i| d * ls[i / 32] as f32 * l[i] as f32 - dmin * lm[i / 32] as f32)
                .collect();
            (b, e)
        });
    }
}

#[test]
fn gguf_dequant_q6_k() {
    for n in block_counts(GgmlType::Q6K) {
        check_blocks(GgmlType::Q6K, n, 11, |rng| {
            let (d, db) = rand_half(rng, 0.01);
            let sc: Vec<i8> = (0..16).map(|_| rng.random()).collect();
            let l: Vec<u8> = (0..256).map(|_| rng.random_range(0..64)).collect();
            let mut ql = vec![0u8; 128];
            let mut qh = vec![0u8; 64];
            for (half, j) in (0..256).step_by(128).enumerate() {
                for i in 0..32 {
                    let (q1, q2, q3, q4) = (l[j + i], l[j + i + 32], l[j + i + 64], l[j + i + 96]);
                    ql[half * 64 + i] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
                    ql[half * 64 + i + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
                    qh[half * 32 + i] =
                        (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
                }
            }
            let b = [ql, qh, sc.iter().map(|&x| x as u8).collect(), db.to_vec()].concat();
            let e = (0..256)
                .map(|i| d * sc[i / 16] as f32 * (l[i] as i32 - 32) as f32)
                .collect();
            (b, e)
        });
    }
}

#[test]
fn gguf_dequant_float_and_int_types() {
    let mut rng = StdRng::seed_from_u64(12);
    let x: Vec<f32> = (0..100_000)
        .map(|_| rng.random_range(-70000.0..70000.0))
        .collect();
    let f32b: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(dequantize(GgmlType::F32, &f32b, x.len()).unwrap(), x);

    // F16 / BF16 round trips: relative error within half an ulp of the format.
    let small: Vec<f32> = x.iter().map(|v| v / 4.0).collect();
    let hb: Vec<u8> = small
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect();
    let got = dequantize(GgmlType::F16, &hb, small.len()).unwrap();
    for (g, v) in got.iter().zip(&small) {
        assert!(
            (g - v).abs() <= v.abs() * 2f32.powi(-11) + 1e-7,
            "{g} vs {v}"
        );
    }
    let bb: Vec<u8> = x
        .iter()
        .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
        .collect();
    let got = dequantize(GgmlType::Bf16, &bb, x.len()).unwrap();
    for (g, v) in got.iter().zip(&x) {
        assert!((g - v).abs() <= v.abs() * 2f32.powi(-8), "{g} vs {v}");
    }

    let i8s: Vec<u8> = (0..=255).collect();
    let got = dequantize(GgmlType::I8, &i8s, 256).unwrap();
    assert_eq!(got[1], 1.0);
    assert_eq!(got[255], -1.0);
    let i32b: Vec<u8> = [-5i32, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(
        dequantize(GgmlType::I32, &i32b, 2).unwrap(),
        vec![-5.0, 7.0]
    );
    let i16b: Vec<u8> = [-300i16].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(dequantize(GgmlType::I16, &i16b, 1).unwrap(), vec![-300.0]);
    let f64b = 0.25f64.to_le_bytes();
    assert_eq!(dequantize(GgmlType::F64, &f64b, 1).unwrap(), vec![0.25]);

    // Size mismatches are errors.
    assert!(dequantize(GgmlType::F32, &f32b[..8], 3).is_err());
    assert!(dequantize(GgmlType::Q8_0, &[0; 34], 16).is_err());
    assert!(dequantize(GgmlType::Q8_0, &[0; 33], 32).is_err());
}

// Quantize-then-dequantize round trips for the simple block formats, with the
// error bound of round-to-nearest: half a step of the block scale.

fn quantize_blocks(x: &[f32], ty: GgmlType) -> Vec<u8> {
    let mut out = Vec::new();
    for blk in x.chunks(32) {
        let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
        let (mn, mx) = blk
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        match ty {
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => {
                let (levels, offset) = match ty {
                    GgmlType::Q8_0 => (127.0, 0),
                    GgmlType::Q4_0 => (7.0, 8),
                    _ => (15.0, 16),
                };
                let d = f16::from_f32(amax / levels);
                let id = if d.to_f32() != 0.0 {
                    1.0 / d.to_f32()
                } else {
                    0.0
                };
                let q: Vec<i32> = blk
                    .iter()
                    .map(|v| (v * id).round().clamp(-levels, levels) as i32)
                    .collect();
                out.extend(d.to_le_bytes());
                match ty {
                    GgmlType::Q8_0 => out.extend(q.iter().map(|&v| v as i8 as u8)),
                    GgmlType::Q4_0 => {
                        let u: Vec<u8> = q.iter().map(|&v| (v + offset) as u8).collect();
                        out.extend((0..16).map(|j| u[j] | (u[j + 16] << 4)));
                    }
                    _ => {
                        let u: Vec<u8> = q.iter().map(|&v| (v + offset) as u8).collect();
                        let (qh, qs) = pack_q5(&u);
                        out.extend(qh);
                        out.extend(qs);
                    }
                }
            }
            _ => {
                let levels = if ty == GgmlType::Q4_1 { 15.0 } else { 31.0 };
                let d = f16::from_f32((mx - mn) / levels);
                let m = f16::from_f32(mn);
                let id = if d.to_f32() != 0.0 {
                    1.0 / d.to_f32()
                } else {
                    0.0
                };
                let u: Vec<u8> = blk
                    .iter()
                    .map(|v| ((v - m.to_f32()) * id).round().clamp(0.0, levels) as u8)
                    .collect();
                out.extend(d.to_le_bytes());
                out.extend(m.to_le_bytes());
                if ty == GgmlType::Q4_1 {
                    out.extend((0..16).map(|j| u[j] | (u[j + 16] << 4)));
                } else {
                    let (qh, qs) = pack_q5(&u);
                    out.extend(qh);
                    out.extend(qs);
                }
            }
        }
    }
    out
}

#[test]
fn gguf_quantize_dequantize_round_trips_within_half_a_step() {
    let mut rng = StdRng::seed_from_u64(13);
    let x: Vec<f32> = (0..32 * 500)
        .map(|_| rng.random_range(-2.0f32..2.0).powi(3))
        .collect();
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q4_1,
        GgmlType::Q5_1,
    ] {
        let bytes = quantize_blocks(&x, ty);
        let y = dequantize(ty, &bytes, x.len()).unwrap();
        for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let (mn, mx) = xb
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, c), &v| (a.min(v), c.max(v)));
            let step = match ty {
                GgmlType::Q8_0 => amax / 127.0,
                GgmlType::Q4_0 => amax / 7.0,
                GgmlType::Q5_0 => amax / 15.0,
                GgmlType::Q4_1 => (mx - mn) / 15.0,
                _ => (mx - mn) / 31.0,
            };
            // Half a step from rounding, plus the f16 rounding of d and m (relative 2^-11,
            // magnified by up to `levels` steps) — a loose 3% of a step covers it.
            let bound = step * 0.5 + step * 0.03 * 31.0 + amax * 1e-3 + 1e-6;
            for (a, c) in xb.iter().zip(yb) {
                assert!(
                    (a - c).abs() <= bound,
                    "{ty} block {b}: {a} vs {c} (step {step})"
                );
            }
            // Round to nearest is much better than the bound on average.
            let mse: f32 = xb.iter().zip(yb).map(|(a, c)| (a - c).powi(2)).sum::<f32>() / 32.0;
            assert!(
                mse <= step * step / 4.0 + 1e-9,
                "{ty} block {b}: mse {mse} step {step}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Hugging Face mapping.
// ---------------------------------------------------------------------------

#[test]
fn gguf_hf_tensor_names() {
    let cases = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output.weight", "lm_head.weight"),
        ("output_norm.weight", "model.norm.weight"),
        (
            "blk.0.attn_q.weight",
            "model.layers.0.self_attn.q_proj.weight",
        ),
        (
            "blk.12.attn_k.weight",
            "model.layers.12.self_attn.k_proj.weight",
        ),
        ("blk.3.attn_v.bias", "model.layers.3.self_attn.v_proj.bias"),
        ("blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias"),
        (
            "blk.7.attn_output.weight",
            "model.layers.7.self_attn.o_proj.weight",
        ),
        (
            "blk.1.attn_qkv.weight",
            "model.layers.1.self_attn.qkv_proj.weight",
        ),
        (
            "blk.29.ffn_gate.weight",
            "model.layers.29.mlp.gate_proj.weight",
        ),
        ("blk.29.ffn_up.weight", "model.layers.29.mlp.up_proj.weight"),
        (
            "blk.29.ffn_down.weight",
            "model.layers.29.mlp.down_proj.weight",
        ),
        (
            "blk.4.attn_norm.weight",
            "model.layers.4.input_layernorm.weight",
        ),
        (
            "blk.4.ffn_norm.weight",
            "model.layers.4.post_attention_layernorm.weight",
        ),
    ];
    for (g, h) in cases {
        assert_eq!(hf_tensor_name("llama", g).as_deref(), Some(h), "{g}");
    }
    assert_eq!(
        hf_tensor_name("phi3", "blk.2.ffn_up.weight").as_deref(),
        Some("model.layers.2.mlp.gate_up_proj.weight")
    );
    assert_eq!(
        hf_tensor_name("qwen2", "blk.2.ffn_up.weight").as_deref(),
        Some("model.layers.2.mlp.up_proj.weight")
    );
    for bad in [
        "rope_freqs.weight",
        "blk.x.attn_q.weight",
        "blk..attn_q.weight",
        "blk.1.attn_q.scale",
        "blk.1.unknown.weight",
        "blk.1",
        "blk.+1.attn_q.weight",
        "token_embd",
    ] {
        assert_eq!(hf_tensor_name("llama", bad), None, "{bad}");
    }
}

#[test]
fn gguf_unpermute_inverts_llama_cpp_permutation() {
    // The numpy formula, written as literal index arithmetic over a 4-d view:
    // out[h, i, j, c] = w[h, j, i, c] with w viewed as (n_head, 2, half, cols).
    let numpy_permute = |w: &[f32], rows: usize, cols: usize, n_head: usize| {
        let half = rows / n_head / 2;
        let mut out = vec![0f32; w.len()];
        for h in 0..n_head {
            for i in 0..half {
                for j in 0..2 {
                    for c in 0..cols {
                        out[((h * half + i) * 2 + j) * cols + c] =
                            w[((h * 2 + j) * half + i) * cols + c];
                    }
                }
            }
        }
        out
    };
    let mut rng = StdRng::seed_from_u64(14);
    for &(rows, cols, n_head) in &[(8, 3, 2), (576, 5, 9), (192, 4, 3), (64, 1, 4), (4, 2, 1)] {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.random()).collect();
        let p = permute_rope_rows(&w, rows, cols, n_head).unwrap();
        assert_eq!(p, numpy_permute(&w, rows, cols, n_head));
        assert_ne!(p, w, "the permutation must move rows");
        assert_eq!(unpermute_rope_rows(&p, rows, cols, n_head).unwrap(), w);
        assert_eq!(
            permute_rope_rows(
                &unpermute_rope_rows(&w, rows, cols, n_head).unwrap(),
                rows,
                cols,
                n_head
            )
            .unwrap(),
            w
        );
    }
    // One head of 4 rows: HF rows [r0 r1 r2 r3] are stored as [r0 r2 r1 r3].
    let w = [0.0, 1.0, 2.0, 3.0];
    assert_eq!(
        permute_rope_rows(&w, 4, 1, 1).unwrap(),
        vec![0.0, 2.0, 1.0, 3.0]
    );
    assert_eq!(
        unpermute_rope_rows(&[0.0, 2.0, 1.0, 3.0], 4, 1, 1).unwrap(),
        w.to_vec()
    );
    // Bad shapes are errors, not panics.
    assert!(unpermute_rope_rows(&w, 4, 1, 0).is_err());
    assert!(unpermute_rope_rows(&w, 4, 1, 3).is_err());
    assert!(unpermute_rope_rows(&w, 2, 1, 1).is_err());
}

/// A 2-layer llama-style GGUF whose q/k rows were permuted the way llama.cpp's
/// converter does, plus the original HF tensors.
fn tiny_model(arch: &str, tied: bool) -> (Vec<u8>, Vec<HfTensor>) {
    let (hidden, n_head, n_kv, ffn, vocab, layers) =
        (16usize, 4usize, 2usize, 24usize, 40usize, 2usize);
    let head_dim = hidden / n_head;
    let mut rng = StdRng::seed_from_u64(15);
    let mut rand_vec =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let key = |k: &str| format!("{arch}.{k}");
    let mut w = TestGguf::new()
        .kv("general.architecture", s(arch))
        .kv(&key("embedding_length"), GgufValue::U32(hidden as u32))
        .kv(&key("block_count"), GgufValue::U32(layers as u32))
        .kv(&key("feed_forward_length"), GgufValue::U64(ffn as u64))
        .kv(&key("attention.head_count"), GgufValue::U32(n_head as u32))
        .kv(&key("attention.head_count_kv"), GgufValue::I32(n_kv as i32))
        .kv(
            &key("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(1e-5),
        )
        .kv(&key("rope.freq_base"), GgufValue::F32(500000.0))
        .kv(&key("context_length"), GgufValue::U32(2048))
        .kv("tokenizer.ggml.bos_token_id", GgufValue::U32(1))
        .kv("tokenizer.ggml.eos_token_id", GgufValue::U32(2))
        .kv(
            "tokenizer.ggml.tokens",
            GgufValue::Array(
                GgufValueType::String,
                (0..vocab).map(|i| s(&format!("t{i}"))).collect(),
            ),
        );
    let mut hf = Vec::new();
    let permutes = rope_permuted_by_converter(arch);
    let add = |w: TestGguf,
               gname: &str,
               hname: &str,
               shape: Vec<usize>,
               heads: Option<usize>,
               hf: &mut Vec<_>,
               vals: Vec<f32>| {
        let stored = match heads {
            Some(h) if permutes => {
                permute_rope_rows(&vals, shape[0], shape.iter().skip(1).product(), h).unwrap()
            }
            _ => vals.clone(),
        };
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        hf.push((hname.to_string(), shape, vals));
        w.f32_tensor(gname, &dims, &stored)
    };
    w = add(
        w,
        "token_embd.weight",
        "model.embed_tokens.weight",
        vec![vocab, hidden],
        None,
        &mut hf,
        rand_vec(vocab * hidden),
    );
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        w = add(
            w,
            &format!("blk.{l}.attn_norm.weight"),
            &format!("{p}.input_layernorm.weight"),
            vec![hidden],
            None,
            &mut hf,
            rand_vec(hidden),
        );
        w = add(
            w,
            &format!("blk.{l}.attn_q.weight"),
            &format!("{p}.self_attn.q_proj.weight"),
            vec![hidden, hidden],
            Some(n_head),
            &mut hf,
            rand_vec(hidden * hidden),
        );
        w = add(
            w,
            &format!("blk.{l}.attn_q.bias"),
            &format!("{p}.self_attn.q_proj.bias"),
            vec![hidden],
            Some(n_head),
            &mut hf,
            rand_vec(hidden),
        );
        w = add(
            w,
            &format!("blk.{l}.attn_k.weight"),
            &format!("{p}.self_attn.k_proj.weight"),
            vec![n_kv * head_dim, hidden],
            Some(n_kv),
            &mut hf,
            rand_vec(n_kv * head_dim * hidden),
        );
        w = add(
            w,
            &format!("blk.{l}.attn_v.weight"),
            &format!("{p}.self_attn.v_proj.weight"),
            vec![n_kv * head_dim, hidden],
            None,
            &mut hf,
            rand_vec(n_kv * head_dim * hidden),
        );
        w = add(
            w,
            &format!("blk.{l}.attn_output.weight"),
            &format!("{p}.self_attn.o_proj.weight"),
            vec![hidden, hidden],
            None,
            &mut hf,
            rand_vec(hidden * hidden),
        );
        w = add(
            w,
            &format!("blk.{l}.ffn_norm.weight"),
            &format!("{p}.post_attention_layernorm.weight"),
            vec![hidden],
            None,
            &mut hf,
            rand_vec(hidden),
        );
        w = add(
            w,
            &format!("blk.{l}.ffn_gate.weight"),
            &format!("{p}.mlp.gate_proj.weight"),
            vec![ffn, hidden],
            None,
            &mut hf,
            rand_vec(ffn * hidden),
        );
        w = add(
            w,
            &format!("blk.{l}.ffn_up.weight"),
            &format!("{p}.mlp.up_proj.weight"),
            vec![ffn, hidden],
            None,
            &mut hf,
            rand_vec(ffn * hidden),
        );
        w = add(
            w,
            &format!("blk.{l}.ffn_down.weight"),
            &format!("{p}.mlp.down_proj.weight"),
            vec![hidden, ffn],
            None,
            &mut hf,
            rand_vec(hidden * ffn),
        );
    }
    w = add(
        w,
        "output_norm.weight",
        "model.norm.weight",
        vec![hidden],
        None,
        &mut hf,
        rand_vec(hidden),
    );
    if !tied {
        w = add(
            w,
            "output.weight",
            "lm_head.weight",
            vec![vocab, hidden],
            None,
            &mut hf,
            rand_vec(vocab * hidden),
        );
    }
    (w.build().0, hf)
}

#[test]
fn gguf_load_hf_tensors_recovers_hf_weights() {
    for (arch, tied) in [
        ("llama", true),
        ("llama", false),
        ("mistral", false),
        ("qwen2", true),
    ] {
        let (bytes, hf) = tiny_model(arch, tied);
        let f = GgufFile::parse(&bytes).unwrap();
        let got = load_hf_tensors(&f).unwrap();
        assert_eq!(got.len(), hf.len(), "{arch}");
        for (g, h) in got.iter().zip(&hf) {
            assert_eq!(g.0, h.0, "{arch}");
            assert_eq!(g.1, h.1, "{arch} {}", h.0);
            assert_eq!(g.2, h.2, "{arch} {}", h.0);
        }
        let cfg = hf_config_from_gguf(&f).unwrap();
        assert_eq!(cfg["model_type"], arch);
        assert_eq!(cfg["hidden_size"], 16);
        assert_eq!(cfg["intermediate_size"], 24);
        assert_eq!(cfg["num_hidden_layers"], 2);
        assert_eq!(cfg["num_attention_heads"], 4);
        assert_eq!(cfg["num_key_value_heads"], 2);
        assert_eq!(cfg["head_dim"], 4);
        assert_eq!(cfg["vocab_size"], 40);
        assert_eq!(cfg["max_position_embeddings"], 2048);
        assert_eq!(cfg["rope_theta"], 500000.0);
        assert!((cfg["rms_norm_eps"].as_f64().unwrap() - 1e-5).abs() < 1e-10);
        assert_eq!(cfg["tie_word_embeddings"], tied);
        assert_eq!(cfg["bos_token_id"], 1);
        assert_eq!(cfg["eos_token_id"], 2);
        assert!(cfg["rope_scaling"].is_null());
    }
}

#[test]
fn gguf_unsupported_architecture_and_unknown_tensors_are_named() {
    let (bytes, _) = TestGguf::new()
        .kv("general.architecture", s("gpt2"))
        .f32_tensor("token_embd.weight", &[2, 2], &[0.0; 4])
        .build();
    let f = GgufFile::parse(&bytes).unwrap();
    assert!(format!("{:#}", hf_config_from_gguf(&f).unwrap_err())
        .contains("unsupported GGUF architecture 'gpt2'"));
    assert!(format!("{:#}", load_hf_tensors(&f).unwrap_err()).contains("'gpt2'"));

    let (bytes, _) = TestGguf::new()
        .kv("general.architecture", s("llama"))
        .f32_tensor("blk.0.attn_q_norm.weight", &[2], &[0.0; 2])
        .build();
    let f = GgufFile::parse(&bytes).unwrap();
    let e = format!("{:#}", load_hf_tensors(&f).unwrap_err());
    assert!(
        e.contains("tensor 'blk.0.attn_q_norm.weight' has no Hugging Face equivalent"),
        "{e}"
    );

    let (bytes, _) = TestGguf::new()
        .kv("general.architecture", s("llama"))
        .build();
    let f = GgufFile::parse(&bytes).unwrap();
    let e = format!("{:#}", hf_config_from_gguf(&f).unwrap_err());
    assert!(e.contains("llama.embedding_length"), "{e}");
}

#[test]
fn gguf_config_rope_scaling() {
    let base = || {
        TestGguf::new()
            .kv("general.architecture", s("llama"))
            .kv("llama.embedding_length", GgufValue::U32(256))
            .kv("llama.block_count", GgufValue::U32(1))
            .kv("llama.feed_forward_length", GgufValue::U32(512))
            .kv("llama.attention.head_count", GgufValue::U32(2))
            .kv(
                "llama.attention.layer_norm_rms_epsilon",
                GgufValue::F32(1e-5),
            )
            .kv("llama.rope.freq_base", GgufValue::F32(500000.0))
            .kv("llama.vocab_size", GgufValue::U32(10))
    };
    // Linear scaling from metadata.
    let (b, _) = base()
        .kv("llama.rope.scaling.type", s("linear"))
        .kv("llama.rope.scaling.factor", GgufValue::F32(4.0))
        .build();
    let cfg = hf_config_from_gguf(&GgufFile::parse(&b).unwrap()).unwrap();
    assert_eq!(cfg["rope_scaling"]["rope_type"], "linear");
    assert_eq!(cfg["rope_scaling"]["factor"], 4.0);

    // Llama-3.1 style: rope_freqs computed exactly as llama.cpp's converter does.
    let (dim, theta, factor, low, high, old) =
        (128usize, 500000.0f64, 8.0f64, 1.0f64, 4.0f64, 8192.0f64);
    let factors: Vec<f32> = (0..dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / dim as f64);
            let wl = 2.0 * std::f64::consts::PI / freq;
            let v = if wl < old / high {
                1.0
            } else if wl > old / low {
                factor
            } else {
                let sm = (old / wl - low) / (high - low);
                1.0 / ((1.0 - sm) / factor + sm)
            };
            v as f32
        })
        .collect();
    assert!(
        factors.iter().any(|&f| f > 1.0 && f < 8.0),
        "the grid must contain smooth factors"
    );
    let (b, _) = base()
        .f32_tensor("rope_freqs.weight", &[64], &factors)
        .build();
    let f = GgufFile::parse(&b).unwrap();
    let cfg = hf_config_from_gguf(&f).unwrap();
    let rs = &cfg["rope_scaling"];
    assert_eq!(rs["rope_type"], "llama3");
    assert_eq!(rs["factor"], 8.0);
    assert_eq!(rs["low_freq_factor"], 1.0);
    assert_eq!(rs["high_freq_factor"], 4.0);
    assert_eq!(rs["original_max_position_embeddings"], 8192);
    // rope_freqs is a RoPE parameter, not a weight.
    assert!(load_hf_tensors(&f).unwrap().is_empty());

    // Factors that no llama3 setting produces are an error, not a silent guess.
    let mut odd = factors.clone();
    odd[20] *= 1.5;
    let (b, _) = base().f32_tensor("rope_freqs.weight", &[64], &odd).build();
    let e = format!(
        "{:#}",
        hf_config_from_gguf(&GgufFile::parse(&b).unwrap()).unwrap_err()
    );
    assert!(e.contains("rope_freqs.weight does not match"), "{e}");
}

// ---------------------------------------------------------------------------
// The real SmolLM2-135M-Instruct Q4_1 GGUF.
// ---------------------------------------------------------------------------

#[test]
fn gguf_real_smollm2_q4_1() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/models/smollm2-135m-instruct"
    );
    let path = format!("{dir}/SmolLM2-135M-Instruct.Q4_1.gguf");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.tensors().len(), 272);
    assert_eq!(f.get_u32("llama.block_count"), Some(30));
    assert_eq!(f.get_u32("llama.embedding_length"), Some(576));
    let mut types: Vec<GgmlType> = f.tensors().iter().map(|t| t.ggml_type).collect();
    types.sort_by_key(|t| t.id());
    types.dedup();
    assert_eq!(types, vec![GgmlType::F32, GgmlType::Q4_1, GgmlType::Q8_0]);

    // The config must agree with the HF config.json shipped next to the GGUF.
    let cfg = hf_config_from_gguf(&f).unwrap();
    let hf_cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/config.json")).unwrap())
            .unwrap();
    for k in [
        "model_type",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "max_position_embeddings",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
    ] {
        assert_eq!(cfg[k], hf_cfg[k], "config key {k}");
    }
    for k in ["rms_norm_eps", "rope_theta"] {
        let (a, b) = (cfg[k].as_f64().unwrap(), hf_cfg[k].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-6 * b.abs(), "{k}: {a} vs {b}");
    }
    assert!(cfg["rope_scaling"].is_null());

    let tensors = load_hf_tensors(&f).unwrap();
    assert_eq!(tensors.len(), 272);
    let mut expected_shapes = std::collections::HashMap::new();
    expected_shapes.insert("model.embed_tokens.weight".to_string(), vec![49152, 576]);
    expected_shapes.insert("model.norm.weight".to_string(), vec![576]);
    for l in 0..30 {
        let p = format!("model.layers.{l}");
        for (n, s) in [
            ("self_attn.q_proj.weight", vec![576, 576]),
            ("self_attn.k_proj.weight", vec![192, 576]),
            ("self_attn.v_proj.weight", vec![192, 576]),
            ("self_attn.o_proj.weight", vec![576, 576]),
            ("mlp.gate_proj.weight", vec![1536, 576]),
            ("mlp.up_proj.weight", vec![1536, 576]),
            ("mlp.down_proj.weight", vec![576, 1536]),
            ("input_layernorm.weight", vec![576]),
            ("post_attention_layernorm.weight", vec![576]),
        ] {
            expected_shapes.insert(format!("{p}.{n}"), s);
        }
    }
    assert_eq!(expected_shapes.len(), 272);
    for (name, shape, values) in &tensors {
        let want = expected_shapes
            .get(name)
            .unwrap_or_else(|| panic!("unexpected tensor {name}"));
        assert_eq!(shape, want, "{name}");
        assert_eq!(values.len(), shape.iter().product::<usize>(), "{name}");
        assert!(
            values.iter().all(|v| v.is_finite()),
            "{name} has non-finite values"
        );
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        let max = values.iter().fold(0f32, |a, v| a.max(v.abs()));
        if name.ends_with("layernorm.weight") || name == "model.norm.weight" {
            // RMSNorm gains (signed; layer 0's are near zero on average): sane magnitude.
            let mean_abs = values.iter().map(|&v| v.abs() as f64).sum::<f64>() / n;
            assert!(
                mean_abs > 0.01 && mean_abs < 20.0,
                "{name}: mean |gain| {mean_abs}"
            );
        } else {
            // Linear / embedding weights: centred, std of a trained small model, no blow-ups.
            assert!(mean.abs() < 0.05, "{name}: mean {mean}");
            assert!(std > 0.005 && std < 1.0, "{name}: std {std}");
            assert!((max as f64) < 100.0 * std, "{name}: max {max} std {std}");
        }
        assert!(std > 0.0, "{name} is constant");
    }
    // The un-permuted q rows differ from the stored order, and re-permuting gives it back.
    let q_info = f.tensor("blk.0.attn_q.weight").unwrap();
    let stored = f.tensor_f32(q_info).unwrap();
    let q = &tensors
        .iter()
        .find(|t| t.0 == "model.layers.0.self_attn.q_proj.weight")
        .unwrap()
        .2;
    assert_ne!(&stored, q);
    assert_eq!(permute_rope_rows(q, 576, 576, 9).unwrap(), stored);
    let k_info = f.tensor("blk.0.attn_k.weight").unwrap();
    let k = &tensors
        .iter()
        .find(|t| t.0 == "model.layers.0.self_attn.k_proj.weight")
        .unwrap()
        .2;
    assert_eq!(
        permute_rope_rows(k, 192, 576, 3).unwrap(),
        f.tensor_f32(k_info).unwrap()
    );
}

#[test]
fn gguf_phi3_fused_tensors_and_longrope() {
    let (hidden, n_head, ffn) = (8usize, 2usize, 12usize);
    let qkv: Vec<f32> = (0..3 * hidden * hidden).map(|i| i as f32).collect();
    let gate_up: Vec<f32> = (0..2 * ffn * hidden).map(|i| -(i as f32)).collect();
    let long = [1.0f32, 1.5];
    let short = [1.0f32, 1.25];
    let (b, _) = TestGguf::new()
        .kv("general.architecture", s("phi3"))
        .kv("phi3.embedding_length", GgufValue::U32(hidden as u32))
        .kv("phi3.block_count", GgufValue::U32(1))
        .kv("phi3.feed_forward_length", GgufValue::U32(ffn as u32))
        .kv("phi3.attention.head_count", GgufValue::U32(n_head as u32))
        .kv(
            "phi3.attention.head_count_kv",
            GgufValue::U32(n_head as u32),
        )
        .kv(
            "phi3.attention.layer_norm_rms_epsilon",
            GgufValue::F32(1e-5),
        )
        .kv("phi3.context_length", GgufValue::U32(131072))
        .kv(
            "phi3.rope.scaling.original_context_length",
            GgufValue::U32(4096),
        )
        .kv("phi3.attention.sliding_window", GgufValue::U32(262144))
        .kv("phi3.vocab_size", GgufValue::U32(3))
        .f32_tensor(
            "blk.0.attn_qkv.weight",
            &[hidden as u64, 3 * hidden as u64],
            &qkv,
        )
        .f32_tensor(
            "blk.0.ffn_up.weight",
            &[hidden as u64, 2 * ffn as u64],
            &gate_up,
        )
        .f32_tensor("rope_factors_long.weight", &[2], &long)
        .f32_tensor("rope_factors_short.weight", &[2], &short)
        .build();
    let f = GgufFile::parse(&b).unwrap();
    let t = load_hf_tensors(&f).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].0, "model.layers.0.self_attn.qkv_proj.weight");
    assert_eq!(t[0].1, vec![3 * hidden, hidden]);
    assert_eq!(
        t[0].2, qkv,
        "phi3 q/k rows are not permuted by the converter"
    );
    assert_eq!(t[1].0, "model.layers.0.mlp.gate_up_proj.weight");
    assert_eq!(t[1].1, vec![2 * ffn, hidden]);
    assert_eq!(t[1].2, gate_up);
    let cfg = hf_config_from_gguf(&f).unwrap();
    assert_eq!(cfg["architectures"][0], "Phi3ForCausalLM");
    assert_eq!(cfg["rope_scaling"]["type"], "longrope");
    assert_eq!(
        cfg["rope_scaling"]["long_factor"],
        serde_json::json!([1.0, 1.5])
    );
    assert_eq!(
        cfg["rope_scaling"]["short_factor"],
        serde_json::json!([1.0, 1.25])
    );
    assert_eq!(cfg["original_max_position_embeddings"], 4096);
    assert_eq!(cfg["sliding_window"], 262144);
    assert_eq!(cfg["tie_word_embeddings"], true);
}
