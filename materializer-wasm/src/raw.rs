//! Lenient first pass over patch JSON.
//!
//! Deserializing straight into `Vec<Operation>` with serde would turn a bad operation into a
//! bare "invalid type at line 1 column 230" with no operation index. Instead the text is read
//! into [`RawItem`]s, which accept any JSON shape and keep only the members an operation (or a
//! patch record) can use; [`crate::op`] then checks each item and names its index. This reads
//! the bytes once without building a `serde_json::Map` per operation.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::error::PatchError;

/// Any JSON value, read for its use as an operation, a patch, or a patch record.
#[derive(Debug)]
pub(crate) enum RawItem {
    Object(Box<RawObject>),
    Array(Vec<RawItem>),
    /// A scalar: only its type name is kept, for the error message.
    Scalar(&'static str),
}

/// The members of an object that operations and patch records use; others are dropped.
#[derive(Debug, Default)]
pub(crate) struct RawObject {
    pub(crate) op: Option<Value>,
    pub(crate) path: Option<Value>,
    pub(crate) from: Option<Value>,
    pub(crate) value: Option<Value>,
    /// Patch records (`{"seq": 7, "ops": [...]}`) as the workflow API returns them.
    pub(crate) ops: Option<RawItem>,
    pub(crate) seq: Option<Value>,
    /// The first member that appeared twice (RFC 6902 §4 / appendix A.13 make that an error).
    pub(crate) duplicate: Option<&'static str>,
}

impl RawItem {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Self::Object(_) => "an object",
            Self::Array(_) => "an array",
            Self::Scalar(name) => name,
        }
    }
}

/// Reads JSON text; only a syntax error can fail here, never the shape.
pub(crate) fn parse(bytes: &[u8], what: &str) -> Result<RawItem, PatchError> {
    serde_json::from_slice(bytes).map_err(|e| PatchError::invalid_json(what, &e))
}

impl From<Value> for RawItem {
    fn from(value: Value) -> Self {
        match value {
            Value::Object(map) => {
                let mut obj = RawObject::default();
                for (key, v) in map {
                    match key.as_str() {
                        "op" => obj.op = Some(v),
                        "path" => obj.path = Some(v),
                        "from" => obj.from = Some(v),
                        "value" => obj.value = Some(v),
                        "ops" => obj.ops = Some(RawItem::from(v)),
                        "seq" => obj.seq = Some(v),
                        _ => {}
                    }
                }
                Self::Object(Box::new(obj))
            }
            Value::Array(items) => Self::Array(items.into_iter().map(Self::from).collect()),
            other => Self::Scalar(crate::op::type_name(&other)),
        }
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Op,
    Path,
    From,
    Value,
    Ops,
    Seq,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for RawItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawItemVisitor)
    }
}

struct RawItemVisitor;

/// Stores a member's value, remembering the first member seen twice.
fn put<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    duplicate: &mut Option<&'static str>,
    name: &'static str,
) -> Result<(), A::Error> {
    let v = map.next_value()?;
    if slot.is_some() {
        duplicate.get_or_insert(name);
    }
    *slot = Some(v);
    Ok(())
}

impl<'de> Visitor<'de> for RawItemVisitor {
    type Value = RawItem;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawItem, A::Error> {
        let mut o = RawObject::default();
        let dup = &mut o.duplicate;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Op => put(&mut map, &mut o.op, dup, "op")?,
                Field::Path => put(&mut map, &mut o.path, dup, "path")?,
                Field::From => put(&mut map, &mut o.from, dup, "from")?,
                Field::Value => put(&mut map, &mut o.value, dup, "value")?,
                Field::Ops => put(&mut map, &mut o.ops, dup, "ops")?,
                Field::Seq => put(&mut map, &mut o.seq, dup, "seq")?,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(RawItem::Object(Box::new(o)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawItem, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(RawItem::Array(items))
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawItem, E> {
        Ok(RawItem::Scalar("null"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawItem, E> {
        Ok(RawItem::Scalar("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawItem, E> {
        Ok(RawItem::Scalar("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawItem, E> {
        Ok(RawItem::Scalar("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawItem, E> {
        Ok(RawItem::Scalar("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawItem, E> {
        Ok(RawItem::Scalar("a string"))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn keeps_operation_members_and_flags_duplicates() {
        let RawItem::Array(items) = parse(
            br#"[{"op":"add","path":"/a","value":null,"x":[1,{"op":1}]},{"op":"a","op":"b"},3,[]]"#,
            "t",
        )
        .unwrap() else {
            panic!("not an array")
        };
        let RawItem::Object(first) = &items[0] else {
            panic!()
        };
        assert_eq!(first.op, Some(Value::from("add")));
        assert_eq!(
            first.value,
            Some(Value::Null),
            "null value is present, not missing"
        );
        assert!(first.from.is_none() && first.duplicate.is_none());
        let RawItem::Object(second) = &items[1] else {
            panic!()
        };
        assert_eq!(second.duplicate, Some("op"));
        assert_eq!(items[2].type_name(), "a number");
        assert_eq!(items[3].type_name(), "an array");
    }

    #[test]
    fn syntax_errors_are_invalid_json() {
        for bad in [&b""[..], b"[", b"[1,]", b"\xff", b"[] x"] {
            let e = parse(bad, "the patch").unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidJson, "{bad:?}");
        }
    }
}
