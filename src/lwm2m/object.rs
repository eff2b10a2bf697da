//! Object definitions: the OMA LwM2M object XML files (LWM2M.xsd shape) in `xml_dir`,
//! loaded once at start and used to type resource values.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};

/// Largest object definition file read: the biggest registry file is under 200 KiB, and a
/// bound keeps a mistaken `xml_dir` (say, one holding a disk image) from exhausting memory.
pub const MAX_XML_FILE_SIZE: u64 = 4 * 1024 * 1024;

/// Why object definitions could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The text is not well-formed XML.
    #[error("not well-formed XML: {0}")]
    Xml(#[from] roxmltree::Error),
    /// An object or resource definition is incomplete or holds an invalid value.
    #[error("object {object}: {reason}")]
    Invalid {
        /// The object ID, or `?` when it could not be read.
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// A directory or file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is larger than [`MAX_XML_FILE_SIZE`].
    #[error("{}: larger than {MAX_XML_FILE_SIZE} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A file's content is invalid; `source` says how.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<ObjectError>,
    },
}

/// The data type of a resource (`<Type>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceType {
    /// UTF-8 text.
    String,
    /// Signed integer.
    Integer,
    /// Unsigned integer.
    UnsignedInteger,
    /// Floating point number.
    Float,
    /// Boolean.
    Boolean,
    /// Opaque bytes.
    Opaque,
    /// Seconds since the Unix epoch.
    Time,
    /// Object link `ObjectID:InstanceID`.
    Objlnk,
    /// CoRE link format text.
    CoreLink,
    /// No value (executable resources).
    None,
}

impl ResourceType {
    /// Parses a `<Type>` value; `None` for an unknown type.
    pub fn parse(s: &str) -> Option<ResourceType> {
        Some(match s {
            "String" => ResourceType::String,
            "Integer" => ResourceType::Integer,
            "Unsigned Integer" => ResourceType::UnsignedInteger,
            "Float" => ResourceType::Float,
            "Boolean" => ResourceType::Boolean,
            "Opaque" => ResourceType::Opaque,
            "Time" => ResourceType::Time,
            "Objlnk" => ResourceType::Objlnk,
            "Corelnk" => ResourceType::CoreLink,
            "" => ResourceType::None,
            _ => return None,
        })
    }
}

/// Operations a resource allows (`<Operations>`: `R`, `W`, `RW`, `E`, or empty for
/// resources only the bootstrap server touches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Operations {
    /// Read (and observe).
    pub read: bool,
    /// Write.
    pub write: bool,
    /// Execute.
    pub execute: bool,
}

impl Operations {
    /// Parses an `<Operations>` value; `None` for letters other than R, W, E.
    pub fn parse(s: &str) -> Option<Operations> {
        let mut ops = Operations::default();
        for c in s.chars() {
            match c {
                'R' => ops.read = true,
                'W' => ops.write = true,
                'E' => ops.execute = true,
                _ => return None,
            }
        }
        Some(ops)
    }
}

/// One resource of an object definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDef {
    /// Resource ID.
    pub id: u16,
    /// Human-readable name.
    pub name: String,
    /// Allowed operations.
    pub operations: Operations,
    /// The resource has multiple instances.
    pub multiple: bool,
    /// Clients must implement it.
    pub mandatory: bool,
    /// Value type.
    pub kind: ResourceType,
}

/// One object definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDef {
    /// Object ID.
    pub id: u16,
    /// Human-readable name.
    pub name: String,
    /// `<ObjectVersion>`, `"1.0"` when absent.
    pub version: String,
    /// The object may have multiple instances.
    pub multiple: bool,
    /// Resources sorted by ID.
    pub resources: Vec<ResourceDef>,
}

impl ObjectDef {
    /// The resource with this ID.
    pub fn resource(&self, id: u16) -> Option<&ResourceDef> {
        self.resources
            .binary_search_by_key(&id, |r| r.id)
            .ok()
            .and_then(|i| self.resources.get(i))
    }

    /// The version as (major, minor) for comparison; unreadable parts count as 0.
    pub fn version_key(&self) -> (u32, u32) {
        let (major, minor) = self.version.split_once('.').unwrap_or((&self.version, "0"));
        (major.parse().unwrap_or(0), minor.parse().unwrap_or(0))
    }
}

/// Parses one object definition document. Documents of another kind (no `LWM2M` root)
/// and objects that are not `MODefinition`s (e.g. the registry's common resources) give
/// no definitions.
pub fn parse_object_xml(text: &str) -> Result<Vec<ObjectDef>, ObjectError> {
    let doc = roxmltree::Document::parse(text)?;
    let root = doc.root_element();
    if root.tag_name().name() != "LWM2M" {
        return Ok(Vec::new());
    }
    let mut objects = Vec::new();
    for obj in root.children().filter(|n| n.has_tag_name("Object")) {
        if obj
            .attribute("ObjectType")
            .is_some_and(|t| t != "MODefinition")
        {
            continue;
        }
        objects.push(parse_object(obj)?);
    }
    Ok(objects)
}

fn child_text<'a>(node: roxmltree::Node<'a, '_>, tag: &str) -> Option<&'a str> {
    node.children()
        .find(|n| n.has_tag_name(tag))
        .map(|n| n.text().unwrap_or("").trim())
}

fn parse_object(obj: roxmltree::Node<'_, '_>) -> Result<ObjectDef, ObjectError> {
    let invalid = |object: &str, reason: String| ObjectError::Invalid {
        object: object.to_owned(),
        reason,
    };
    let id_text = child_text(obj, "ObjectID").ok_or_else(|| invalid("?", "no ObjectID".into()))?;
    let id: u16 = id_text.parse().map_err(|_| {
        invalid(
            "?",
            format!("ObjectID {id_text:?} is not a number in 0..=65535"),
        )
    })?;
    let object = id.to_string();
    let multiple = parse_instances(child_text(obj, "MultipleInstances")).ok_or_else(|| {
        invalid(
            &object,
            "MultipleInstances is not Single or Multiple".into(),
        )
    })?;
    let mut resources = Vec::new();
    let items = obj
        .children()
        .filter(|n| n.has_tag_name("Resources"))
        .flat_map(|r| r.children().filter(|n| n.has_tag_name("Item")));
    for item in items {
        let rid = item.attribute("ID").unwrap_or("");
        let res_invalid = |what: &str| invalid(&object, format!("resource {rid:?}: {what}"));
        let kind_text = child_text(item, "Type").unwrap_or("");
        let ops_text = child_text(item, "Operations").unwrap_or("");
        resources.push(ResourceDef {
            id: rid
                .parse()
                .map_err(|_| res_invalid("ID is not a number in 0..=65535"))?,
            name: child_text(item, "Name").unwrap_or("").to_owned(),
            operations: Operations::parse(ops_text)
                .ok_or_else(|| res_invalid(&format!("unknown operations {ops_text:?}")))?,
            multiple: parse_instances(child_text(item, "MultipleInstances"))
                .ok_or_else(|| res_invalid("MultipleInstances is not Single or Multiple"))?,
            mandatory: child_text(item, "Mandatory") == Some("Mandatory"),
            kind: ResourceType::parse(kind_text)
                .ok_or_else(|| res_invalid(&format!("unknown type {kind_text:?}")))?,
        });
    }
    resources.sort_by_key(|r| r.id);
    if let Some(pair) = resources.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(invalid(
            &object,
            format!("resource {} defined twice", pair[0].id),
        ));
    }
    Ok(ObjectDef {
        id,
        name: child_text(obj, "Name").unwrap_or("").to_owned(),
        version: child_text(obj, "ObjectVersion")
            .filter(|v| !v.is_empty())
            .unwrap_or("1.0")
            .to_owned(),
        multiple,
        resources,
    })
}

fn parse_instances(text: Option<&str>) -> Option<bool> {
    match text? {
        "Multiple" => Some(true),
        "Single" => Some(false),
        _ => None,
    }
}

/// Object definitions by object ID.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    objects: HashMap<u16, ObjectDef, ahash::RandomState>,
}

impl Registry {
    /// Loads every `*.xml` file of a directory (in name order). When an object ID is
    /// defined more than once the highest `ObjectVersion` is kept.
    pub fn load_dir(dir: &FsPath) -> Result<Registry, ObjectError> {
        let io_err = |path: &FsPath| {
            let path = path.to_path_buf();
            move |source| ObjectError::Io { path, source }
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("xml"))
            {
                files.push(path);
            }
        }
        files.sort();
        let mut registry = Registry::default();
        for path in files {
            let size = std::fs::metadata(&path).map_err(io_err(&path))?.len();
            if size > MAX_XML_FILE_SIZE {
                return Err(ObjectError::TooLarge { path });
            }
            let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
            let defs = parse_object_xml(&text).map_err(|e| ObjectError::InFile {
                path: path.clone(),
                source: Box::new(e),
            })?;
            if defs.is_empty() {
                tracing::debug!(file = %path.display(), "no object definitions in file");
            }
            for def in defs {
                registry.insert(def, &path);
            }
        }
        Ok(registry)
    }

    /// Adds a definition; of two with the same ID the higher version stays (the earlier
    /// one on a tie).
    fn insert(&mut self, def: ObjectDef, file: &FsPath) {
        match self.objects.get(&def.id) {
            Some(old) if old.version_key() >= def.version_key() => {
                tracing::info!(
                    object = def.id,
                    kept = %old.version,
                    ignored = %def.version,
                    file = %file.display(),
                    "object defined twice; keeping the higher version"
                );
            }
            Some(old) => {
                tracing::info!(
                    object = def.id,
                    kept = %def.version,
                    ignored = %old.version,
                    file = %file.display(),
                    "object defined twice; keeping the higher version"
                );
                self.objects.insert(def.id, def);
            }
            None => {
                self.objects.insert(def.id, def);
            }
        }
    }

    /// Builds a registry from definitions (tests, embedded defaults).
    pub fn from_defs(defs: impl IntoIterator<Item = ObjectDef>) -> Registry {
        let mut registry = Registry::default();
        for def in defs {
            registry.insert(def, FsPath::new("<memory>"));
        }
        registry
    }

    /// The definition of an object.
    pub fn get(&self, id: u16) -> Option<&ObjectDef> {
        self.objects.get(&id)
    }

    /// The definition of a resource.
    pub fn resource(&self, object: u16, resource: u16) -> Option<&ResourceDef> {
        self.get(object)?.resource(resource)
    }

    /// Number of objects defined.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when no objects are defined.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// All definitions, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &ObjectDef> {
        self.objects.values()
    }
}

#[cfg(test)]
#[path = "object_tests.rs"]
mod tests;
