//! Every class of bad command gets its reason, and echoes what could be read.

use super::*;

fn fail(json: &str) -> CommandError {
    match parse_command(json.as_bytes()) {
        Ok(cmd) => panic!("{json} parsed to {cmd:?}"),
        Err(e) => e,
    }
}

#[test]
fn bad_input_is_explained() {
    use CommandErrorKind::*;
    let cases: &[(&str, CommandErrorKind, &str, Option<&str>, &str)] = &[
        (
            "",
            InvalidJson,
            "",
            None,
            "invalid JSON: EOF while parsing a value at line 1 column 0",
        ),
        (
            "not json",
            InvalidJson,
            "",
            None,
            "invalid JSON: expected ident at line 1 column 2",
        ),
        ("[1]", NotAnObject, "", None, "command is not a JSON object"),
        (
            r#"{"requestID":7,"msgType":"read","data":{"path":"#,
            InvalidJson,
            r#""requestID":7"#,
            Some("read"),
            "invalid JSON: EOF while parsing a value at line 1 column 47",
        ),
        (
            r#"{"requestID":7} x"#,
            InvalidJson,
            r#""requestID":7"#,
            None,
            "invalid JSON: trailing characters at line 1 column 17",
        ),
        (
            r#"{"requestID":7,"data":{}}"#,
            MissingMsgType,
            r#""requestID":7"#,
            None,
            "missing msgType",
        ),
        (
            r#"{"requestID":7,"msgType":5,"data":{}}"#,
            MissingMsgType,
            r#""requestID":7"#,
            None,
            "missing msgType",
        ),
        (
            r#"{"requestID":7,"msgType":"frobnicate","data":{}}"#,
            UnknownMsgType,
            r#""requestID":7"#,
            Some("frobnicate"),
            "unknown msgType",
        ),
        (
            r#"{"requestID":7,"msgType":"read"}"#,
            MissingData,
            r#""requestID":7"#,
            Some("read"),
            "missing data",
        ),
        (
            r#"{"msgType":"read","data":"/3/0"}"#,
            MissingData,
            "",
            Some("read"),
            "data is not an object",
        ),
        (
            r#"{"msgType":"read","data":{}}"#,
            MissingField,
            "",
            Some("read"),
            "missing data.path",
        ),
        (
            r#"{"msgType":"read","data":{"path":3}}"#,
            WrongFieldType,
            "",
            Some("read"),
            "data.path is not a string",
        ),
        (
            r#"{"msgType":"read","data":{"path":"/3/x"}}"#,
            BadPath,
            "",
            Some("read"),
            r#"bad path "/3/x""#,
        ),
        (
            r#"{"msgType":"read","data":{"path":"/1/2/3/4/5"}}"#,
            BadPath,
            "",
            Some("read"),
            r#"bad path "/1/2/3/4/5""#,
        ),
        (
            r#"{"msgType":"read","data":{"path":"/"}}"#,
            WrongDepth,
            "",
            Some("read"),
            r#"read needs a data.path of 1 to 4 levels, got "/""#,
        ),
        (
            r#"{"msgType":"execute","data":{"path":"/3/0"}}"#,
            WrongDepth,
            "",
            Some("execute"),
            r#"execute needs a data.path of 3 level, got "/3/0""#,
        ),
        (
            r#"{"msgType":"discover","data":{"path":"/3/0/7/0"}}"#,
            WrongDepth,
            "",
            Some("discover"),
            r#"discover needs a data.path of 1 to 3 levels, got "/3/0/7/0""#,
        ),
        (
            r#"{"msgType":"read","data":{"path":"/3?a&b&c&d&e&f&g&h&i&j&k&l&m&n&o&p&q"}}"#,
            BadQuery,
            "",
            Some("read"),
            "data.path query has more than 16 parameters or one longer than 255 bytes",
        ),
        (
            r#"{"msgType":"read","data":{"path":"/3","accept":"image/png"}}"#,
            WrongFieldType,
            "",
            Some("read"),
            r#"data.accept "image/png" is not a content format"#,
        ),
        (
            r#"{"msgType":"write","data":{"path":"/3/0/13","type":"Integer","value":"abc"}}"#,
            BadValue,
            "",
            Some("write"),
            r#"data.value "abc" is not a valid Integer"#,
        ),
        (
            r#"{"msgType":"write","data":{"path":"/3/0/13","type":"Integer","value":[]}}"#,
            BadValue,
            "",
            Some("write"),
            r#"data.value "[]" is not a valid Integer"#,
        ),
        (
            r#"{"msgType":"write","data":{"path":"/3/0/13","type":"Integer"}}"#,
            MissingField,
            "",
            Some("write"),
            "missing data.value",
        ),
        (
            r#"{"msgType":"write","data":{"path":"/3/0/13","value":1}}"#,
            MissingField,
            "",
            Some("write"),
            "missing data.type",
        ),
        (
            r#"{"msgType":"write","data":{"path":"/3/0/13","type":"Corelnk","value":"x"}}"#,
            UnknownType,
            "",
            Some("write"),
            r#"unknown type "Corelnk""#,
        ),
        (
            r#"{"msgType":"write","data":{"path":"/3/0","type":"Integer","value":1}}"#,
            WrongDepth,
            "",
            Some("write"),
            r#"write needs a data.path of 3 to 4 levels, got "/3/0""#,
        ),
        (
            r#"{"encoding":"hex","msgType":"write","data":{"path":"/5/0/0","type":"Opaque","value":"abc"}}"#,
            BadHex,
            r#""encoding":"hex""#,
            Some("write"),
            "bad hex in data.value",
        ),
        (
            r#"{"msgType":"write","data":{"path":"/5/0/0","type":"Opaque","value":"zz","encoding":"hex"}}"#,
            BadHex,
            "",
            Some("write"),
            "bad hex in data.value",
        ),
        (
            r#"{"msgType":"write","data":{"basePath":"/3/0"}}"#,
            MissingField,
            "",
            Some("write"),
            "missing data.content",
        ),
        (
            r#"{"msgType":"write","data":{"basePath":"/3","content":[]}}"#,
            WrongDepth,
            "",
            Some("write"),
            r#"write needs a data.basePath of 2 to 3 levels, got "/3""#,
        ),
        (
            r#"{"msgType":"write","data":{"basePath":"/3/0","content":{}}}"#,
            WrongFieldType,
            "",
            Some("write"),
            "data.content is not an array",
        ),
        (
            r#"{"msgType":"write","data":{"basePath":"/3/0","content":[1]}}"#,
            WrongFieldType,
            "",
            Some("write"),
            "data.content[0] is not an object",
        ),
        (
            r#"{"msgType":"write","data":{"basePath":"/3/0","content":[{"type":"Integer","value":1}]}}"#,
            MissingField,
            "",
            Some("write"),
            "missing data.content[0].path (basePath /3/0 is not a resource)",
        ),
        (
            r#"{"msgType":"write","data":{"basePath":"/3/0","content":[{"path":"x","type":"Integer","value":1}]}}"#,
            BadPath,
            "",
            Some("write"),
            r#"bad content path "x""#,
        ),
        (
            r#"{"msgType":"write","data":{"basePath":"/3/0/7","content":[{"path":"0/1","type":"Integer","value":1}]}}"#,
            WrongDepth,
            "",
            Some("write"),
            r#"content path "0/1" is too deep under /3/0/7"#,
        ),
        (
            r#"{"msgType":"write","data":{"basePath":"/3/0","content":[{"path":"1","type":"Integer","value":1},{"path":"2","type":"Float","value":"x"}]}}"#,
            BadValue,
            "",
            Some("write"),
            r#"data.content[1].value "x" is not a valid Float"#,
        ),
        (
            r#"{"msgType":"write","data":{"basePath":"/3/0","content":[{"path":"7","type":"Integer","value":1},{"path":"7/0","type":"Integer","value":1}]}}"#,
            DuplicatePath,
            "",
            Some("write"),
            "data.content paths /3/0/7 and /3/0/7/0 overlap",
        ),
        (
            r#"{"msgType":"write","data":{"basePath":"/3/0","replace":"yes","content":[]}}"#,
            WrongFieldType,
            "",
            Some("write"),
            "data.replace is not a boolean",
        ),
        (
            r#"{"msgType":"create","data":{"basePath":"/31024","content":[{"path":"1","type":"Integer","value":1}]}}"#,
            WrongDepth,
            "",
            Some("create"),
            r#"content path "1" under /31024 is not a resource"#,
        ),
        (
            r#"{"msgType":"create","data":{"basePath":"/31024/1","content":[]}}"#,
            WrongDepth,
            "",
            Some("create"),
            r#"create needs a data.basePath of 1 level, got "/31024/1""#,
        ),
        (
            r#"{"msgType":"write-attr","data":{"path":"/3/0/9"}}"#,
            MissingField,
            "",
            Some("write-attr"),
            "write-attr without pmin, pmax, gt, lt, st, epmin or epmax",
        ),
        (
            r#"{"msgType":"write-attr","data":{"path":"/3/0/9","pmin":"-1"}}"#,
            BadAttribute,
            "",
            Some("write-attr"),
            r#"data.pmin "-1" is not a non-negative integer"#,
        ),
        (
            r#"{"msgType":"write-attr","data":{"path":"/3/0/9","gt":"1e3"}}"#,
            BadAttribute,
            "",
            Some("write-attr"),
            r#"data.gt "1e3" is not a number"#,
        ),
        (
            r#"{"msgType":"write-attr","data":{"path":"/3/0/9","st":-1}}"#,
            BadAttribute,
            "",
            Some("write-attr"),
            r#"data.st "-1" is not a non-negative number"#,
        ),
        (
            r#"{"msgType":"write-attr","data":{"path":"/3/0/9","pmax":true}}"#,
            WrongFieldType,
            "",
            Some("write-attr"),
            "data.pmax is not a number or string",
        ),
        (
            r#"{"msgType":"execute","data":{"path":"/3/0/4","args":1}}"#,
            WrongFieldType,
            "",
            Some("execute"),
            "data.args is not a string",
        ),
        (
            r#"{"msgType":"delete","data":{"path":"/3"}}"#,
            WrongDepth,
            "",
            Some("delete"),
            r#"delete needs a data.path of 2 to 4 levels, got "/3""#,
        ),
    ];
    for &(json, kind, echo, msg_type, reason) in cases {
        let e = fail(json);
        assert_eq!(
            (
                e.kind,
                e.echo.as_str(),
                e.msg_type.as_deref(),
                e.reason.as_str()
            ),
            (kind, echo, msg_type, reason),
            "{json}"
        );
        assert_eq!(e.code(), Code::BAD_REQUEST);
    }
}

#[test]
fn oversized_and_non_utf8_commands() {
    let big = vec![b' '; MAX_COMMAND_LEN + 1];
    let e = parse_command(&big).expect_err("too large");
    assert_eq!(e.kind, CommandErrorKind::TooLarge);
    assert_eq!(e.code(), Code::REQUEST_ENTITY_TOO_LARGE);
    let e = parse_command(b"{\"a\":\"\xff\"}").expect_err("not UTF-8");
    assert_eq!(e.kind, CommandErrorKind::InvalidJson);
    assert!(
        e.reason.starts_with("invalid JSON: not UTF-8"),
        "{}",
        e.reason
    );
    let items = format!(
        r#"{{"msgType":"write","data":{{"basePath":"/3/0","content":[{}]}}}}"#,
        vec!["{}"; MAX_ENTRIES + 1].join(",")
    );
    assert_eq!(fail(&items).kind, CommandErrorKind::TooManyEntries);
    // A long quoted value is cut in the reason.
    let long = format!(
        r#"{{"msgType":"read","data":{{"path":"/{}"}}}}"#,
        "9".repeat(200)
    );
    let e = fail(&long);
    assert!(
        e.reason.len() < 100 && e.reason.ends_with("...\""),
        "{}",
        e.reason
    );
    // Deep nesting is an error, never a stack overflow; the member is not echoed.
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let deep = format!(
        r#"{{"requestID":1,"a":{},"msgType":"read","data":{{"path":"/3"}}}}"#,
        nest(100_000)
    );
    let e = fail(&deep);
    assert_eq!(
        (e.kind, e.echo.as_str(), e.msg_type.as_deref()),
        (
            CommandErrorKind::InvalidJson,
            r#""requestID":1"#,
            Some("read")
        )
    );
    assert!(
        e.reason
            .starts_with(r#"invalid JSON in "a": recursion limit exceeded"#),
        "{}",
        e.reason
    );
    // So is a number no common parser holds (valid JSON syntax all the same).
    let huge = r#"{"requestID":1e99999,"cacheID":"c","msgType":"read","data":{"path":"/3"}}"#;
    let e = fail(huge);
    assert_eq!(
        (e.kind, e.echo.as_str()),
        (CommandErrorKind::InvalidJson, r#""cacheID":"c""#)
    );
    assert!(
        e.reason
            .starts_with(r#"invalid JSON in "requestID": number out of range"#),
        "{}",
        e.reason
    );
    let deep = format!(
        r#"{{"msgType":"read","data":{{"path":"/3","x":{}}}}}"#,
        nest(100_000)
    );
    let e = fail(&deep);
    assert_eq!(e.kind, CommandErrorKind::InvalidJson);
    assert!(
        e.reason
            .starts_with("invalid JSON in data: recursion limit exceeded"),
        "{}",
        e.reason
    );
}

/// Every error about a command whose `data` holds a path reports it as `reqPath`, as
/// written (EMQX's `data.reqPath` on its error responses), and `None` otherwise.
#[test]
fn errors_carry_the_req_path() {
    let cases: &[(&str, Option<&str>)] = &[
        (
            r#"{"msgType":"write","encoding":"hex","data":{"path":"/3/0/1","type":"String","value":"ZZ"}}"#,
            Some("/3/0/1"),
        ),
        (
            r#"{"msgType":"frobnicate","data":{"path":"/3/0/"}}"#,
            Some("/3/0/"),
        ),
        (
            r#"{"msgType":"write","data":{"basePath":"/3/0?x=1","content":"no"}}"#,
            Some("/3/0"),
        ),
        (r#"{"msgType":"read","data":{"path":"/3/x"}}"#, Some("/3/x")),
        (r#"{"msgType":"read","data":{"path":7}}"#, None),
        (r#"{"msgType":"read"}"#, None),
        ("not json", None),
    ];
    for &(json, req_path) in cases {
        assert_eq!(fail(json).req_path.as_deref(), req_path, "{json}");
    }
}
