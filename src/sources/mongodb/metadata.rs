//! `<coll>.metadata.json`: a collection's or view's options and indexes as mongodump writes
//! them, in canonical Extended JSON v2, checked on writing to parse back to identical BSON.
use bson::{Bson, Document, doc};

/// What `listCollections` and `listIndexes` said about one namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct CollMeta {
    pub name: String,
    /// `collection`, `view` or `timeseries`.
    pub kind: String,
    pub options: Document,
    /// The `_id` index as `listCollections` reports it (absent for views).
    pub id_index: Option<Document>,
    pub indexes: Vec<Document>,
    pub uuid: Option<String>,
}

impl CollMeta {
    pub(crate) fn is_view(&self) -> bool {
        self.kind == "view"
    }

    fn to_document(&self) -> Document {
        let mut d = doc! {
            "indexes": self.indexes.clone(),
            "collectionName": &self.name,
            "type": &self.kind,
            "options": self.options.clone(),
        };
        if let Some(uuid) = &self.uuid {
            d.insert("uuid", uuid);
        }
        if let Some(id) = &self.id_index {
            d.insert("idIndex", id.clone());
        }
        d
    }

    /// Canonical Extended JSON, or an error if it would not read back bit-exact.
    pub(crate) fn to_json(&self) -> Result<Vec<u8>, String> {
        let d = self.to_document();
        let json = Bson::Document(d.clone()).into_canonical_extjson();
        let text = serde_json::to_vec(&json).map_err(|e| e.to_string())?;
        let back = parse_document(&text)?;
        match bson_bytes(&back)? == bson_bytes(&d)? {
            true => Ok(text),
            false => Err("Extended JSON does not round-trip to the same BSON".into()),
        }
    }

    pub(crate) fn from_json(text: &[u8]) -> Result<CollMeta, String> {
        let d = parse_document(text)?;
        let name = d.get_str("collectionName").map_err(|e| e.to_string())?;
        let docs = |key: &str| -> Vec<Document> {
            d.get_array(key)
                .map(|a| a.iter().filter_map(|b| b.as_document().cloned()).collect())
                .unwrap_or_default()
        };
        Ok(CollMeta {
            name: name.to_string(),
            kind: d.get_str("type").unwrap_or("collection").to_string(),
            options: d.get_document("options").cloned().unwrap_or_default(),
            id_index: d.get_document("idIndex").ok().cloned(),
            indexes: docs("indexes"),
            uuid: d.get_str("uuid").ok().map(str::to_string),
        })
    }
}

fn parse_document(text: &[u8]) -> Result<Document, String> {
    let value: serde_json::Value = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    match Bson::try_from(value).map_err(|e| e.to_string())? {
        Bson::Document(d) => Ok(d),
        other => Err(format!(
            "expected a document, found {:?}",
            other.element_type()
        )),
    }
}

fn bson_bytes(d: &Document) -> Result<Vec<u8>, String> {
    d.to_vec().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{Decimal128, Regex, Timestamp};

    #[test]
    fn metadata_round_trips_exactly() {
        let m = CollMeta {
            name: "events".into(),
            kind: "collection".into(),
            options: doc! {
                "capped": true, "size": 4096_i64, "max": 10,
                "validator": {"$and": [{"n": {"$type": "int"}}, {"r": Regex{pattern: "^a".try_into().unwrap(), options: "i".try_into().unwrap()}}]},
                "collation": {"locale": "fr", "strength": 2},
                "neg": -0.0, "d": Decimal128::from_bytes([1; 16]), "ts": Timestamp{time: 0, increment: 0},
            },
            id_index: Some(doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}),
            indexes: vec![
                doc! {"v": 2, "key": {"b": -1, "a": 1}, "name": "b_-1_a_1", "unique": true},
            ],
            uuid: Some("00ff".into()),
        };
        let json = m.to_json().unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains(r#""$numberInt":"10""#), "{text}");
        assert!(
            text.find(r#""b""#) < text.find(r#""a""#),
            "key order kept: {text}"
        );
        assert_eq!(CollMeta::from_json(&json).unwrap(), m);
        assert!(CollMeta::from_json(b"{\"x\": 1}").is_err());
        assert!(CollMeta::from_json(b"not json").is_err());
    }
}
