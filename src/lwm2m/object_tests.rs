use super::*;

fn dir(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn object(id: u16, version: &str, kind: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<LWM2M><Object ObjectType="MODefinition"><Name>T</Name><ObjectID>{id}</ObjectID>
<ObjectVersion>{version}</ObjectVersion><MultipleInstances>Multiple</MultipleInstances>
<Resources><Item ID="1"><Name>V</Name><Operations>RW</Operations>
<MultipleInstances>Single</MultipleInstances><Mandatory>Mandatory</Mandatory><Type>{kind}</Type>
</Item></Resources></Object></LWM2M>"#
    )
}

/// The definitions shipped in `lwm2m_xml/` (the OMA registry, the default `xml_dir`): every
/// file loads, each object once, and the core objects read as the specification says.
#[test]
fn shipped_definitions_load() {
    let (reg, report) = Registry::load_dir_with_report(&dir("lwm2m_xml")).expect("lwm2m_xml loads");
    let skipped: Vec<String> = report.skipped.iter().map(|e| e.to_string()).collect();
    assert_eq!(skipped, Vec::<String>::new());
    assert!(report.without_definitions.is_empty(), "{report:?}");
    assert_eq!(report.definitions, report.files, "one object per file");
    assert_eq!(reg.len(), report.files, "no object ID twice");
    assert!(reg.len() >= 320, "{} objects", reg.len());
    assert_eq!(reg.older_versions(), 0);
    for id in [0, 1, 2, 3, 4, 5, 6, 7, 3303, 3311, 10262] {
        assert!(reg.get(id).is_some(), "/{id}");
    }
    assert_eq!(reg.get(3303).map(|d| d.version.as_str()), Some("1.1"));
    assert!(reg
        .iter()
        .flat_map(|d| &d.resources)
        .any(|r| r.kind == ResourceType::CoreLink));

    let device = reg.get(3).expect("/3");
    assert_eq!(device.name, "Device");
    assert!(!device.multiple);
    let manufacturer = device.resource(0).expect("/3/0/0");
    assert_eq!(manufacturer.name, "Manufacturer");
    assert_eq!(manufacturer.kind, ResourceType::String);
    assert_eq!(
        manufacturer.operations,
        Operations {
            read: true,
            write: false,
            execute: false
        }
    );
    let reboot = device.resource(4).expect("/3/0/4");
    assert_eq!(reboot.kind, ResourceType::None);
    assert!(reboot.operations.execute && reboot.mandatory);
    assert!(device.resource(11).expect("/3/0/11").multiple);
    assert_eq!(
        device.resource(13).map(|r| r.kind),
        Some(ResourceType::Time)
    );

    let temp = reg.resource(3303, 5700).expect("/3303/0/5700");
    assert_eq!(temp.kind, ResourceType::Float);
    assert!(temp.operations.read && !temp.operations.write);
    assert!(reg.get(3303).expect("/3303").multiple);
    assert_eq!(
        reg.resource(0, 0).map(|r| r.operations),
        Some(Operations::default())
    );
    assert_eq!(
        reg.resource(4, 0).map(|r| r.kind),
        Some(ResourceType::Integer)
    );
    assert_eq!(
        reg.resource(5, 0).map(|r| r.kind),
        Some(ResourceType::Opaque)
    );
    assert_eq!(
        reg.resource(1, 6).map(|r| r.kind),
        Some(ResourceType::Boolean)
    );
    assert_eq!(
        reg.resource(0, 13).map(|r| r.kind),
        Some(ResourceType::UnsignedInteger)
    );
    assert_eq!(
        reg.resource(0, 17).map(|r| r.kind),
        Some(ResourceType::Objlnk)
    );
    assert!(reg.resource(3, 9999).is_none() && reg.get(32000).is_none());
}

/// The registry's files that are not object definitions (its index, the common resources,
/// the SenML units) stayed in `tests/data/lwm2m_registry`: each parses to nothing, so a
/// directory of only these is empty, an error naming it.
#[test]
fn registry_extras_define_nothing() {
    let path = dir("tests/data/lwm2m_registry");
    let mut files = 0;
    for entry in std::fs::read_dir(&path).expect("dir") {
        let file = entry.expect("entry").path();
        if file.extension().is_some_and(|e| e == "xml") {
            let text = std::fs::read_to_string(&file).expect("read");
            let defs =
                parse_object_xml(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(defs.is_empty(), "{}", file.display());
            files += 1;
        }
    }
    assert_eq!(files, 3);
    let err = Registry::load_dir(&path).expect_err("nothing to load");
    assert!(matches!(err, ObjectError::Empty { .. }), "{err}");
    assert!(err.to_string().contains("lwm2m_registry"), "{err}");
}

#[test]
fn emqx_definitions_load() {
    let reg = Registry::load_dir(&dir("tests/data/lwm2m_xml_emqx")).expect("loads");
    let device = reg.get(3).expect("/3");
    assert_eq!(device.version, "1.0", "ObjectVersion absent means 1.0");
    assert_eq!(
        device.resource(0).map(|r| r.kind),
        Some(ResourceType::String)
    );
}

#[test]
fn highest_version_wins() {
    let parse = |v| {
        parse_object_xml(&object(9000, v, "Integer"))
            .expect("parse")
            .remove(0)
    };
    for defs in [
        [parse("1.0"), parse("1.10"), parse("1.2")],
        [parse("1.10"), parse("1.2"), parse("1.0")],
    ] {
        let reg = Registry::from_defs(defs);
        assert_eq!(reg.get(9000).map(|d| d.version.as_str()), Some("1.10"));
    }
}

#[test]
fn other_documents_define_nothing() {
    assert!(parse_object_xml("<units><title>x</title></units>")
        .expect("ok")
        .is_empty());
    let common = r#"<LWM2M><Object ObjectType="CommonResources"><Resources/></Object></LWM2M>"#;
    assert!(parse_object_xml(common).expect("ok").is_empty());
}

#[test]
fn invalid_definitions_are_errors() {
    assert!(matches!(
        parse_object_xml("<LWM2M><Object>"),
        Err(ObjectError::Xml(_))
    ));
    let err = parse_object_xml(&object(7, "1.0", "Decimal")).expect_err("type");
    assert_eq!(
        err.to_string(),
        r#"object 7: resource "1": unknown type "Decimal""#
    );
    let err = parse_object_xml(&object(7, "1.0", "Integer").replace("ID=\"1\"", "ID=\"x\""))
        .expect_err("id");
    assert!(err.to_string().contains("ID is not a number"), "{err}");
    let err = parse_object_xml(&object(7, "1.0", "Integer").replace(">7<", ">70000<"))
        .expect_err("object id");
    assert!(err.to_string().contains("70000"), "{err}");
}

#[test]
fn older_versions_stay_reachable() {
    let parse = |v| {
        parse_object_xml(&object(9000, v, "Integer"))
            .expect("parse")
            .remove(0)
    };
    let reg = Registry::from_defs([parse("1.1"), parse("1.0"), parse("1.2"), parse("1.0")]);
    assert_eq!(reg.len(), 1);
    assert_eq!(reg.older_versions(), 2, "1.0 once");
    for v in ["1.0", "1", "1.1", "1.2"] {
        let def = reg.get_version(9000, v).expect(v);
        assert_eq!(def.version_key(), ObjectDef::version_key(&parse(v)));
    }
    assert!(reg.get_version(9000, "2.0").is_none() && reg.get_version(9001, "1.0").is_none());
}

#[test]
fn a_named_older_version_types_that_devices_values() {
    let def = |v, kind| {
        parse_object_xml(&object(3303, v, kind))
            .expect("parse")
            .remove(0)
    };
    let reg = Registry::from_defs([def("1.1", "Float"), def("1.0", "String")]);
    let kind = |pins: &[VersionPin]| {
        Definitions::new(&reg, pins)
            .resource(3303, 1)
            .map(|r| r.kind)
    };
    assert_eq!(kind(&reg.pins([(3303, "1.0")])), Some(ResourceType::String));
    assert_eq!(kind(&reg.pins([(3303, "1")])), Some(ResourceType::String));
    // The serving version, one the registry lacks, and unknown objects pin nothing.
    for named in [(3303, "1.1"), (3303, "2.0"), (3304, "1.0")] {
        let pins = reg.pins([named]);
        assert!(pins.is_empty(), "{named:?}");
        assert_eq!(kind(&pins), Some(ResourceType::Float), "{named:?}");
    }
    assert_eq!(
        Definitions::from(&reg).resource(3303, 1).map(|r| r.kind),
        Some(ResourceType::Float)
    );
    // An object named twice: the first `ver` counts.
    assert_eq!(reg.pins([(3303, "1.0"), (3303, "1.0")]).len(), 1);
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("lwm2m-object-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("mkdir");
        TempDir(path)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.join(name), text).expect("write");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn broken_files_are_skipped_and_reported() {
    let tmp = TempDir::new("broken");
    tmp.write("9001.xml", &object(9001, "1.1", "Float"));
    tmp.write("9001_1_0.xml", &object(9001, "1.0", "Integer"));
    tmp.write("9002.xml", &object(9002, "1.0", "Boolean"));
    tmp.write("bad_type.xml", &object(9003, "1.0", "Nope"));
    tmp.write("malformed.xml", "<LWM2M><Object>");
    tmp.write(
        "no_id.xml",
        &object(9004, "1.0", "Integer").replace("<ObjectID>9004</ObjectID>", ""),
    );
    tmp.write("units.xml", "<units><title>x</title></units>");
    tmp.write("notes.txt", "ignored");
    std::fs::create_dir(tmp.0.join("sub.xml")).expect("a directory named like a file");

    let (reg, report) = Registry::load_dir_with_report(&tmp.0).expect("good files load");
    assert_eq!(report.files, 7);
    assert_eq!(report.definitions, 3);
    assert_eq!(report.without_definitions, [tmp.0.join("units.xml")]);
    let skipped: Vec<String> = report.skipped.iter().map(|e| e.to_string()).collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    for (file, reason) in [
        (
            "bad_type.xml",
            r#"object 9003: resource "1": unknown type "Nope""#,
        ),
        ("malformed.xml", "not well-formed XML"),
        ("no_id.xml", "object ?: no ObjectID"),
    ] {
        assert!(
            skipped
                .iter()
                .any(|s| s.contains(file) && s.contains(reason)),
            "{file}: {skipped:?}"
        );
    }
    let mut ids: Vec<u16> = reg.iter().map(|d| d.id).collect();
    ids.sort();
    assert_eq!(ids, [9001, 9002]);
    assert_eq!(
        reg.resource(9001, 1).map(|r| r.kind),
        Some(ResourceType::Float)
    );
    assert_eq!(
        reg.get_version(9001, "1.0")
            .and_then(|d| d.resource(1))
            .map(|r| r.kind),
        Some(ResourceType::Integer)
    );
}

#[test]
fn empty_or_missing_dir_is_an_error_naming_it() {
    let tmp = TempDir::new("empty");
    tmp.write("notes.txt", "no xml here");
    let empty = Registry::load_dir(&tmp.0).expect_err("empty dir");
    assert!(matches!(empty, ObjectError::Empty { .. }), "{empty}");
    assert!(empty.to_string().contains("lwm2m-object-empty"), "{empty}");
    tmp.write("bad.xml", "<LWM2M><Object>");
    let all_broken = Registry::load_dir(&tmp.0).expect_err("nothing loadable");
    assert!(
        matches!(all_broken, ObjectError::Empty { .. }),
        "{all_broken}"
    );
    let missing_path = tmp.0.join("missing");
    let missing = Registry::load_dir(&missing_path).expect_err("missing dir");
    assert!(matches!(missing, ObjectError::Io { .. }), "{missing}");
    assert!(missing.to_string().contains("missing"), "{missing}");
}
