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

#[test]
fn project_definitions_load() {
    let reg = Registry::load_dir(&dir("lwm2m_xml")).expect("lwm2m_xml loads");
    let mut ids: Vec<u16> = reg.iter().map(|d| d.id).collect();
    ids.sort();
    assert_eq!(ids, [0, 1, 2, 3, 4, 5, 6, 7, 3303]);

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
    assert!(reg.resource(3, 9999).is_none() && reg.get(9).is_none());
}

#[test]
fn oma_registry_loads() {
    let path = dir("tests/data/lwm2m_registry");
    let reg = Registry::load_dir(&path).expect("registry loads");
    assert!(reg.len() >= 320, "{} objects", reg.len());
    assert_eq!(reg.get(3303).map(|d| d.version.as_str()), Some("1.1"));
    assert!(reg
        .iter()
        .flat_map(|d| &d.resources)
        .any(|r| r.kind == ResourceType::CoreLink));
    let mut files = 0;
    for entry in std::fs::read_dir(&path).expect("dir") {
        let file = entry.expect("entry").path();
        if file.extension().is_some_and(|e| e == "xml") {
            let text = std::fs::read_to_string(&file).expect("read");
            parse_object_xml(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            files += 1;
        }
    }
    assert!(files >= 330, "{files} files");
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
fn load_dir_errors_name_the_file() {
    let tmp = std::env::temp_dir().join(format!("lwm2m-object-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("mkdir");
    std::fs::write(tmp.join("good.xml"), object(9001, "1.0", "Float")).expect("write");
    std::fs::write(tmp.join("notes.txt"), "ignored").expect("write");
    let reg = Registry::load_dir(&tmp).expect("loads");
    assert_eq!(reg.len(), 1);
    std::fs::write(tmp.join("bad.xml"), object(9002, "1.0", "Nope")).expect("write");
    let err = Registry::load_dir(&tmp).expect_err("bad file");
    let msg = err.to_string();
    std::fs::remove_dir_all(&tmp).expect("cleanup");
    assert!(
        msg.contains("bad.xml") && msg.contains("unknown type"),
        "{msg}"
    );
    let missing = Registry::load_dir(&tmp).expect_err("missing dir");
    assert!(
        missing.to_string().contains("lwm2m-object-test"),
        "{missing}"
    );
}
