//! The metadata of a GGUF file (llama.cpp's model format): the chat template and the special
//! tokens, read without loading any tensor.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// A metadata value; arrays keep only what harmaug reads (strings).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i128),
    Float(f64),
    Bool(bool),
    String(String),
    Strings(Vec<String>),
    OtherArray,
}

pub struct Metadata {
    pub values: HashMap<String, Value>,
}

impl Metadata {
    pub fn read(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        read_metadata(&mut BufReader::new(file))
            .with_context(|| format!("{}: not a readable GGUF file", path.display()))
    }

    pub fn string(&self, key: &str) -> Option<&str> {
        match self.values.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The text of special token `tokenizer.ggml.<which>_token_id` (e.g. "bos"), if any.
    pub fn special_token(&self, which: &str) -> Option<&str> {
        let Some(Value::Int(id)) = self.values.get(&format!("tokenizer.ggml.{which}_token_id"))
        else {
            return None;
        };
        match self.values.get("tokenizer.ggml.tokens") {
            Some(Value::Strings(tokens)) => {
                tokens.get(usize::try_from(*id).ok()?).map(String::as_str)
            }
            _ => None,
        }
    }
}

pub(crate) fn read_metadata(r: &mut impl Read) -> Result<Metadata> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if &magic != b"GGUF" {
        bail!("bad magic {magic:?}");
    }
    let version = u32_(r)?;
    if !(2..=3).contains(&version) {
        bail!("GGUF version {version} (supported: 2, 3)");
    }
    let _tensors = u64_(r)?;
    let count = u64_(r)?;
    let mut values = HashMap::new();
    for _ in 0..count {
        let key = string(r)?;
        let kind = u32_(r)?;
        let value = value(r, kind, 0).with_context(|| format!("metadata key {key}"))?;
        values.insert(key, value);
    }
    Ok(Metadata { values })
}

/// Arrays may hold arrays; real files nest one level (llama.cpp writes none deeper), and a
/// crafted file must not recurse until the stack overflows.
const MAX_ARRAY_DEPTH: usize = 8;

fn value(r: &mut impl Read, kind: u32, depth: usize) -> Result<Value> {
    Ok(match kind {
        0 => Value::Int(bytes::<1>(r)?[0].into()),
        1 => Value::Int((bytes::<1>(r)?[0] as i8).into()),
        2 => Value::Int(u16::from_le_bytes(bytes(r)?).into()),
        3 => Value::Int(i16::from_le_bytes(bytes(r)?).into()),
        4 => Value::Int(u32_(r)?.into()),
        5 => Value::Int(i32::from_le_bytes(bytes(r)?).into()),
        6 => Value::Float(f32::from_le_bytes(bytes(r)?).into()),
        7 => Value::Bool(bytes::<1>(r)?[0] != 0),
        8 => Value::String(string(r)?),
        9 => {
            if depth >= MAX_ARRAY_DEPTH {
                bail!("arrays nested more than {MAX_ARRAY_DEPTH} deep");
            }
            let inner = u32_(r)?;
            let n = u64_(r)?;
            if inner == 8 {
                let strings = (0..n).map(|_| string(r)).collect::<Result<_>>()?;
                Value::Strings(strings)
            } else {
                for _ in 0..n {
                    value(r, inner, depth + 1)?;
                }
                Value::OtherArray
            }
        }
        10 => Value::Int(u64_(r)?.into()),
        11 => Value::Int(i64::from_le_bytes(bytes(r)?).into()),
        12 => Value::Float(f64::from_le_bytes(bytes(r)?)),
        other => bail!("unknown value type {other}"),
    })
}

fn bytes<const N: usize>(r: &mut impl Read) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn u32_(r: &mut impl Read) -> Result<u32> {
    Ok(u32::from_le_bytes(bytes(r)?))
}

fn u64_(r: &mut impl Read) -> Result<u64> {
    Ok(u64::from_le_bytes(bytes(r)?))
}

fn string(r: &mut impl Read) -> Result<String> {
    let len = u64_(r)?;
    if len > 1 << 30 {
        bail!("string of {len} bytes");
    }
    // Grown as bytes arrive: a length the file cannot back allocates nothing.
    let mut buf = Vec::new();
    r.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        bail!("a string of {len} bytes past the end of the file");
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
