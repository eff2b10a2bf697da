//! Object definitions: the OMA LwM2M object XML files (LWM2M.xsd shape) in `xml_dir`,
//! loaded once at start and used to type resource values.
//!
//! One object may be defined in several versions (the registry's `version_history`
//! files, `3303_1_0.xml` beside `3303.xml`): the highest version *serves*, typing the
//! values of every device that names no other. A device whose object list names another
//! version the registry defines (`</3303>;ver=1.0`) has its values of that object typed by
//! that version: its [`VersionPin`]s, resolved once per object list
//! ([`Registry::pins`]), make the [`Definitions`] its payloads are decoded with. A version
//! the registry lacks falls back to the serving one. A file that does not parse is skipped
//! and reported, never fatal.

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
    /// A directory held no object definition (no `*.xml` file, or none that loaded).
    #[error("{}: no object definitions (no loadable *.xml file)", path.display())]
    Empty {
        /// The directory.
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
        version_key(&self.version)
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

/// Reads and parses one file; errors name the file.
fn read_definitions(path: &FsPath) -> Result<Vec<ObjectDef>, ObjectError> {
    let in_file = |source: ObjectError| ObjectError::InFile {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let io_err = |source| ObjectError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io_err)?.len();
    if size > MAX_XML_FILE_SIZE {
        return Err(ObjectError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io_err)?;
    parse_object_xml(&text).map_err(in_file)
}

/// What [`Registry::load_dir_with_report`] made of a directory's files.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// `*.xml` files read.
    pub files: usize,
    /// Object definitions parsed, the superseded ones included.
    pub definitions: usize,
    /// Files that hold no object definition (an index, a list of common resources or
    /// units); they are not errors.
    pub without_definitions: Vec<PathBuf>,
    /// Files skipped because they could not be read or parsed; each error names its file.
    pub skipped: Vec<ObjectError>,
}

/// Object definitions by object ID: the highest version of each serves
/// ([`get`](Registry::get)); the other versions stay reachable by
/// [`get_version`](Registry::get_version).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    objects: HashMap<u16, ObjectDef, ahash::RandomState>,
    /// Lower versions of an object defined by more than one file, highest first.
    older: HashMap<u16, Vec<ObjectDef>, ahash::RandomState>,
}

/// An object a device registered in a version other than the serving one, which the
/// registry defines: values of `object` are typed by that older definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionPin {
    object: u16,
    /// Index into the registry's older versions of `object`.
    index: u16,
}

/// The object definitions one device's values are typed by: the registry's serving
/// versions, except the objects its [`VersionPin`]s name. Copied by value; a device that
/// pins nothing costs the decoders one empty-slice check per lookup.
#[derive(Debug, Clone, Copy)]
pub struct Definitions<'a> {
    registry: &'a Registry,
    pins: &'a [VersionPin],
}

impl<'a> Definitions<'a> {
    /// `registry` with `pins` (from [`Registry::pins`] of the same registry).
    pub fn new(registry: &'a Registry, pins: &'a [VersionPin]) -> Definitions<'a> {
        Definitions { registry, pins }
    }

    /// The definition of an object, in the version this device's values are typed by.
    pub fn get(self, id: u16) -> Option<&'a ObjectDef> {
        match self.pins.iter().find(|p| p.object == id) {
            Some(pin) => self.registry.older.get(&id)?.get(usize::from(pin.index)),
            None => self.registry.get(id),
        }
    }

    /// The definition of a resource, in the version this device's values are typed by.
    pub fn resource(self, object: u16, resource: u16) -> Option<&'a ResourceDef> {
        self.get(object)?.resource(resource)
    }
}

impl<'a> From<&'a Registry> for Definitions<'a> {
    /// The serving versions only.
    fn from(registry: &'a Registry) -> Definitions<'a> {
        Definitions::new(registry, &[])
    }
}

impl<'a> From<&'a std::sync::Arc<Registry>> for Definitions<'a> {
    /// The serving versions only.
    fn from(registry: &'a std::sync::Arc<Registry>) -> Definitions<'a> {
        Definitions::new(registry, &[])
    }
}

/// `major.minor` as a comparable pair; unreadable parts count as 0.
fn version_key(version: &str) -> (u32, u32) {
    let (major, minor) = version.split_once('.').unwrap_or((version, "0"));
    (major.parse().unwrap_or(0), minor.parse().unwrap_or(0))
}

impl Registry {
    /// Loads every `*.xml` file of a directory as [`Registry::load_dir_with_report`] does,
    /// without the report (its skipped files were logged).
    pub fn load_dir(dir: &FsPath) -> Result<Registry, ObjectError> {
        Registry::load_dir_with_report(dir).map(|(registry, _)| registry)
    }

    /// Loads every `*.xml` file of a directory (not its subdirectories), in name order so
    /// that the outcome does not depend on the file system. A file that cannot be read or
    /// parsed is logged with its reason and skipped; the directory is an error only when
    /// it cannot be listed or yields no definition at all. When an object ID is defined
    /// more than once the highest `ObjectVersion` serves; of two equal versions the file
    /// first in name order.
    pub fn load_dir_with_report(dir: &FsPath) -> Result<(Registry, LoadReport), ObjectError> {
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
                && path.is_file()
            {
                files.push(path);
            }
        }
        files.sort();
        let mut registry = Registry::default();
        let mut report = LoadReport {
            files: files.len(),
            ..LoadReport::default()
        };
        for path in files {
            match read_definitions(&path) {
                Ok(defs) if defs.is_empty() => {
                    tracing::debug!(file = %path.display(), "no object definitions in file");
                    report.without_definitions.push(path);
                }
                Ok(defs) => {
                    report.definitions += defs.len();
                    for def in defs {
                        registry.insert(def, &path);
                    }
                }
                Err(e) => {
                    tracing::warn!("skipping object definition file {e}");
                    report.skipped.push(e);
                }
            }
        }
        if registry.is_empty() {
            return Err(ObjectError::Empty {
                path: dir.to_path_buf(),
            });
        }
        Ok((registry, report))
    }

    /// Adds a definition. The higher version of two with the same ID serves and the lower
    /// is kept as an older version; of two equal versions the one added first stays.
    fn insert(&mut self, def: ObjectDef, file: &FsPath) {
        let Some(serving) = self.objects.get_mut(&def.id) else {
            self.objects.insert(def.id, def);
            return;
        };
        let (serving_key, new_key) = (serving.version_key(), def.version_key());
        if serving_key == new_key
            || self
                .older
                .get(&def.id)
                .is_some_and(|o| o.iter().any(|d| d.version_key() == new_key))
        {
            tracing::warn!(
                object = def.id,
                version = %def.version,
                file = %file.display(),
                "object version defined twice; keeping the first"
            );
            return;
        }
        let older = if new_key > serving_key {
            tracing::info!(
                object = def.id,
                serving = %def.version,
                older = %serving.version,
                file = %file.display(),
                "object defined in two versions; the higher serves"
            );
            std::mem::replace(serving, def)
        } else {
            tracing::info!(
                object = def.id,
                serving = %serving.version,
                older = %def.version,
                file = %file.display(),
                "object defined in two versions; the higher serves"
            );
            def
        };
        let versions = self.older.entry(older.id).or_default();
        versions.push(older);
        versions.sort_by_key(|d| std::cmp::Reverse(d.version_key()));
    }

    /// The definition of `object` in exactly `version` (`"1.0"` and `"1"` are the same):
    /// the serving one or an older one; `None` when no file defines that version.
    pub fn get_version(&self, object: u16, version: &str) -> Option<&ObjectDef> {
        let key = version_key(version);
        let serving = self.objects.get(&object)?;
        if serving.version_key() == key {
            return Some(serving);
        }
        self.older
            .get(&object)?
            .iter()
            .find(|d| d.version_key() == key)
    }

    /// The pins of a device that names `(object, version)` pairs (its object list's `ver`
    /// attributes): one per object named in a version other than the serving one that the
    /// registry defines; a version it lacks, or the serving one, pins nothing.
    pub fn pins<'v>(&self, named: impl IntoIterator<Item = (u16, &'v str)>) -> Box<[VersionPin]> {
        let mut pins: Vec<VersionPin> = Vec::new();
        for (object, version) in named {
            let key = version_key(version);
            let serving = self.objects.get(&object).map(ObjectDef::version_key);
            if serving.is_none_or(|s| s == key) || pins.iter().any(|p| p.object == object) {
                continue;
            }
            let older = self.older.get(&object).map_or(&[][..], Vec::as_slice);
            if let Some(index) = older.iter().position(|d| d.version_key() == key) {
                pins.push(VersionPin {
                    object,
                    index: u16::try_from(index).unwrap_or(u16::MAX),
                });
            }
        }
        pins.into_boxed_slice()
    }

    /// Number of object definitions kept beside the serving ones (lower versions).
    pub fn older_versions(&self) -> usize {
        self.older.values().map(Vec::len).sum()
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
