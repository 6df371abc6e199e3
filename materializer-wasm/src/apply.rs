//! Atomic application of a patch to a document.
//!
//! Written here rather than taken from the `json-patch` crate (5.0), after trying it against
//! this project's needs:
//! - Atomicity must hold byte for byte. Documents keep their key order (serde_json
//!   `preserve_order`, see `lib.rs`); `json-patch` removes members with `Map::remove`, which is
//!   `swap_remove` under that feature (it reorders the remaining keys), and its rollback
//!   re-adds removed members at the end. A failed patch could leave the document with the same
//!   content but a different serialization, so native and browser copies drift apart.
//! - Errors need a kind clients can switch on: `json-patch` folds a missing member, a bad index,
//!   an out-of-range index and a scalar parent into one `InvalidPointer`, and reports `path` for
//!   failures of `from`.
//! - It clones every value it adds because it borrows the patch; materialization owns freshly
//!   parsed patches, so values are moved here.
//!
//! Atomicity comes from an undo log rather than from cloning the document: each operation
//! records how to reverse itself (including the position of a removed object member), and a
//! failure replays the log backwards. Cost is proportional to the patch, not the document.

use std::borrow::Cow;

use serde_json::Value;

use crate::error::{ErrorKind, PatchError};
use crate::op::{Operation, Patch, type_name};
use crate::pointer::{ArrayIndex, Pointer, array_index};

/// Applies `patch` to `doc`: every operation, or (on error) none of them.
///
/// Values are cloned out of the patch; prefer [`apply_patch_owned`] when the patch is not
/// needed afterwards.
pub fn apply_patch(doc: &mut Value, patch: &Patch) -> Result<(), PatchError> {
    apply_ops(doc, patch.ops().iter().cloned())
}

/// Applies `patch` to `doc`, moving its values into the document: every operation, or (on
/// error) none of them.
pub fn apply_patch_owned(doc: &mut Value, patch: Patch) -> Result<(), PatchError> {
    apply_ops(doc, patch.into_ops())
}

fn apply_ops(doc: &mut Value, ops: impl IntoIterator<Item = Operation>) -> Result<(), PatchError> {
    let mut log = Vec::new();
    for (index, op) in ops.into_iter().enumerate() {
        if let Err(e) = apply_one(doc, index, op, &mut log) {
            rollback(doc, log);
            return Err(e);
        }
    }
    Ok(())
}

/// How a value came to be at a location, so it can be taken out again.
#[derive(Debug)]
enum Placed {
    /// It replaced this value (replace, add over an existing member, add at the root).
    Replaced(Value),
    /// It is a new object member.
    NewMember,
    /// It was inserted into an array at this index.
    NewElement(usize),
}

/// Where a removed value sat, so it can be put back exactly there.
#[derive(Debug)]
enum Removed {
    /// Object member at this position in key order.
    Member(usize),
    /// Array element at this index.
    Element(usize),
}

/// One step of the undo log. Entries own the operation's pointers, which are no longer needed
/// once the operation ran.
#[derive(Debug)]
enum Undo {
    Place {
        path: Pointer,
        placed: Placed,
    },
    Remove {
        path: Pointer,
        removed: Removed,
        value: Value,
    },
    Move {
        from: Pointer,
        removed: Removed,
        path: Pointer,
        placed: Placed,
    },
}

fn rollback(doc: &mut Value, log: Vec<Undo>) {
    for entry in log.into_iter().rev() {
        // Each entry reverses an operation that succeeded on the document as it is now (the
        // later ones are already reversed), so every location it names exists.
        let ok = match entry {
            Undo::Place { path, placed } => take_back(doc, &path, placed).is_some(),
            Undo::Remove {
                path,
                removed,
                value,
            } => put_back(doc, &path, removed, value),
            Undo::Move {
                from,
                removed,
                path,
                placed,
            } => take_back(doc, &path, placed)
                .is_some_and(|value| put_back(doc, &from, removed, value)),
        };
        debug_assert!(ok, "undo log does not match the document");
    }
}

fn take_back(doc: &mut Value, path: &Pointer, placed: Placed) -> Option<Value> {
    match placed {
        Placed::Replaced(old) => {
            let slot = walk_mut(doc, path.tokens()).ok()?;
            Some(std::mem::replace(slot, old))
        }
        Placed::NewMember => {
            let (parent, key) = path.split_last()?;
            walk_mut(doc, parent.tokens())
                .ok()?
                .as_object_mut()?
                .shift_remove(key.as_ref())
        }
        Placed::NewElement(i) => {
            let (parent, _) = path.split_last()?;
            let arr = walk_mut(doc, parent.tokens()).ok()?.as_array_mut()?;
            (i < arr.len()).then(|| arr.remove(i))
        }
    }
}

fn put_back(doc: &mut Value, path: &Pointer, removed: Removed, value: Value) -> bool {
    let Some((parent, key)) = path.split_last() else {
        return false;
    };
    let Ok(parent) = walk_mut(doc, parent.tokens()) else {
        return false;
    };
    match (parent, removed) {
        (Value::Object(map), Removed::Member(pos)) if pos <= map.len() => {
            map.shift_insert(pos, key.into_owned(), value);
            true
        }
        (Value::Array(arr), Removed::Element(i)) if i <= arr.len() => {
            arr.insert(i, value);
            true
        }
        _ => false,
    }
}

fn apply_one(
    doc: &mut Value,
    index: usize,
    op: Operation,
    log: &mut Vec<Undo>,
) -> Result<(), PatchError> {
    let fail = |pointer: &Pointer, f: Fail| f.into_error(index, pointer);
    match op {
        Operation::Add { path, value } => {
            let placed = add(doc, &path, value).map_err(|(f, _)| fail(&path, f))?;
            log.push(Undo::Place { path, placed });
        }
        Operation::Remove { path } => {
            let (value, removed) = remove(doc, &path).map_err(|f| fail(&path, f))?;
            log.push(Undo::Remove {
                path,
                removed,
                value,
            });
        }
        Operation::Replace { path, value } => {
            let slot = walk_mut(doc, path.tokens()).map_err(|f| fail(&path, f))?;
            let old = std::mem::replace(slot, value);
            log.push(Undo::Place {
                path,
                placed: Placed::Replaced(old),
            });
        }
        Operation::Move { from, path } => {
            if path == from {
                // RFC 6902 §4.4 is remove-then-add, which for an object member would move it to
                // the end of its object. Moving a value onto itself is defined as no change.
                walk(doc, from.tokens()).map_err(|f| fail(&from, f))?;
                return Ok(());
            }
            if path.is_proper_descendant_of(&from) {
                return Err(PatchError::new(
                    Some(index),
                    ErrorKind::MoveIntoSelf,
                    Some(from.as_str()),
                    format!(
                        "cannot move {} into its own child {}",
                        location(from.as_str()),
                        location(path.as_str())
                    ),
                ));
            }
            let (value, removed) = remove(doc, &from).map_err(|f| fail(&from, f))?;
            match add(doc, &path, value) {
                Ok(placed) => log.push(Undo::Move {
                    from,
                    removed,
                    path,
                    placed,
                }),
                Err((f, value)) => {
                    // Not logged yet: put the value back before reporting.
                    let ok = put_back(doc, &from, removed, value);
                    debug_assert!(ok, "could not undo the removal of a move");
                    return Err(fail(&path, f));
                }
            }
        }
        Operation::Copy { from, path } => {
            let value = walk(doc, from.tokens())
                .map_err(|f| fail(&from, f))?
                .clone();
            let placed = add(doc, &path, value).map_err(|(f, _)| fail(&path, f))?;
            log.push(Undo::Place { path, placed });
        }
        Operation::Test { path, value } => {
            let found = walk(doc, path.tokens()).map_err(|f| fail(&path, f))?;
            if !json_equal(found, &value) {
                return Err(PatchError::new(
                    Some(index),
                    ErrorKind::TestFailed,
                    Some(path.as_str()),
                    format!(
                        "the value at {} is {}, not {}",
                        location(path.as_str()),
                        preview(found),
                        preview(&value)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Adds `value` at `path` (RFC 6902 §4.1). On failure the value is handed back, so a `move`
/// can return it to where it came from.
fn add(doc: &mut Value, path: &Pointer, value: Value) -> Result<Placed, (Fail, Value)> {
    let Some((parent, last)) = path.split_last() else {
        return Ok(Placed::Replaced(std::mem::replace(doc, value)));
    };
    let target = match walk_mut(doc, parent.tokens()) {
        Ok(t) => t,
        Err(f) => return Err((f, value)),
    };
    let depth = parent.tokens().count();
    match target {
        Value::Object(map) => {
            if let Some(slot) = map.get_mut(last.as_ref()) {
                Ok(Placed::Replaced(std::mem::replace(slot, value)))
            } else {
                map.insert(last.into_owned(), value);
                Ok(Placed::NewMember)
            }
        }
        Value::Array(arr) => {
            let len = arr.len();
            let i = match array_index(&last) {
                Some(ArrayIndex::End) => len,
                Some(ArrayIndex::At(i)) if i <= len => i,
                Some(ArrayIndex::At(i)) => {
                    let f = Fail {
                        depth,
                        step: StepFail::PastEnd { index: i, len },
                    };
                    return Err((f, value));
                }
                None => {
                    let f = Fail {
                        depth,
                        step: StepFail::NotAnIndex(last.into_owned()),
                    };
                    return Err((f, value));
                }
            };
            arr.insert(i, value);
            Ok(Placed::NewElement(i))
        }
        other => Err((
            Fail {
                depth,
                step: StepFail::Scalar(type_name(other)),
            },
            value,
        )),
    }
}

/// Removes the value at `path` (RFC 6902 §4.2), reporting where it sat.
fn remove(doc: &mut Value, path: &Pointer) -> Result<(Value, Removed), Fail> {
    let Some((parent, last)) = path.split_last() else {
        return Err(Fail {
            depth: 0,
            step: StepFail::Root,
        });
    };
    let depth = parent.tokens().count();
    let target = walk_mut(doc, parent.tokens())?;
    let step = match target {
        Value::Object(map) => {
            // shift_remove keeps the other members in order (plain `remove` would swap the last
            // member into the hole); the position is what rollback needs.
            let found = map.keys().position(|k| *k == last);
            if let Some(pos) = found
                && let Some(v) = map.shift_remove(last.as_ref())
            {
                return Ok((v, Removed::Member(pos)));
            }
            StepFail::NoMember(last.into_owned())
        }
        Value::Array(arr) => match array_index(&last) {
            Some(ArrayIndex::At(i)) if i < arr.len() => {
                return Ok((arr.remove(i), Removed::Element(i)));
            }
            Some(ArrayIndex::At(i)) => StepFail::OutOfRange {
                index: i,
                len: arr.len(),
            },
            Some(ArrayIndex::End) => StepFail::Dash,
            None => StepFail::NotAnIndex(last.into_owned()),
        },
        other => StepFail::Scalar(type_name(other)),
    };
    Err(Fail { depth, step })
}

/// Why a pointer could not be followed, and after how many tokens.
#[derive(Debug)]
struct Fail {
    /// Number of tokens successfully followed before the failing one.
    depth: usize,
    step: StepFail,
}

#[derive(Debug)]
enum StepFail {
    NoMember(String),
    OutOfRange { index: usize, len: usize },
    PastEnd { index: usize, len: usize },
    Dash,
    NotAnIndex(String),
    Scalar(&'static str),
    Root,
}

impl Fail {
    fn into_error(self, op_index: usize, pointer: &Pointer) -> PatchError {
        let text = pointer.as_str();
        let at = location(prefix(text, self.depth));
        let (kind, reason) = match self.step {
            StepFail::NoMember(key) => (
                ErrorKind::PathNotFound,
                format!("the object at {at} has no member {key:?}"),
            ),
            StepFail::OutOfRange { index, len } => (
                ErrorKind::PathNotFound,
                format!("the array at {at} has no element {index} (its length is {len})"),
            ),
            StepFail::PastEnd { index, len } => (
                ErrorKind::InvalidIndex,
                format!("index {index} is past the end of the array at {at} (its length is {len})"),
            ),
            StepFail::Dash => (
                ErrorKind::PathNotFound,
                format!(
                    "'-' names the element after the last one of the array at {at}, which does \
                     not exist (only add, and the path of move and copy, may use it)"
                ),
            ),
            StepFail::NotAnIndex(token) => (
                ErrorKind::InvalidIndex,
                format!(
                    "{token:?} is not an array index (the value at {at} is an array; indices \
                     are 0 or digits without a leading zero)"
                ),
            ),
            StepFail::Scalar(type_name) => (
                ErrorKind::PathNotFound,
                format!("the value at {at} is {type_name}, which has no members"),
            ),
            StepFail::Root => (
                ErrorKind::InvalidPointer,
                "the whole document cannot be removed".to_owned(),
            ),
        };
        PatchError::new(Some(op_index), kind, Some(text), reason)
    }
}

/// The first `depth` tokens of a pointer, as text.
fn prefix(text: &str, depth: usize) -> &str {
    if depth == 0 {
        return "";
    }
    match text.match_indices('/').nth(depth) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

fn location(pointer: &str) -> String {
    if pointer.is_empty() {
        "the document root".to_owned()
    } else {
        format!("{pointer:?}")
    }
}

/// Follows one token from a container (RFC 6901 §4).
macro_rules! step {
    ($value:expr, $token:expr, $get:ident, $get_index:ident) => {
        match $value {
            Value::Object(map) => map
                .$get($token)
                .ok_or_else(|| StepFail::NoMember($token.to_owned())),
            Value::Array(arr) => {
                let len = arr.len();
                match array_index($token) {
                    Some(ArrayIndex::At(i)) => arr
                        .$get_index(i)
                        .ok_or(StepFail::OutOfRange { index: i, len }),
                    Some(ArrayIndex::End) => Err(StepFail::Dash),
                    None => Err(StepFail::NotAnIndex($token.to_owned())),
                }
            }
            other => Err(StepFail::Scalar(type_name(other))),
        }
    };
}

fn walk<'v, 't>(
    mut value: &'v Value,
    tokens: impl Iterator<Item = Cow<'t, str>>,
) -> Result<&'v Value, Fail> {
    for (depth, token) in tokens.enumerate() {
        value = step!(value, token.as_ref(), get, get).map_err(|step| Fail { depth, step })?;
    }
    Ok(value)
}

fn walk_mut<'v, 't>(
    mut value: &'v mut Value,
    tokens: impl Iterator<Item = Cow<'t, str>>,
) -> Result<&'v mut Value, Fail> {
    for (depth, token) in tokens.enumerate() {
        value =
            step!(value, token.as_ref(), get_mut, get_mut).map_err(|step| Fail { depth, step })?;
    }
    Ok(value)
}

/// JSON equality as RFC 6902 §4.6 defines it for `test`: numbers compare by value (`1` equals
/// `1.0`), object members regardless of order, arrays element by element.
pub(crate) fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// A short rendering of a value for error messages.
fn preview(v: &Value) -> String {
    const MAX: usize = 80;
    let s = v.to_string();
    if s.len() <= MAX {
        return s;
    }
    let mut cut = MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;

    fn patch(ops: Value) -> Patch {
        Patch::from_value(ops).unwrap()
    }

    fn bytes(v: &Value) -> String {
        serde_json::to_string(v).unwrap()
    }

    #[test]
    fn remove_keeps_member_order() {
        let mut doc = json!({"a": 1, "b": 2, "c": 3});
        apply_patch_owned(&mut doc, patch(json!([{"op": "remove", "path": "/a"}]))).unwrap();
        assert_eq!(bytes(&doc), r#"{"b":2,"c":3}"#);
    }

    #[test]
    fn failed_patch_restores_bytes_exactly() {
        let before = json!({"a": 1, "b": {"x": [1, 2, 3], "y": null}, "c": 3, "d": [0]});
        let mut doc = before.clone();
        let err = apply_patch_owned(
            &mut doc,
            patch(json!([
                {"op": "remove", "path": "/a"},
                {"op": "move", "from": "/b/x/0", "path": "/d/-"},
                {"op": "move", "from": "/b", "path": "/z"},
                {"op": "add", "path": "/c", "value": "new"},
                {"op": "copy", "from": "/d", "path": "/z/x/1"},
                {"op": "replace", "path": "", "value": {"whole": true}},
                {"op": "add", "path": "/whole2", "value": 1},
                {"op": "remove", "path": "/whole"},
                {"op": "test", "path": "/whole2", "value": 2}
            ])),
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::TestFailed);
        assert_eq!(err.op_index, Some(8));
        assert_eq!(bytes(&doc), bytes(&before));
    }

    #[test]
    fn failed_move_puts_the_value_back() {
        let before = json!({"a": 1, "b": 2, "c": 3});
        let mut doc = before.clone();
        let err = apply_patch(
            &mut doc,
            &patch(json!([{"op": "move", "from": "/a", "path": "/nope/x"}])),
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::PathNotFound);
        assert_eq!(err.path.as_deref(), Some("/nope/x"));
        assert_eq!(bytes(&doc), bytes(&before));
    }

    #[test]
    fn move_onto_itself_changes_nothing() {
        let mut doc = json!({"a": 1, "b": 2});
        apply_patch(
            &mut doc,
            &patch(json!([{"op": "move", "from": "/a", "path": "/a"}])),
        )
        .unwrap();
        assert_eq!(bytes(&doc), r#"{"a":1,"b":2}"#);
    }

    #[test]
    fn errors_name_index_kind_and_pointer() {
        let doc = json!({"foo": [1, 2], "s": "x"});
        let cases = [
            (
                json!({"op": "remove", "path": "/foo/2"}),
                ErrorKind::PathNotFound,
                "/foo/2",
            ),
            (
                json!({"op": "remove", "path": "/foo/-"}),
                ErrorKind::PathNotFound,
                "/foo/-",
            ),
            (
                json!({"op": "add", "path": "/foo/3", "value": 0}),
                ErrorKind::InvalidIndex,
                "/foo/3",
            ),
            (
                json!({"op": "add", "path": "/foo/01", "value": 0}),
                ErrorKind::InvalidIndex,
                "/foo/01",
            ),
            (
                json!({"op": "add", "path": "/s/x", "value": 0}),
                ErrorKind::PathNotFound,
                "/s/x",
            ),
            (
                json!({"op": "add", "path": "/a/b", "value": 0}),
                ErrorKind::PathNotFound,
                "/a/b",
            ),
            (
                json!({"op": "copy", "from": "/bar", "path": "/x"}),
                ErrorKind::PathNotFound,
                "/bar",
            ),
            (
                json!({"op": "move", "from": "/foo", "path": "/foo/0"}),
                ErrorKind::MoveIntoSelf,
                "/foo",
            ),
            (
                json!({"op": "test", "path": "/s", "value": "y"}),
                ErrorKind::TestFailed,
                "/s",
            ),
            (
                json!({"op": "remove", "path": ""}),
                ErrorKind::InvalidPointer,
                "",
            ),
        ];
        for (op, kind, path) in cases {
            let mut d = doc.clone();
            let e = apply_patch(
                &mut d,
                &patch(json!([{"op": "test", "path": "/s", "value": "x"}, op])),
            )
            .unwrap_err();
            assert_eq!(
                (e.op_index, e.kind, e.path.as_deref()),
                (Some(1), kind, Some(path)),
                "{e}"
            );
            assert_eq!(d, doc);
        }
    }

    #[test]
    fn reasons_name_the_missing_prefix() {
        let mut doc = json!({"q": {"bar": 2}});
        let e = apply_patch(
            &mut doc,
            &patch(json!([{"op": "add", "path": "/a/b", "value": 1}])),
        )
        .unwrap_err();
        assert_eq!(
            e.reason,
            r#"the object at the document root has no member "a""#
        );
        let e = apply_patch(
            &mut doc,
            &patch(json!([{"op": "remove", "path": "/q/bar/x"}])),
        )
        .unwrap_err();
        assert_eq!(
            e.reason,
            r#"the value at "/q/bar" is a number, which has no members"#
        );
    }

    #[test]
    fn test_compares_numbers_by_value() {
        assert!(json_equal(&json!(1), &json!(1.0)));
        assert!(json_equal(
            &json!({"a": [1, {"b": 2}]}),
            &json!({"a": [1.0, {"b": 2}]})
        ));
        assert!(!json_equal(&json!(1), &json!("1")));
        assert!(!json_equal(&json!(-1), &json!(18446744073709551615u64)));
        assert!(!json_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    }

    #[test]
    fn prefix_cuts_at_token_boundaries() {
        assert_eq!(prefix("/a/b/c", 0), "");
        assert_eq!(prefix("/a/b/c", 1), "/a");
        assert_eq!(prefix("/a/b/c", 2), "/a/b");
        assert_eq!(prefix("/a/b/c", 3), "/a/b/c");
    }

    /// Random patches over random documents: a failed patch leaves the exact bytes it found,
    /// and a successful one gives the same bytes as applying its operations one at a time.
    #[test]
    fn random_patches_are_atomic() {
        let mut seed = 0x853C_49E6_748F_EA9Bu64;
        let mut rand = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut failed, mut succeeded) = (0, 0);
        for _ in 0..3000 {
            let doc =
                json!({"a": {"x": 1, "y": [1, 2, {"z": null}], "w": "s"}, "b": [[], {}], "c": 3});
            let mut pointers = Vec::new();
            collect_pointers(&doc, String::new(), &mut pointers);
            pointers.extend([
                "/nope".into(),
                "/a/y/9".into(),
                "/b/-".into(),
                "/a/y/-".into(),
            ]);
            let names = ["add", "remove", "replace", "move", "copy", "test"];
            let ops: Vec<Value> = (0..1 + rand(6))
                .map(|_| {
                    let name = names[rand(names.len())];
                    let path = pointers[rand(pointers.len())].clone();
                    let from = pointers[rand(pointers.len())].clone();
                    let value =
                        [json!(1), json!({"k": [true]}), json!("s"), json!([])][rand(4)].clone();
                    json!({"op": name, "path": path, "from": from, "value": value})
                })
                .collect();
            let before = bytes(&doc);
            let mut whole = doc.clone();
            let result = apply_patch_owned(
                &mut whole,
                Patch::from_value(Value::Array(ops.clone())).unwrap(),
            );
            let mut stepwise = doc.clone();
            let stepwise_ok = ops.iter().all(|op| {
                apply_patch_owned(&mut stepwise, Patch::from_value(json!([op])).unwrap()).is_ok()
            });
            match result {
                Ok(()) => {
                    succeeded += 1;
                    assert!(stepwise_ok);
                    assert_eq!(bytes(&whole), bytes(&stepwise), "{ops:?}");
                }
                Err(_) => {
                    failed += 1;
                    assert!(!stepwise_ok);
                    assert_eq!(bytes(&whole), before, "rolled back: {ops:?}");
                }
            }
        }
        assert!(
            failed > 500 && succeeded > 500,
            "{failed} failed, {succeeded} succeeded"
        );
    }

    fn collect_pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    collect_pointers(v, format!("{at}/{k}"), out);
                }
            }
            Value::Array(arr) => {
                for (i, v) in arr.iter().enumerate() {
                    collect_pointers(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }
}
