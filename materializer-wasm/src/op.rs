//! The operations of an RFC 6902 patch and their checked construction from JSON.
//!
//! Operations are checked completely (op name, members, pointer syntax) before any of them is
//! applied, so a malformed patch never touches the document.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

use crate::error::{ErrorKind, PatchError};
use crate::pointer::Pointer;
use crate::raw::{RawItem, RawObject};

/// One operation of a JSON Patch.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Add `value` at `path`: insert into an array, add or overwrite an object member, or
    /// replace the whole document.
    Add { path: Pointer, value: Value },
    /// Remove the value at `path`.
    Remove { path: Pointer },
    /// Replace the existing value at `path`.
    Replace { path: Pointer, value: Value },
    /// Remove the value at `from` and add it at `path`.
    Move { from: Pointer, path: Pointer },
    /// Add a copy of the value at `from` at `path`.
    Copy { from: Pointer, path: Pointer },
    /// Check that the value at `path` equals `value` (numbers by value, objects unordered).
    Test { path: Pointer, value: Value },
}

impl Operation {
    /// The operation's name as it appears in the `op` member.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Add { .. } => "add",
            Self::Remove { .. } => "remove",
            Self::Replace { .. } => "replace",
            Self::Move { .. } => "move",
            Self::Copy { .. } => "copy",
            Self::Test { .. } => "test",
        }
    }

    /// The target location (`path` member).
    pub fn path(&self) -> &Pointer {
        match self {
            Self::Add { path, .. }
            | Self::Remove { path }
            | Self::Replace { path, .. }
            | Self::Move { path, .. }
            | Self::Copy { path, .. }
            | Self::Test { path, .. } => path,
        }
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("op", self.name())?;
        if let Self::Move { from, .. } | Self::Copy { from, .. } = self {
            map.serialize_entry("from", from.as_str())?;
        }
        map.serialize_entry("path", self.path().as_str())?;
        if let Self::Add { value, .. } | Self::Replace { value, .. } | Self::Test { value, .. } =
            self
        {
            map.serialize_entry("value", value)?;
        }
        map.end()
    }
}

/// A checked JSON Patch: an ordered list of operations applied atomically.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    ops: Vec<Operation>,
}

impl Patch {
    /// A patch of already checked operations.
    pub fn new(ops: Vec<Operation>) -> Self {
        Self { ops }
    }

    /// Parses JSON text holding an array of operations.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, PatchError> {
        match crate::raw::parse(bytes, "the patch")? {
            RawItem::Array(items) => Self::from_raw_items(items),
            other => Err(not_an_array(&other)),
        }
    }

    /// Checks a JSON value holding an array of operations. Values are moved, not copied.
    pub fn from_value(value: Value) -> Result<Self, PatchError> {
        match value {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| Operation::from_json(i, RawItem::from(v)))
                .collect::<Result<_, _>>()
                .map(Self::new),
            other => Err(not_an_array(&RawItem::from(other))),
        }
    }

    pub(crate) fn from_raw_items(items: Vec<RawItem>) -> Result<Self, PatchError> {
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| Operation::from_json(i, item))
            .collect::<Result<_, _>>()
            .map(Self::new)
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    /// Gives the operations back.
    pub fn into_ops(self) -> Vec<Operation> {
        self.ops
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the patch has no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl Serialize for Patch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.ops.len()))?;
        for op in &self.ops {
            seq.serialize_element(op)?;
        }
        seq.end()
    }
}

fn not_an_array(item: &RawItem) -> PatchError {
    PatchError::whole(
        ErrorKind::InvalidPatch,
        format!(
            "a patch is a JSON array of operations, not {}",
            item.type_name()
        ),
    )
}

impl Operation {
    /// Checks one element of a patch (RFC 6902 §4): an object with a known `op`, a `path`, and
    /// the `from`/`value` members that op requires. Unknown members are ignored (§4).
    pub(crate) fn from_json(index: usize, item: RawItem) -> Result<Self, PatchError> {
        let invalid = |path: Option<&str>, reason: String| {
            PatchError::new(Some(index), ErrorKind::InvalidOperation, path, reason)
        };
        let obj = match item {
            RawItem::Object(obj) => *obj,
            other => {
                return Err(invalid(
                    None,
                    format!("an operation is a JSON object, not {}", other.type_name()),
                ));
            }
        };
        let RawObject {
            op,
            path,
            from,
            value,
            duplicate,
            ..
        } = obj;
        let path_text = match &path {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        };
        if let Some(member) = duplicate {
            return Err(invalid(
                path_text,
                format!("the operation has two '{member}' members"),
            ));
        }
        let op = match op {
            Some(Value::String(op)) => op,
            Some(other) => {
                return Err(invalid(
                    path_text,
                    format!("'op' must be a string, not {}", type_name(&other)),
                ));
            }
            None => return Err(invalid(path_text, "the 'op' member is missing".into())),
        };
        let name = match op.as_str() {
            "add" => Name::Add,
            "remove" => Name::Remove,
            "replace" => Name::Replace,
            "move" => Name::Move,
            "copy" => Name::Copy,
            "test" => Name::Test,
            _ => {
                return Err(invalid(
                    path_text,
                    format!("unknown op {op:?}; expected add, remove, replace, move, copy or test"),
                ));
            }
        };
        let path = pointer(index, "path", path, None)?;
        let need_value = |value: Option<Value>| {
            value.ok_or_else(|| {
                invalid(
                    Some(path.as_str()),
                    format!("'{op}' needs a 'value' member"),
                )
            })
        };
        let need_from = |from| pointer(index, "from", from, Some(path.as_str()));
        Ok(match name {
            Name::Add => Self::Add {
                value: need_value(value)?,
                path,
            },
            Name::Remove => Self::Remove { path },
            Name::Replace => Self::Replace {
                value: need_value(value)?,
                path,
            },
            Name::Move => Self::Move {
                from: need_from(from)?,
                path,
            },
            Name::Copy => Self::Copy {
                from: need_from(from)?,
                path,
            },
            Name::Test => Self::Test {
                value: need_value(value)?,
                path,
            },
        })
    }
}

/// The `op` member, checked.
enum Name {
    Add,
    Remove,
    Replace,
    Move,
    Copy,
    Test,
}

/// Checks a `path` or `from` member. `context` is the pointer to report when the member is
/// missing or not a string (the operation's `path`, for a bad `from`).
fn pointer(
    index: usize,
    member: &str,
    value: Option<Value>,
    context: Option<&str>,
) -> Result<Pointer, PatchError> {
    match value {
        Some(Value::String(text)) => match crate::pointer::validate(&text) {
            Ok(()) => Ok(Pointer::new_unchecked(text)),
            Err(e) => Err(PatchError::new(
                Some(index),
                ErrorKind::InvalidPointer,
                Some(&text),
                format!("'{member}' is not a JSON Pointer: {e}"),
            )),
        },
        Some(other) => Err(PatchError::new(
            Some(index),
            ErrorKind::InvalidOperation,
            context,
            format!(
                "'{member}' must be a JSON Pointer string, not {}",
                type_name(&other)
            ),
        )),
        None => Err(PatchError::new(
            Some(index),
            ErrorKind::InvalidOperation,
            context,
            format!("the '{member}' member is missing"),
        )),
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
