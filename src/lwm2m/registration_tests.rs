use super::*;

/// Register requests captured from real clients (one UDP payload each).
pub(crate) mod captures {
    /// wakaama 1.1, `</>;rt="oma.lwm2m";ct=110` root link.
    pub const WAKAAMA_V11: &str = "4402d38080d30952b272641128396c776d326d3d312e310b65703d706565722d65703103623d55066c743d333030ff3c2f3e3b72743d226f6d612e6c776d326d223b63743d3131302c3c2f313e3b7665723d312e312c3c2f312f303e2c3c2f322f303e2c3c2f332f303e2c3c2f342f303e2c3c2f352f303e2c3c2f362f303e2c3c2f372f303e2c3c2f33313032343e3b7665723d312e302c3c2f33313032342f31303e2c3c2f33313032342f31313e2c3c2f33313032342f31323e";
    /// wakaama 1.0.
    pub const WAKAAMA_V10: &str = "44021a9b9b1a1052b272641128396c776d326d3d312e300d0165703d706565722d65702d76313003623d55066c743d313230ff3c2f3e3b72743d226f6d612e6c776d326d223b63743d31313534332c3c2f312f303e2c3c2f322f303e2c3c2f332f303e2c3c2f342f303e2c3c2f352f303e2c3c2f362f303e2c3c2f372f303e2c3c2f33313032343e3b7665723d312e302c3c2f33313032342f31303e2c3c2f33313032342f31313e2c3c2f33313032342f31323e";
    /// wakaama lightclient (SenML CBOR).
    pub const LIGHTCLIENT: &str = "4402b4a5a5b41852b272641128396c776d326d3d312e310d0065703d706565722d6c6967687403623d55066c743d333030ff3c2f3e3b72743d226f6d612e6c776d326d223b63743d3131322c3c2f312f303e2c3c2f332f303e2c3c2f33313032342f31303e2c3c2f33313032342f31313e2c3c2f33313032342f31323e";
    /// Anjay 1.2, no binding parameter.
    pub const ANJAY_V12: &str = "4802ba051a13c55e9421dd5eb272641128396c776d326d3d312e320c65703d616e6a61792d657031066c743d333030ff3c2f312f313e2c3c2f323e2c3c2f332f303e2c3c2f342f303e2c3c2f352f303e2c3c2f362f303e2c3c2f372f303e2c3c2f31303e3b7665723d312e312c3c2f31302f303e2c3c2f31313e2c3c2f31363e2c3c2f31393e2c3c2f32302f303e2c3c2f333330332f303e2c3c2f333331332f303e2c3c2f333334372f303e2c3c2f33333630353e2c3c2f33333630362f303e2c3c2f33333630372f303e2c3c2f33333630383e2c3c2f33333630392f303e";
    /// Anjay 1.0, quoted `ver="1.1"`.
    pub const ANJAY_V10: &str = "4802b710515af132361313cab272641128396c776d326d3d312e300d0265703d616e6a61792d65702d763130066c743d313230ff3c2f312f313e2c3c2f323e2c3c2f332f303e2c3c2f342f303e2c3c2f352f303e2c3c2f362f303e2c3c2f372f303e2c3c2f31303e3b7665723d22312e31222c3c2f31302f303e2c3c2f31313e2c3c2f31363e2c3c2f31393e2c3c2f32302f303e2c3c2f333330332f303e2c3c2f333331332f303e2c3c2f333334372f303e2c3c2f33333630353e2c3c2f33333630362f303e2c3c2f33333630372f303e2c3c2f33333630383e2c3c2f33333630392f303e";

    /// Uri-Query values and payload of a CoAP request: a minimal option walk for these
    /// well-formed captures only.
    pub fn split(hex: &str) -> (Vec<Vec<u8>>, Vec<u8>) {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let mut pos = 4 + usize::from(bytes[0] & 0x0f);
        let mut number = 0u16;
        let mut queries = Vec::new();
        while pos < bytes.len() && bytes[pos] != 0xff {
            let (delta, len) = (bytes[pos] >> 4, bytes[pos] & 0x0f);
            pos += 1;
            let mut ext = |nibble: u8| -> usize {
                match nibble {
                    13 => {
                        pos += 1;
                        usize::from(bytes[pos - 1]) + 13
                    }
                    14 => unreachable!("not in these captures"),
                    n => usize::from(n),
                }
            };
            let delta = ext(delta);
            let len = ext(len);
            number += delta as u16;
            if number == 15 {
                queries.push(bytes[pos..pos + len].to_vec());
            }
            pos += len;
        }
        let payload = bytes.get(pos + 1..).unwrap_or_default().to_vec();
        (queries, payload)
    }
}

fn register(hex: &str) -> Registration {
    let (queries, payload) = captures::split(hex);
    let q = parse_query(queries.iter().map(Vec::as_slice)).expect("query");
    Registration::from_register(q, Some(&payload), &Limits::default()).expect("register")
}

fn paths(reg: &Registration) -> Vec<&str> {
    let list = reg.object_list.as_ref().expect("object list");
    list.links.iter().map(|l| l.path.as_str()).collect()
}

fn query(params: &[&str]) -> RegisterQuery {
    parse_query(params.iter().map(|s| s.as_bytes())).expect("query")
}

#[test]
fn wakaama_v11_register() {
    let reg = register(captures::WAKAAMA_V11);
    assert_eq!(&*reg.ep, "peer-ep1");
    assert_eq!(reg.lifetime, 300);
    assert_eq!(reg.version, Version::V1_1);
    assert_eq!(reg.binding, "U");
    assert!(!reg.queue_mode);
    assert!(reg.params.is_empty());
    let list = reg.object_list.as_ref().expect("object list");
    assert_eq!(list.alternate_path, "/");
    assert_eq!(list.content_formats, vec![110]);
    assert_eq!(
        paths(&reg),
        [
            "/1",
            "/1/0",
            "/2/0",
            "/3/0",
            "/4/0",
            "/5/0",
            "/6/0",
            "/7/0",
            "/31024",
            "/31024/10",
            "/31024/11",
            "/31024/12"
        ]
    );
    assert_eq!(list.links[0].version.as_deref(), Some("1.1"));
    assert_eq!(list.links[1].version, None);
    assert_eq!(list.links[8].version.as_deref(), Some("1.0"));
}

#[test]
fn wakaama_v10_register() {
    let reg = register(captures::WAKAAMA_V10);
    assert_eq!(&*reg.ep, "peer-ep-v10");
    assert_eq!(reg.lifetime, 120);
    assert_eq!(reg.version, Version::V1_0);
    let list = reg.object_list.as_ref().expect("object list");
    assert_eq!(list.content_formats, vec![11543]);
    assert_eq!(
        paths(&reg),
        [
            "/1/0",
            "/2/0",
            "/3/0",
            "/4/0",
            "/5/0",
            "/6/0",
            "/7/0",
            "/31024",
            "/31024/10",
            "/31024/11",
            "/31024/12"
        ]
    );
}

#[test]
fn lightclient_register() {
    let reg = register(captures::LIGHTCLIENT);
    assert_eq!(&*reg.ep, "peer-light");
    assert_eq!(reg.version, Version::V1_1);
    let list = reg.object_list.as_ref().expect("object list");
    assert_eq!(list.content_formats, vec![112]);
    assert_eq!(
        paths(&reg),
        ["/1/0", "/3/0", "/31024/10", "/31024/11", "/31024/12"]
    );
}

const ANJAY_PATHS: [&str; 19] = [
    "/1/1", "/2", "/3/0", "/4/0", "/5/0", "/6/0", "/7/0", "/10", "/10/0", "/11", "/16", "/19",
    "/20/0", "/3303/0", "/3313/0", "/3347/0", "/33605", "/33606/0", "/33607/0",
];

#[test]
fn anjay_v12_register_is_accepted() {
    let reg = register(captures::ANJAY_V12);
    assert_eq!(&*reg.ep, "anjay-ep1");
    assert_eq!(reg.version, Version::V1_2);
    assert_eq!(reg.binding, "U", "binding defaults to U");
    let list = reg.object_list.as_ref().expect("object list");
    assert_eq!(list.alternate_path, "/");
    assert!(list.content_formats.is_empty());
    let got = paths(&reg);
    assert_eq!(got[..19], ANJAY_PATHS);
    assert_eq!(got[19..], ["/33608", "/33609/0"]);
    assert_eq!(list.links[7].version.as_deref(), Some("1.1"));
}

#[test]
fn anjay_v10_quoted_version_is_unquoted() {
    let reg = register(captures::ANJAY_V10);
    assert_eq!(&*reg.ep, "anjay-ep-v10");
    assert_eq!(reg.lifetime, 120);
    assert_eq!(reg.version, Version::V1_0);
    let list = reg.object_list.as_ref().expect("object list");
    assert_eq!(list.links.len(), 21);
    assert_eq!(list.links[7].path, "/10");
    assert_eq!(list.links[7].version.as_deref(), Some("1.1"));
}

#[test]
fn query_keeps_every_param_in_order() {
    let q = query(&[
        "lwm2m=1.1",
        "ep=a",
        "b=UQ",
        "lt=60",
        "sms=+123",
        "Q",
        "apn=x=y",
    ]);
    assert_eq!(q.ep.as_deref(), Some("a"));
    assert_eq!(q.lifetime, Some(60));
    assert_eq!(q.version, Some(Version::V1_1));
    assert_eq!(q.binding.as_deref(), Some("UQ"));
    let names: Vec<_> = q
        .params
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("lwm2m", "1.1"),
            ("ep", "a"),
            ("b", "UQ"),
            ("lt", "60"),
            ("sms", "+123"),
            ("Q", ""),
            ("apn", "x=y")
        ]
    );
}

#[test]
fn query_errors() {
    let parse = |p: &[&[u8]]| parse_query(p.iter().copied());
    assert_eq!(parse(&[b"ep=\xff"]), Err(RegistrationError::QueryNotUtf8));
    assert_eq!(
        parse(&[b"=x"]),
        Err(RegistrationError::EmptyParamName("=x".into()))
    );
    assert_eq!(
        parse(&[b"lt=-1"]),
        Err(RegistrationError::InvalidLifetime("-1".into()))
    );
    assert_eq!(
        parse(&[b"lt=4294967296"]),
        Err(RegistrationError::InvalidLifetime("4294967296".into()))
    );
    assert_eq!(
        parse(&[b"ep=a", b"ep=b"]),
        Err(RegistrationError::DuplicateParam("ep"))
    );
    assert!(parse(&[b"ep=a", b"ep=a"]).is_ok());
    let err = parse(&[b"lwm2m=2.0"]).expect_err("2.0");
    assert_eq!(err, RegistrationError::UnsupportedVersion("2.0".into()));
    assert_eq!(err.response_class(), (4, 12));
    // Every spelling EMQX accepts, and 1.2.
    for (spelling, version) in [
        ("1", Version::V1_0),
        ("1.0", Version::V1_0),
        ("1.1", Version::V1_1),
        ("1.2", Version::V1_2),
    ] {
        let q = format!("lwm2m={spelling}");
        assert_eq!(parse(&[q.as_bytes()]).map(|q| q.version), Ok(Some(version)));
    }
    for refused in ["8.3", "1.3", "2", "", "1.", "v1.0"] {
        let q = format!("lwm2m={refused}");
        assert_eq!(
            parse(&[q.as_bytes()]),
            Err(RegistrationError::UnsupportedVersion(refused.into()))
        );
    }
    let many = vec![&b"x=1"[..]; MAX_QUERY_PARAMS + 1];
    assert_eq!(parse(&many), Err(RegistrationError::TooManyParams));
}

#[test]
fn register_defaults_and_errors() {
    let limits = Limits {
        lifetime_min: 10,
        lifetime_max: 3600,
    };
    let reg = Registration::from_register(query(&["ep=a"]), None, &limits).expect("ok");
    assert_eq!(reg.version, Version::V1_0, "lwm2m absent means 1.0");
    assert_eq!(
        reg.lifetime, 3600,
        "default lifetime clamped to lifetime_max"
    );
    assert_eq!(reg.binding, "U");
    assert_eq!(reg.object_list, None);

    let err = Registration::from_register(query(&["lt=60"]), None, &limits).expect_err("no ep");
    assert_eq!(err, RegistrationError::MissingEndpoint);
    assert_eq!(err.response_class(), (4, 0));

    let err =
        Registration::from_register(query(&["ep=a", "lt=5"]), None, &limits).expect_err("short");
    assert_eq!(err.to_string(), "lifetime 5 below lifetime_min 10");
    assert_eq!(err.response_class(), (4, 0));
    let err =
        Registration::from_register(query(&["ep=a", "lt=3601"]), None, &limits).expect_err("long");
    assert_eq!(err.to_string(), "lifetime 3601 above lifetime_max 3600");

    for bad in ["ep=", "ep=a/b", "ep=a+", "ep=#", "ep=a\nb"] {
        let err = Registration::from_register(query(&[bad]), None, &limits).expect_err(bad);
        assert!(
            matches!(err, RegistrationError::InvalidEndpoint { .. }),
            "{bad}"
        );
    }
    let long = format!("ep={}", "x".repeat(MAX_ENDPOINT_LEN + 1));
    assert!(Registration::from_register(query(&[&long]), None, &limits).is_err());
    for bad in ["b=", "b=X", "b=UUUUUUUUU"] {
        let err = Registration::from_register(query(&["ep=a", bad]), None, &limits).expect_err(bad);
        assert!(matches!(err, RegistrationError::InvalidBinding(_)), "{bad}");
    }
    let reg = Registration::from_register(query(&["ep=a"]), Some(b""), &limits).expect("ok");
    assert_eq!(reg.object_list, None, "empty payload is no object list");
}

#[test]
fn queue_mode_from_binding_or_q_param() {
    let limits = Limits::default();
    for (params, queue) in [
        (&["ep=a", "b=UQ"][..], true),
        (&["ep=a", "b=SQ"], true),
        (&["ep=a", "b=UQS"], true),
        (&["ep=a", "lwm2m=1.1", "b=U", "Q"], true),
        (&["ep=a", "lwm2m=1.1", "b=U"], false),
        (&["ep=a", "b=US"], false),
    ] {
        let reg = Registration::from_register(query(params), None, &limits).expect("ok");
        assert_eq!(reg.queue_mode, queue, "{params:?}");
    }
}

#[test]
fn update_merges_and_validates() {
    let limits = Limits::default();
    let mut reg = Registration::from_register(
        query(&["ep=a", "lwm2m=1.0", "lt=300", "sms=1", "apn=one"]),
        Some(b"</1/0>,</3/0>"),
        &limits,
    )
    .expect("ok");

    let out = reg
        .apply_update(
            query(&["lt=600", "b=UQ", "apn=two", "imei=7"]),
            None,
            &limits,
        )
        .expect("update");
    assert_eq!(
        out,
        UpdateOutcome {
            object_list_updated: false,
            lifetime_changed: true,
            binding_changed: true
        }
    );
    assert_eq!(reg.lifetime, 600);
    assert!(reg.queue_mode);
    assert_eq!(reg.param("apn"), Some("two"));
    let names: Vec<_> = reg.params.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["sms", "apn", "imei"]);
    assert_eq!(
        paths(&reg),
        ["/1/0", "/3/0"],
        "object list kept without payload"
    );

    let out = reg
        .apply_update(query(&["ep=a", "lwm2m=1.0"]), Some(b"</3/0>"), &limits)
        .expect("identical ep and lwm2m are ignored");
    assert!(out.object_list_updated && !out.lifetime_changed && !out.binding_changed);
    assert_eq!(paths(&reg), ["/3/0"]);

    let before = reg.clone();
    let err = reg
        .apply_update(query(&["ep=b"]), None, &limits)
        .expect_err("ep change");
    assert_eq!(err.response_class(), (4, 0));
    let err = reg
        .apply_update(query(&["lwm2m=1.1"]), None, &limits)
        .expect_err("version change");
    assert!(matches!(err, RegistrationError::VersionChanged { .. }));
    let err = reg
        .apply_update(query(&["lt=0", "apn=three"]), Some(b"</5/0>"), &limits)
        .expect_err("lt 0");
    assert_eq!(err.to_string(), "lifetime 0 below lifetime_min 1");
    reg.apply_update(query(&["b=U"]), Some(b"<3/0"), &limits)
        .expect_err("bad link");
    assert_eq!(reg, before, "failed updates change nothing");
}

#[test]
fn object_list_alternate_path() {
    let list = parse_object_list(
        b" </lwm2m>;rt=\"oma.lwm2m\";ct=\"60 110\",\n </lwm2m/1/0>,</lwm2m/3/0>;ver=1.1 ,\r\n</lwm2mx/5>,</lwm2m/>",
    )
    .expect("list");
    assert_eq!(list.alternate_path, "/lwm2m");
    assert_eq!(list.content_formats, vec![60, 110]);
    let got: Vec<_> = list.links.iter().map(|l| l.path.as_str()).collect();
    assert_eq!(got, ["/1/0", "/3/0", "/lwm2mx/5"]);
    assert_eq!(list.links[1].version.as_deref(), Some("1.1"));
}

#[test]
fn object_list_quotes_and_oddities() {
    let list =
        parse_object_list(b"<1/0>;title=\"a,b;c\\\"d,\";ver=2.0,,</3/0>;x;y=\"z\"").expect("list");
    let got: Vec<_> = list
        .links
        .iter()
        .map(|l| (l.path.as_str(), l.version.as_deref()))
        .collect();
    assert_eq!(got, [("/1/0", Some("2.0")), ("/3/0", None)]);
    assert_eq!(list.alternate_path, "/");

    assert_eq!(
        parse_object_list(b"</1/0>,/3/0"),
        Err(RegistrationError::MalformedLink {
            index: 1,
            reason: "does not start with '<'"
        })
    );
    assert!(parse_object_list(b"</1/0").is_err());
    assert_eq!(
        parse_object_list(b"</\xff>"),
        Err(RegistrationError::ObjectListNotUtf8)
    );
    let many = "</1/0>,".repeat(MAX_OBJECT_LINKS + 1);
    let err = parse_object_list(many.as_bytes()).expect_err("too many");
    assert_eq!(err.response_class(), (4, 13));
    let exact = "</1/0>,".repeat(MAX_OBJECT_LINKS);
    assert!(parse_object_list(exact.as_bytes()).is_ok());
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn object_list_any_bytes(payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_object_list(&payload);
        }

        #[test]
        fn object_list_link_like_text(text in "[<>/;,=\" a-z0-9\\\\\n]{0,200}") {
            if let Ok(list) = parse_object_list(text.as_bytes()) {
                prop_assert!(list.links.iter().all(|l| l.path.starts_with('/')));
                prop_assert!(list.alternate_path.starts_with('/'));
            }
        }

        #[test]
        fn register_any_query(segments in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..20), 0..40)) {
            if let Ok(q) = parse_query(segments.iter().map(Vec::as_slice)) {
                let _ = Registration::from_register(q, None, &Limits::default());
            }
        }
    }
}
