//! mongod's `$v:2` update diffs applied to a document here rather than by the server: for
//! diffs naming a field that no `$set`/`$unset` path can address (a name with a dot or a
//! leading `$`), the replayed update becomes a replacement of the whole document.
use bson::{Bson, Document};

/// Whether `diff` names a field that a dotted update path would misread.
pub(crate) fn has_unaddressable_names(diff: &Document) -> bool {
    diff.iter().any(|(k, v)| match (k.as_str(), v) {
        ("u" | "i" | "d", Bson::Document(fields)) => fields.keys().any(|f| unaddressable(f)),
        (k, Bson::Document(sub)) if k.starts_with('s') => {
            unaddressable(&k[1..]) || has_unaddressable_names(sub)
        }
        _ => false,
    })
}

fn unaddressable(name: &str) -> bool {
    name.contains('.') || name.starts_with('$')
}

/// Applies a document diff: `d` removes fields, `u` updates them where they are, `i` adds
/// them at the end, `s<name>` descends into a sub-document or array.
pub(crate) fn apply(doc: &mut Document, diff: &Document) {
    for (k, v) in diff {
        match (k.as_str(), v) {
            ("d", Bson::Document(fields)) => fields.keys().for_each(|f| {
                doc.remove(f);
            }),
            ("u" | "i", Bson::Document(fields)) => fields.iter().for_each(|(f, val)| {
                doc.insert(f.clone(), val.clone());
            }),
            (k, Bson::Document(sub)) if k.starts_with('s') => {
                if let Some(child) = doc.get_mut(&k[1..]) {
                    apply_to(child, sub);
                }
            }
            _ => {}
        }
    }
}

fn apply_to(value: &mut Bson, diff: &Document) {
    match value {
        Bson::Document(d) => apply(d, diff),
        Bson::Array(a) => apply_array(a, diff),
        _ => {}
    }
}

/// An array diff (`a: true`): `l` sets the length, `u<i>` sets an element, `s<i>` descends.
fn apply_array(arr: &mut Vec<Bson>, diff: &Document) {
    for (k, v) in diff {
        if k == "l" {
            let len = v.as_i64().or(v.as_i32().map(i64::from)).unwrap_or(0);
            arr.resize(len.max(0) as usize, Bson::Null);
            continue;
        }
        let (kind, index) = k.split_at(1.min(k.len()));
        let Ok(i) = index.parse::<usize>() else {
            continue;
        };
        match (kind, v) {
            ("u", val) => {
                if arr.len() <= i {
                    arr.resize(i + 1, Bson::Null);
                }
                arr[i] = val.clone();
            }
            ("s", Bson::Document(sub)) => {
                if let Some(child) = arr.get_mut(i) {
                    apply_to(child, sub);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn dotted_and_dollar_names_are_applied_as_names() {
        let mut d = doc! {"_id": 1, "a.b": 1, "a": {"b": 2}, "$x": 0, "keep": true, "arr": [1, {"c.d": 1}, 3]};
        let diff = doc! {
            "d": {"keep": false},
            "u": {"a.b": 10},
            "i": {"new.field": "n"},
            "s$x": {},
            "sarr": {"a": true, "l": 2, "s1": {"u": {"c.d": 5}}},
        };
        assert!(has_unaddressable_names(&diff));
        apply(&mut d, &diff);
        assert_eq!(
            d,
            doc! {"_id": 1, "a.b": 10, "a": {"b": 2}, "$x": 0, "arr": [1, {"c.d": 5}], "new.field": "n"}
        );
    }

    #[test]
    fn plain_names_keep_the_update_path_and_arrays_grow_with_nulls() {
        let diff = doc! {"u": {"x": 1}, "sarr": {"a": true, "u4": "e"}};
        assert!(!has_unaddressable_names(&diff));
        let mut d = doc! {"x": 0, "arr": [1]};
        apply(&mut d, &diff);
        assert_eq!(
            d,
            doc! {"x": 1, "arr": [1, Bson::Null, Bson::Null, Bson::Null, "e"]}
        );
    }
}
