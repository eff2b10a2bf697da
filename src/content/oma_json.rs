//! OMA LwM2M JSON (`application/vnd.oma.lwm2m+json`, 11543; LwM2M 1.0 Core §7.4.4):
//! `{"bn":"/3/0/","e":[{"n":"0","sv":"Open Mobile Alliance"},{"n":"9","v":95}]}`, each
//! value one of `v` (number), `sv` (string), `bv` (boolean) or `ov` (object link
//! `"A:B"`). Opaque values travel as base64 in `sv` and are decoded where the object
//! definition says Opaque.

use std::borrow::Cow;

use super::senml_json::{one_value, Capped};
use super::value::{parse_objlnk, Value};
use super::{format, push_entry, ContentError, Entry};
use crate::lwm2m::{Definitions, Path};

const F: u16 = format::OMA_JSON;

#[derive(serde::Deserialize)]
struct Document<'a> {
    #[serde(borrow, default)]
    bn: Option<Cow<'a, str>>,
    e: Capped<Record<'a>>,
}

#[derive(serde::Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    n: Option<Cow<'a, str>>,
    #[serde(default)]
    v: Option<serde_json::Number>,
    #[serde(borrow, default)]
    sv: Option<Cow<'a, str>>,
    #[serde(default)]
    bv: Option<bool>,
    #[serde(borrow, default)]
    ov: Option<Cow<'a, str>>,
}

/// Decodes an OMA JSON payload returned for `base`. Names are `bn` + `n`, joined by one
/// `/` whether or not `bn` ends with one (devices send `"bn":"/3/0"` as well as the
/// spec's `"/3/0/"`, and EMQX reads both); without `bn` they are relative to `base` (or
/// absolute when they start with `/`). Records without a value are skipped.
pub fn decode(
    payload: &[u8],
    base: &Path,
    registry: Definitions<'_>,
) -> Result<Vec<Entry>, ContentError> {
    let doc: Document<'_> =
        serde_json::from_slice(payload).map_err(|e| ContentError::invalid(F, e.to_string()))?;
    if doc.e.overflow {
        return Err(ContentError::TooManyEntries {
            format: format::name(F),
        });
    }
    let base_name = match &doc.bn {
        Some(bn) => bn.to_string(),
        None if base.depth() == 0 => "/".to_owned(),
        None => format!("{base}/"),
    };
    let mut entries = Vec::new();
    let mut name = String::new();
    for r in doc.e.items {
        let mut value = None;
        if let Some(v) = &r.v {
            one_value(&mut value, Value::from_json_number(v), F)?;
        }
        if let Some(sv) = r.sv {
            one_value(&mut value, Value::String(sv.into_owned()), F)?;
        }
        if let Some(bv) = r.bv {
            one_value(&mut value, Value::Boolean(bv), F)?;
        }
        if let Some(ov) = &r.ov {
            let (o, i) = parse_objlnk(ov)
                .ok_or_else(|| ContentError::invalid(F, "ov is not an object link A:B"))?;
            one_value(&mut value, Value::Objlnk(o, i), F)?;
        }
        let Some(value) = value else {
            continue;
        };
        let n = r.n.as_deref().unwrap_or("");
        name.clear();
        if doc.bn.is_some() || !n.starts_with('/') {
            name.push_str(&base_name);
        }
        if n.is_empty() {
            // The value of the base name itself.
        } else if name.is_empty() {
            name.push_str(n);
        } else {
            while name.ends_with('/') {
                name.pop();
            }
            name.push('/');
            name.push_str(n.trim_start_matches('/'));
        }
        let path = match Path::parse(&name) {
            Ok(p) if name.starts_with('/') && p.depth() >= 3 => p,
            _ => {
                return Err(ContentError::BadPath {
                    format: format::name(F),
                    name,
                })
            }
        };
        let kind = match (path.object(), path.resource()) {
            (Some(o), Some(r)) => registry.resource(o, r).map(|d| d.kind),
            _ => None,
        };
        push_entry(
            &mut entries,
            Entry {
                path,
                value: value.coerce(kind),
            },
            F,
        )?;
    }
    Ok(entries)
}
