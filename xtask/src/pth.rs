//! Reads PyTorch's legacy (pre-1.6, non-zip) `torch.save` format without running Python
//! and without unpickling: a small pickle interpreter that only builds data (dicts, lists,
//! tuples, numbers, strings) and recognises tensor records structurally. Any opcode or
//! global outside that subset is an error, so a file cannot make it execute anything.
//!
//! Layout: five pickles (magic number, protocol version, system info, the object, the list
//! of storage keys), then for each key its element count (i64 LE) and raw bytes.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result, bail, ensure};

/// The magic number `torch.save` writes first, as pickle LONG1 bytes (little-endian).
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const PROTOCOL_VERSION: i64 = 1001;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F16,
    F32,
    F64,
    I32,
    I64,
    U8,
}

impl DType {
    fn from_storage(class: &str) -> Result<Self> {
        Ok(match class {
            "HalfStorage" => Self::F16,
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "IntStorage" => Self::I32,
            "LongStorage" => Self::I64,
            "ByteStorage" => Self::U8,
            other => bail!("unsupported storage type torch.{other}"),
        })
    }

    pub fn size(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::F16 => 2,
            Self::F32 | Self::I32 => 4,
            Self::F64 | Self::I64 => 8,
        }
    }

    fn safetensors_name(self) -> &'static str {
        match self {
            Self::F16 => "F16",
            Self::F32 => "F32",
            Self::F64 => "F64",
            Self::I32 => "I32",
            Self::I64 => "I64",
            Self::U8 => "U8",
        }
    }
}

/// A tensor copied out of its storage, contiguous, little-endian.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    StorageRef {
        key: String,
        dtype: DType,
        numel: usize,
    },
    TensorRef {
        key: String,
        dtype: DType,
        offset: usize,
        shape: Vec<usize>,
        stride: Vec<usize>,
    },
    Mark,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .context("unexpected end of file")?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.bytes[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').context("unterminated line")?;
        let line = std::str::from_utf8(&rest[..end])?.to_string();
        self.pos += end + 1;
        Ok(line)
    }

    fn string(&mut self, len: usize) -> Result<Value> {
        Ok(Value::Str(std::str::from_utf8(self.take(len)?)?.to_string()))
    }

    /// Runs one pickle up to its STOP opcode and returns the object it builds.
    fn pickle(&mut self) -> Result<Value> {
        let mut stack: Vec<Value> = Vec::new();
        let mut memo: HashMap<u32, Value> = HashMap::new();
        let pop = |stack: &mut Vec<Value>| stack.pop().context("pickle stack underflow");
        let pop_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>> {
            let mark = stack
                .iter()
                .rposition(|v| *v == Value::Mark)
                .context("pickle MARK missing")?;
            let items = stack.split_off(mark + 1);
            stack.pop();
            Ok(items)
        };
        loop {
            let opcode = self.u8()?;
            match opcode {
                0x80 => {
                    self.u8()?; // PROTO n
                }
                b'.' => return pop(&mut stack),
                b'(' => stack.push(Value::Mark),
                b'N' => stack.push(Value::None),
                0x88 => stack.push(Value::Bool(true)),
                0x89 => stack.push(Value::Bool(false)),
                b'K' => stack.push(Value::Int(i64::from(self.u8()?))),
                b'M' => stack.push(Value::Int(i64::from(u16::from_le_bytes(self.take(2)?.try_into()?)))),
                b'J' => stack.push(Value::Int(i64::from(i32::from_le_bytes(self.take(4)?.try_into()?)))),
                0x8a => {
                    let n = usize::from(self.u8()?);
                    let bytes = self.take(n)?;
                    stack.push(if n <= 8 {
                        Value::Int(le_signed(bytes))
                    } else {
                        Value::BigInt(bytes.to_vec())
                    });
                }
                b'G' => stack.push(Value::Float(f64::from_be_bytes(self.take(8)?.try_into()?))),
                b'X' => {
                    let len = self.u32()? as usize;
                    stack.push(self.string(len)?);
                }
                0x8c | b'U' => {
                    let len = usize::from(self.u8()?);
                    stack.push(self.string(len)?);
                }
                b'T' => {
                    let len = self.u32()? as usize;
                    stack.push(self.string(len)?);
                }
                b'}' => stack.push(Value::Dict(Vec::new())),
                b']' => stack.push(Value::List(Vec::new())),
                b')' => stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = pop_mark(&mut stack)?;
                    stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(opcode - 0x84);
                    ensure!(stack.len() >= n, "pickle stack underflow");
                    let items = stack.split_off(stack.len() - n);
                    stack.push(Value::Tuple(items));
                }
                b'q' => {
                    let key = u32::from(self.u8()?);
                    memo.insert(key, stack.last().context("BINPUT on empty stack")?.clone());
                }
                b'r' => {
                    let key = self.u32()?;
                    memo.insert(key, stack.last().context("LONG_BINPUT on empty stack")?.clone());
                }
                0x94 => {
                    let key = u32::try_from(memo.len())?;
                    memo.insert(key, stack.last().context("MEMOIZE on empty stack")?.clone());
                }
                b'h' | b'j' => {
                    let key = if opcode == b'h' {
                        u32::from(self.u8()?)
                    } else {
                        self.u32()?
                    };
                    stack.push(memo.get(&key).with_context(|| format!("memo {key} missing"))?.clone());
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    stack.push(Value::Global(module, name));
                }
                b'Q' => {
                    let id = pop(&mut stack)?;
                    stack.push(storage_ref(id)?);
                }
                b'R' => {
                    let args = pop(&mut stack)?;
                    let func = pop(&mut stack)?;
                    stack.push(reduce(func, args)?);
                }
                b'b' => {
                    // BUILD sets attributes (e.g. a state dict's `_metadata`); weights do not need them.
                    pop(&mut stack)?;
                }
                b's' => {
                    let value = pop(&mut stack)?;
                    let key = pop(&mut stack)?;
                    match stack.last_mut() {
                        Some(Value::Dict(items)) => items.push((key, value)),
                        _ => bail!("SETITEM on a non-dict"),
                    }
                }
                b'u' => {
                    let flat = pop_mark(&mut stack)?;
                    ensure!(flat.len() % 2 == 0, "SETITEMS with an odd item count");
                    let Some(Value::Dict(items)) = stack.last_mut() else {
                        bail!("SETITEMS on a non-dict")
                    };
                    let mut flat = flat.into_iter();
                    while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                        items.push((k, v));
                    }
                }
                b'a' => {
                    let value = pop(&mut stack)?;
                    let Some(Value::List(items)) = stack.last_mut() else {
                        bail!("APPEND on a non-list")
                    };
                    items.push(value);
                }
                b'e' => {
                    let values = pop_mark(&mut stack)?;
                    let Some(Value::List(items)) = stack.last_mut() else {
                        bail!("APPENDS on a non-list")
                    };
                    items.extend(values);
                }
                other => bail!(
                    "pickle opcode 0x{other:02x} at byte {} is outside the supported subset",
                    self.pos - 1
                ),
            }
        }
    }
}

fn le_signed(bytes: &[u8]) -> i64 {
    let mut buf = [0u8; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
        buf[bytes.len()..].fill(0xff);
    }
    i64::from_le_bytes(buf)
}

/// `('storage', torch.XStorage, key, location, numel[, view])`
fn storage_ref(id: Value) -> Result<Value> {
    let Value::Tuple(items) = id else {
        bail!("persistent id is not a tuple")
    };
    match items.as_slice() {
        [
            Value::Str(kind),
            Value::Global(module, class),
            Value::Str(key),
            _,
            Value::Int(numel),
            ..,
        ] if kind == "storage" && module == "torch" => Ok(Value::StorageRef {
            key: key.clone(),
            dtype: DType::from_storage(class)?,
            numel: usize::try_from(*numel)?,
        }),
        _ => bail!("unsupported persistent id {items:?}"),
    }
}

/// The only calls allowed: building an (ordered) dict and rebuilding a tensor.
fn reduce(func: Value, args: Value) -> Result<Value> {
    let Value::Global(module, name) = &func else {
        bail!("REDUCE of a non-global")
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") => {
            let Value::Tuple(items) = args else {
                bail!("_rebuild_tensor_v2 needs a tuple")
            };
            match items.as_slice() {
                [
                    Value::StorageRef { key, dtype, .. },
                    Value::Int(offset),
                    Value::Tuple(shape),
                    Value::Tuple(stride),
                    ..,
                ] => Ok(Value::TensorRef {
                    key: key.clone(),
                    dtype: *dtype,
                    offset: usize::try_from(*offset)?,
                    shape: ints(shape)?,
                    stride: ints(stride)?,
                }),
                _ => bail!("unexpected _rebuild_tensor_v2 arguments"),
            }
        }
        _ => bail!("refusing to call {module}.{name}: not a tensor or dict constructor"),
    }
}

fn ints(values: &[Value]) -> Result<Vec<usize>> {
    values
        .iter()
        .map(|v| match v {
            Value::Int(i) => Ok(usize::try_from(*i)?),
            other => bail!("expected an integer, got {other:?}"),
        })
        .collect()
}

/// Reads a legacy `torch.save(state_dict)` file into named contiguous tensors.
pub fn read_legacy_state_dict(bytes: &[u8]) -> Result<BTreeMap<String, RawTensor>> {
    let mut reader = Reader { bytes, pos: 0 };
    ensure!(
        reader.pickle()? == Value::BigInt(MAGIC.to_vec()),
        "not a legacy torch.save file (bad magic number)"
    );
    ensure!(
        reader.pickle()? == Value::Int(PROTOCOL_VERSION),
        "unsupported torch.save protocol version"
    );
    let Value::Dict(sys_info) = reader.pickle()? else {
        bail!("system info is not a dict")
    };
    let little_endian = sys_info
        .iter()
        .any(|(k, v)| *k == Value::Str("little_endian".into()) && *v == Value::Bool(true));
    ensure!(little_endian, "big-endian torch files are not supported");
    let Value::Dict(entries) = reader.pickle()? else {
        bail!("the saved object is not a state dict")
    };
    let Value::List(keys) = reader.pickle()? else {
        bail!("storage key list missing")
    };

    // Storage element types and sizes come from the tensor records that reference them.
    let mut storage_types: HashMap<String, DType> = HashMap::new();
    for (_, value) in &entries {
        if let Value::TensorRef { key, dtype, .. } = value {
            storage_types.insert(key.clone(), *dtype);
        }
    }
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else {
            bail!("storage key is not a string")
        };
        let numel = usize::try_from(i64::from_le_bytes(reader.take(8)?.try_into()?))?;
        let dtype = storage_types.get(&key).copied().unwrap_or(DType::U8);
        let data = reader.take(numel.checked_mul(dtype.size()).context("storage too large")?)?;
        storages.insert(key, data);
    }

    let mut tensors = BTreeMap::new();
    for (name, value) in entries {
        let Value::Str(name) = name else {
            bail!("state dict key is not a string")
        };
        let Value::TensorRef {
            key,
            dtype,
            offset,
            shape,
            stride,
        } = value
        else {
            bail!("state dict entry `{name}` is not a tensor")
        };
        let storage = storages
            .get(&key)
            .with_context(|| format!("storage {key} of `{name}` missing"))?;
        let data =
            gather(storage, dtype.size(), offset, &shape, &stride).with_context(|| format!("tensor `{name}`"))?;
        tensors.insert(name, RawTensor { dtype, shape, data });
    }
    Ok(tensors)
}

/// Copies a strided view out of its storage into contiguous row-major bytes.
fn gather(storage: &[u8], elem: usize, offset: usize, shape: &[usize], stride: &[usize]) -> Result<Vec<u8>> {
    ensure!(shape.len() == stride.len(), "shape and stride lengths differ");
    let count: usize = shape.iter().product();
    let mut out = Vec::with_capacity(count * elem);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..count {
        let position = offset + index.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        let start = position * elem;
        out.extend_from_slice(
            storage
                .get(start..start + elem)
                .context("view reaches past its storage")?,
        );
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Ok(out)
}

/// Serialises tensors as safetensors: an 8-byte header length, a JSON header (keys in
/// sorted order, padded with spaces to 8 bytes), then the data. Deterministic.
pub fn to_safetensors(tensors: &BTreeMap<String, RawTensor>, metadata: &[(&str, &str)]) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta = metadata
            .iter()
            .map(|(k, v)| ((*k).to_string(), serde_json::Value::from(*v)))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    }
    let mut offset = 0usize;
    for (name, tensor) in tensors {
        let end = offset + tensor.data.len();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": tensor.dtype.safetensors_name(), "shape": tensor.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&header)?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&u64::try_from(json.len())?.to_le_bytes());
    out.extend_from_slice(&json);
    for tensor in tensors.values() {
        out.extend_from_slice(&tensor.data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-assembled legacy file: one 2x2 float tensor stored transposed (stride [1, 2])
    /// at offset 1 of a 5-element storage, and one int64 scalar.
    fn tiny_legacy_file() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend([0x80, 0x02, 0x8a, 0x0a]);
        f.extend(MAGIC);
        f.push(b'.');
        f.extend([0x80, 0x02, b'M', 0xe9, 0x03, b'.']);
        f.extend([0x80, 0x02, b'}', b'(']);
        push_str(&mut f, "little_endian");
        f.extend([0x88, b'u', b'.']);
        // OrderedDict() then SETITEMS with two tensors.
        f.extend([0x80, 0x02]);
        f.extend(b"ccollections\nOrderedDict\n");
        f.extend([b')', b'R', b'q', 0x00, b'(']);
        push_str(&mut f, "w");
        push_tensor(&mut f, "FloatStorage", "s0", 5, 1, &[2, 2], &[1, 2]);
        push_str(&mut f, "n");
        push_tensor(&mut f, "LongStorage", "s1", 1, 0, &[], &[]);
        f.extend([b'u', b'}', b'b', b'.']);
        f.extend([0x80, 0x02, b']', b'(']);
        push_str(&mut f, "s0");
        push_str(&mut f, "s1");
        f.extend([b'e', b'.']);
        f.extend(5i64.to_le_bytes());
        for v in [9.0f32, 1.0, 2.0, 3.0, 4.0] {
            f.extend(v.to_le_bytes());
        }
        f.extend(1i64.to_le_bytes());
        f.extend(7i64.to_le_bytes());
        f
    }

    fn push_str(f: &mut Vec<u8>, s: &str) {
        f.push(b'X');
        f.extend(u32::try_from(s.len()).unwrap_or(0).to_le_bytes());
        f.extend(s.as_bytes());
    }

    fn push_tensor(f: &mut Vec<u8>, class: &str, key: &str, numel: u8, offset: u8, shape: &[u8], stride: &[u8]) {
        f.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        f.push(b'(');
        push_str(f, "storage");
        f.extend(format!("ctorch\n{class}\n").as_bytes());
        push_str(f, key);
        push_str(f, "cpu");
        f.extend([b'K', numel, b't', b'Q', b'K', offset, b'(']);
        for &s in shape {
            f.extend([b'K', s]);
        }
        f.extend([b't', b'(']);
        for &s in stride {
            f.extend([b'K', s]);
        }
        f.extend([b't', 0x89]);
        f.extend(b"ccollections\nOrderedDict\n");
        f.extend([b')', b'R', b't', b'R']);
    }

    #[test]
    fn reads_strided_views_and_dtypes() -> Result<()> {
        let tensors = read_legacy_state_dict(&tiny_legacy_file())?;
        let w = &tensors["w"];
        assert_eq!((w.dtype, w.shape.as_slice()), (DType::F32, &[2usize, 2][..]));
        let values: Vec<f32> = w
            .data
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // Storage [9, 1, 2, 3, 4], offset 1, stride [1, 2]: [[1, 3], [2, 4]].
        assert_eq!(values, [1.0, 3.0, 2.0, 4.0]);
        let n = &tensors["n"];
        assert_eq!(
            (n.dtype, n.shape.len(), n.data.as_slice()),
            (DType::I64, 0, &7i64.to_le_bytes()[..])
        );
        Ok(())
    }

    #[test]
    fn refuses_arbitrary_calls_and_bad_files() {
        let mut evil = tiny_legacy_file();
        let global = b"collections\nOrderedDict";
        let at = evil.windows(global.len()).position(|w| w == global).unwrap_or(0);
        evil.splice(at..at + global.len(), b"os\nsystem".iter().copied());
        let err = read_legacy_state_dict(&evil)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("refusing to call os.system"), "{err}");
        assert!(read_legacy_state_dict(b"PK\x03\x04 zip-format file").is_err());
        let whole = tiny_legacy_file();
        assert!(
            read_legacy_state_dict(&whole[..whole.len() - 3]).is_err(),
            "truncated data"
        );
    }

    #[test]
    fn safetensors_layout_is_aligned_and_sorted() -> Result<()> {
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "b".to_string(),
            RawTensor {
                dtype: DType::U8,
                shape: vec![3],
                data: vec![1, 2, 3],
            },
        );
        tensors.insert(
            "a".to_string(),
            RawTensor {
                dtype: DType::I32,
                shape: vec![1],
                data: 5i32.to_le_bytes().to_vec(),
            },
        );
        let bytes = to_safetensors(&tensors, &[])?;
        let header_len = usize::try_from(u64::from_le_bytes(bytes[..8].try_into()?))?;
        assert_eq!(header_len % 8, 0);
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len])?;
        assert_eq!(header["a"]["data_offsets"], serde_json::json!([0, 4]));
        assert_eq!(header["b"]["data_offsets"], serde_json::json!([4, 7]));
        assert_eq!(&bytes[8 + header_len..], &[5, 0, 0, 0, 1, 2, 3]);
        Ok(())
    }
}
