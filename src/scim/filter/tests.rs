use super::*;
use crate::scim::error::ScimType;
use crate::scim::schema::{urn, ResourceSchema};
use serde_json::{json, Value};

const ENTERPRISE: &str = urn::ENTERPRISE_USER;

fn p(name: &str) -> AttrPath {
    AttrPath::new(name, None)
}
fn ps(name: &str, sub: &str) -> AttrPath {
    AttrPath::new(name, Some(sub))
}
fn s(v: &str) -> CompValue {
    CompValue::String(v.to_string())
}
fn cmp(path: AttrPath, op: CompareOp, value: CompValue) -> Filter {
    Filter::compare(path, op, value)
}
fn eq(path: AttrPath, v: &str) -> Filter {
    cmp(path, CompareOp::Eq, s(v))
}
fn parse(input: &str) -> Filter {
    match parse_filter(input) {
        Ok(f) => f,
        Err(e) => panic!("{input:?} should parse: {e}"),
    }
}
fn parse_err(input: &str) -> String {
    match parse_filter(input) {
        Ok(f) => panic!("{input:?} should not parse, got {f:?}"),
        Err(e) => {
            assert_eq!(e.status, 400, "{input:?}");
            assert_eq!(e.scim_type, Some(ScimType::InvalidFilter), "{input:?}");
            e.detail
        }
    }
}

/// RFC 7643 §8.2 (full User), trimmed, in canonical form.
fn bjensen() -> Value {
    json!({
        "schemas": [urn::CORE_USER, ENTERPRISE],
        "id": "2819c223-7f76-453a-919d-413861904646",
        "externalId": "701984",
        "userName": "bjensen@example.com",
        "name": {"formatted": "Ms. Barbara J Jensen, III", "familyName": "Jensen", "givenName": "Barbara"},
        "displayName": "Babs Jensen",
        "title": "Tour Guide",
        "userType": "Employee",
        "active": true,
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ],
        "ims": [{"value": "someaimhandle", "type": "aim"}],
        "x509Certificates": [{"value": "MIIDQzCCAqygAwIBAgICEAAwDQYJKoZIhvcNAQEFBQAw"}],
        "meta": {
            "resourceType": "User",
            "created": "2010-01-23T04:56:22Z",
            "lastModified": "2011-05-13T04:42:34Z",
            "version": "W/\"3694e05e9dff591\""
        },
        ENTERPRISE: {
            "employeeNumber": "701984",
            "costCenter": "4130",
            "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d", "displayName": "John Smith"}
        }
    })
}

/// An intern with an O'Malley name, an example.org address and an xmpp handle.
fn omalley() -> Value {
    json!({
        "schemas": [urn::CORE_USER],
        "id": "c3a26dd3-27a0-4dec-a2ac-ce211e105f97",
        "externalId": "jyoung",
        "userName": "Jim.OMalley@example.org",
        "name": {"familyName": "O'Malley", "givenName": "Jim"},
        "displayName": "Jim O'Malley",
        "userType": "Intern",
        "active": false,
        "emails": [{"value": "jim@example.org", "type": "work"}],
        "ims": [{"value": "jim@foo.com", "type": "xmpp"}],
        "meta": {"resourceType": "User", "created": "2011-05-13T04:42:34Z", "lastModified": "2011-05-13T04:42:35.5+01:00"}
    })
}

fn users() -> [Value; 2] {
    [bjensen(), omalley()]
}

/// Which of [bjensen, omalley] match.
fn which(filter: &str) -> [bool; 2] {
    let f = parse(filter);
    let schema = ResourceSchema::user();
    let bound = f.bind(&schema);
    users().map(|u| {
        let m = f.matches(&u, &schema);
        assert_eq!(
            bound.matches(&u),
            m,
            "bound and unbound disagree on {filter}"
        );
        m
    })
}

// ---------------------------------------------------------------- RFC 7644 §3.4.2.2 examples

#[test]
fn rfc_examples_parse_to_the_expected_trees() {
    use CompareOp::*;
    let cases: Vec<(&str, Filter)> = vec![
        ("userName eq \"bjensen\"", eq(p("userName"), "bjensen")),
        ("name.familyName co \"O'Malley\"", cmp(ps("name", "familyName"), Co, s("O'Malley"))),
        ("userName sw \"J\"", cmp(p("userName"), Sw, s("J"))),
        (
            "urn:ietf:params:scim:schemas:core:2.0:User:userName sw \"J\"",
            cmp(
                AttrPath { urn: Some(urn::CORE_USER.into()), name: "userName".into(), sub: None },
                Sw,
                s("J"),
            ),
        ),
        ("title pr", Filter::Present(p("title"))),
        (
            "meta.lastModified gt \"2011-05-13T04:42:34Z\"",
            cmp(ps("meta", "lastModified"), Gt, s("2011-05-13T04:42:34Z")),
        ),
        (
            "meta.lastModified ge \"2011-05-13T04:42:34Z\"",
            cmp(ps("meta", "lastModified"), Ge, s("2011-05-13T04:42:34Z")),
        ),
        (
            "meta.lastModified lt \"2011-05-13T04:42:34Z\"",
            cmp(ps("meta", "lastModified"), Lt, s("2011-05-13T04:42:34Z")),
        ),
        (
            "meta.lastModified le \"2011-05-13T04:42:34Z\"",
            cmp(ps("meta", "lastModified"), Le, s("2011-05-13T04:42:34Z")),
        ),
        (
            "title pr and userType eq \"Employee\"",
            Filter::and(Filter::Present(p("title")), eq(p("userType"), "Employee")),
        ),
        (
            "title pr or userType eq \"Intern\"",
            Filter::or(Filter::Present(p("title")), eq(p("userType"), "Intern")),
        ),
        (
            "schemas eq \"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User\"",
            eq(p("schemas"), ENTERPRISE),
        ),
        (
            "userType eq \"Employee\" and (emails co \"example.com\" or emails.value co \"example.org\")",
            Filter::and(
                eq(p("userType"), "Employee"),
                Filter::or(
                    cmp(p("emails"), Co, s("example.com")),
                    cmp(ps("emails", "value"), Co, s("example.org")),
                ),
            ),
        ),
        (
            "userType ne \"Employee\" and not (emails co \"example.com\" or emails.value co \"example.org\")",
            Filter::and(
                cmp(p("userType"), Ne, s("Employee")),
                Filter::negate(Filter::or(
                    cmp(p("emails"), Co, s("example.com")),
                    cmp(ps("emails", "value"), Co, s("example.org")),
                )),
            ),
        ),
        (
            "userType eq \"Employee\" and (emails.type eq \"work\")",
            Filter::and(eq(p("userType"), "Employee"), eq(ps("emails", "type"), "work")),
        ),
        (
            "userType eq \"Employee\" and emails[type eq \"work\" and value co \"@example.com\"]",
            Filter::and(
                eq(p("userType"), "Employee"),
                Filter::value_path(
                    p("emails"),
                    Filter::and(eq(p("type"), "work"), cmp(p("value"), Co, s("@example.com"))),
                ),
            ),
        ),
        (
            "emails[type eq \"work\" and value co \"@example.com\"] or ims[type eq \"xmpp\" and value co \"@foo.com\"]",
            Filter::or(
                Filter::value_path(
                    p("emails"),
                    Filter::and(eq(p("type"), "work"), cmp(p("value"), Co, s("@example.com"))),
                ),
                Filter::value_path(
                    p("ims"),
                    Filter::and(eq(p("type"), "xmpp"), cmp(p("value"), Co, s("@foo.com"))),
                ),
            ),
        ),
    ];
    for (input, expected) in cases {
        let got = parse(input);
        assert_eq!(got, expected, "{input}");
        assert_eq!(parse(&got.to_string()), got, "round trip of {input}");
    }
}

#[test]
fn rfc_examples_evaluate_against_sample_users() {
    // [bjensen, omalley]
    let cases: &[(&str, [bool; 2])] = &[
        ("userName eq \"bjensen\"", [false, false]),
        ("userName eq \"bjensen@example.com\"", [true, false]),
        ("name.familyName co \"O'Malley\"", [false, true]),
        ("userName sw \"J\"", [false, true]),
        ("urn:ietf:params:scim:schemas:core:2.0:User:userName sw \"J\"", [false, true]),
        ("title pr", [true, false]),
        ("meta.lastModified gt \"2011-05-13T04:42:34Z\"", [false, false]),
        ("meta.lastModified ge \"2011-05-13T04:42:34Z\"", [true, false]),
        ("meta.lastModified lt \"2011-05-13T04:42:34Z\"", [false, true]),
        ("meta.lastModified le \"2011-05-13T04:42:34Z\"", [true, true]),
        ("title pr and userType eq \"Employee\"", [true, false]),
        ("title pr or userType eq \"Intern\"", [true, true]),
        ("schemas eq \"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User\"", [true, false]),
        (
            "userType eq \"Employee\" and (emails co \"example.com\" or emails.value co \"example.org\")",
            [true, false],
        ),
        (
            "userType ne \"Employee\" and not (emails co \"example.com\" or emails.value co \"example.org\")",
            [false, false],
        ),
        ("userType ne \"Employee\" and not (emails co \"example.com\")", [false, true]),
        ("userType eq \"Employee\" and (emails.type eq \"work\")", [true, false]),
        (
            "userType eq \"Employee\" and emails[type eq \"work\" and value co \"@example.com\"]",
            [true, false],
        ),
        (
            "emails[type eq \"work\" and value co \"@example.com\"] or ims[type eq \"xmpp\" and value co \"@foo.com\"]",
            [true, true],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(which(filter), *expected, "{filter}");
    }
}

#[test]
fn omalley_last_modified_is_compared_chronologically_not_textually() {
    // 04:42:35.5+01:00 is 03:42:35.5Z: textually greater than "…04:42:34Z", chronologically earlier.
    assert_eq!(
        which("meta.lastModified lt \"2011-05-13T04:00:00Z\""),
        [false, true]
    );
    assert_eq!(
        which("meta.lastModified gt \"2011-05-13T03:42:35Z\""),
        [true, true]
    );
    assert_eq!(
        which("meta.created eq \"2010-01-23T05:56:22+01:00\""),
        [true, false]
    );
}

// ---------------------------------------------------------------- IdP dialects

#[test]
fn okta_and_entra_filters() {
    let f = parse("userName eq \"test.user@okta.local\"");
    assert_eq!(f, eq(p("userName"), "test.user@okta.local"));
    assert_eq!(
        f.as_equality(),
        Some((&p("userName"), &s("test.user@okta.local")))
    );

    assert_eq!(
        parse("displayName eq \"BI Admins\""),
        eq(p("displayName"), "BI Admins")
    );

    // Entra's non-ABNF `attr[filter].sub op value` means `attr[filter and sub op value]`.
    let entra = parse("emails[type eq \"work\"].value eq \"user@contoso.com\"");
    assert_eq!(
        entra,
        Filter::value_path(
            p("emails"),
            Filter::and(eq(p("type"), "work"), eq(p("value"), "user@contoso.com"))
        )
    );
    assert_eq!(
        entra.to_string(),
        "emails[type eq \"work\" and value eq \"user@contoso.com\"]"
    );
    assert_eq!(
        parse("emails[type eq \"work\"].value pr"),
        Filter::value_path(
            p("emails"),
            Filter::and(eq(p("type"), "work"), Filter::Present(p("value")))
        )
    );
    assert_eq!(
        parse("emails[type eq \"work\"].value co \"@example\""),
        Filter::value_path(
            p("emails"),
            Filter::and(
                eq(p("type"), "work"),
                cmp(p("value"), CompareOp::Co, s("@example"))
            )
        )
    );
    assert_eq!(
        which("emails[type eq \"work\"].value eq \"BJensen@Example.com\""),
        [true, false]
    );
    assert_eq!(
        which("emails[type eq \"home\"].value eq \"bjensen@example.com\""),
        [false, false]
    );

    // Legacy unquoted values.
    assert_eq!(parse("externalId eq jyoung"), eq(p("externalId"), "jyoung"));
    assert_eq!(which("externalId eq jyoung"), [false, true]);
    assert_eq!(
        parse("id eq 54D3A2 and manager eq 2819c223-7f76-453a-919d-413861904646"),
        Filter::and(
            eq(p("id"), "54D3A2"),
            eq(p("manager"), "2819c223-7f76-453a-919d-413861904646")
        )
    );
    assert_eq!(
        which("id eq 2819c223-7f76-453a-919d-413861904646 and manager eq 26118915-6090-4610-87e4-49d8ca9f808d"),
        [true, false]
    );
    // An all-digit bare token lexes as a number but still means the text on a string attribute.
    assert_eq!(
        parse("manager eq 2819"),
        cmp(p("manager"), CompareOp::Eq, CompValue::Number(2819.into()))
    );
    assert_eq!(which("externalId eq 701984"), [true, false]);
    assert_eq!(
        which("externalId gt 1"),
        [false, false],
        "ordering number vs string is a mismatch"
    );

    // Random-GUID probes: parse, match nothing.
    assert_eq!(
        which("userName eq \"7b3f0d5e-1c7b-4b8e-9a61-0f2f3c4d5e6f\""),
        [false, false]
    );
    assert_eq!(
        which("externalId eq \"7b3f0d5e-1c7b-4b8e-9a61-0f2f3c4d5e6f\""),
        [false, false]
    );
    assert_eq!(
        which("id eq \"7b3f0d5e-1c7b-4b8e-9a61-0f2f3c4d5e6f\""),
        [false, false]
    );

    // Entra sends booleans as strings in roles[primary eq "True"] (idp-behavior.md §2.3).
    assert_eq!(which("emails[primary eq \"True\"]"), [true, false]);
    assert_eq!(which("active eq \"False\""), [false, true]);
}

#[test]
fn okta_lookups_evaluate_case_insensitively_and_on_groups() {
    let user_schema = ResourceSchema::user();
    let okta_user =
        json!({"schemas": [urn::CORE_USER], "id": "1", "userName": "Test.User@okta.local"});
    // Okta SPEC test "Username Case Sensitivity Check": userName is caseExact false.
    for f in [
        "userName eq \"test.user@okta.local\"",
        "userName eq \"TEST.USER@OKTA.LOCAL\"",
    ] {
        assert!(parse(f).matches(&okta_user, &user_schema), "{f}");
    }
    assert!(!parse("userName eq \"other@okta.local\"").matches(&okta_user, &user_schema));

    let group_schema = ResourceSchema::group();
    let group = json!({
        "schemas": [urn::CORE_GROUP], "id": "g1", "displayName": "BI Admins",
        "members": [{"value": "2819c223-7f76-453a-919d-413861904646", "display": "Babs"}]
    });
    let m = |f: &str| {
        let filter = parse(f);
        let direct = filter.matches(&group, &group_schema);
        assert_eq!(filter.bind(&group_schema).matches(&group), direct, "{f}");
        direct
    };
    assert!(m("displayName eq \"BI Admins\""));
    assert!(
        m("displayName eq \"bi admins\""),
        "Group displayName is caseExact false"
    );
    assert!(!m("displayName eq \"BI Designers\""));
    assert!(m(
        "members[value eq \"2819c223-7f76-453a-919d-413861904646\"]"
    ));
    assert!(!m(
        "members[value eq \"2819C223-7F76-453A-919D-413861904646\"]"
    ));
    assert!(m(
        "members.value eq \"2819c223-7f76-453a-919d-413861904646\""
    ));
    assert!(m("members eq \"2819c223-7f76-453a-919d-413861904646\""));
    assert!(m(
        "schemas eq \"urn:ietf:params:scim:schemas:core:2.0:Group\""
    ));
    assert!(!m("userName pr"), "a User attribute is unknown on a Group");
}

#[test]
fn urn_qualified_extension_paths() {
    let f = parse(
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq \"701984\"",
    );
    assert_eq!(
        f,
        eq(
            AttrPath {
                urn: Some(ENTERPRISE.into()),
                name: "employeeNumber".into(),
                sub: None
            },
            "701984"
        )
    );
    assert_eq!(which(&f.to_string()), [true, false]);
    let f = parse("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"26118915-6090-4610-87e4-49d8ca9f808d\"");
    assert_eq!(
        f,
        eq(
            AttrPath {
                urn: Some(ENTERPRISE.into()),
                name: "manager".into(),
                sub: Some("value".into())
            },
            "26118915-6090-4610-87e4-49d8ca9f808d"
        )
    );
    assert_eq!(which(&f.to_string()), [true, false]);
    assert_eq!(
        which("URN:IETF:params:scim:schemas:extension:enterprise:2.0:user:EMPLOYEENUMBER eq \"701984\""),
        [true, false]
    );
    // Without the URN, a name the core schema lacks falls back to the extensions (Entra's
    // legacy `manager eq …`); a name nobody has matches nothing.
    assert_eq!(which("employeeNumber eq \"701984\""), [true, false]);
    assert_eq!(which("employeeNumber ne \"701984\""), [false, true]);
    assert_eq!(which("costCentre eq \"4130\""), [false, false]);
    assert_eq!(which("costCentre ne \"4130\""), [false, false]);
    assert_eq!(
        which("urn:x:y:userName eq \"bjensen@example.com\""),
        [false, false]
    );
    assert_eq!(
        which(&format!("{ENTERPRISE}:manager.displayName sw \"john\"")),
        [true, false]
    );
    assert_eq!(which(&format!("{ENTERPRISE}:manager pr")), [true, false]);
}

#[test]
fn ref_is_an_attribute_name() {
    assert_eq!(
        parse("members.$ref eq \"https://x/Users/1\""),
        eq(ps("members", "$ref"), "https://x/Users/1")
    );
    assert_eq!(
        parse("members[$ref pr]"),
        Filter::value_path(p("members"), Filter::Present(p("$ref")))
    );
}

// ---------------------------------------------------------------- lexical details

#[test]
fn names_operators_and_logic_words_are_case_insensitive() {
    assert_eq!(
        parse("USERNAME EQ \"x\" AnD Title PR oR NOT (active Eq TRUE)"),
        Filter::or(
            Filter::and(eq(p("USERNAME"), "x"), Filter::Present(p("Title"))),
            Filter::negate(cmp(p("active"), CompareOp::Eq, CompValue::Bool(true)))
        )
    );
    assert_eq!(which("USERNAME Eq \"BJENSEN@example.COM\""), [true, false]);
    assert_eq!(which("Emails[TYPE eq \"WORK\"]"), [true, true]);
}

#[test]
fn whitespace_is_lenient() {
    let a = parse("  title   pr   and\t( userType  eq  \"Employee\" )  ");
    assert_eq!(
        a,
        Filter::and(Filter::Present(p("title")), eq(p("userType"), "Employee"))
    );
    assert_eq!(
        parse("emails[ type eq \"work\" ]"),
        Filter::value_path(p("emails"), eq(p("type"), "work"))
    );
}

#[test]
fn literals() {
    let v = |input: &str| match parse(&format!("x eq {input}")) {
        Filter::Compare { value, .. } => value,
        other => panic!("{other:?}"),
    };
    assert_eq!(v("true"), CompValue::Bool(true));
    assert_eq!(v("false"), CompValue::Bool(false));
    assert_eq!(v("null"), CompValue::Null);
    assert_eq!(v("42"), CompValue::Number(42.into()));
    assert_eq!(v("-7"), CompValue::Number((-7).into()));
    let n = |x: f64| CompValue::Number(serde_json::Number::from_f64(x).expect("finite"));
    assert_eq!(v("3.25"), n(3.25));
    assert_eq!(v("-1.5e3"), n(-1500.0));
    assert_eq!(v("2E-2"), n(0.02));
    // Found by the round-trip property: decimals must be parsed with correct rounding.
    assert_eq!(v("-1.3676842344333297e-285"), n(-1.3676842344333297e-285));
    assert_eq!(
        v("18446744073709551615"),
        CompValue::Number(u64::MAX.into())
    );
    assert_eq!(v("18446744073709551616"), n(1.8446744073709552e19));
    assert_eq!(
        v("1e400"),
        s("1e400"),
        "out of f64 range: a legacy bare string"
    );
    assert_eq!(v("01"), s("01"), "not JSON number syntax");
    assert_eq!(v("\"\""), s(""));
    assert_eq!(
        v(r#""q\" b\\ s\/ \b\f\n\r\t é \u00e9 \u20AC \ud83d\ude00 😀""#),
        s("q\" b\\ s/ \u{8}\u{c}\n\r\t é é € 😀 😀")
    );
    // A quoted `]` or `)` is just text.
    assert_eq!(v("\"a]b)c(\""), s("a]b)c("));
}

#[test]
fn rendering_escapes_strings_and_brackets_precedence() {
    let f = Filter::and(
        Filter::or(Filter::Present(p("a")), Filter::Present(p("b"))),
        Filter::and(
            eq(p("c"), "x\"y\\z\n\u{1}"),
            Filter::negate(Filter::Present(p("d"))),
        ),
    );
    let text = f.to_string();
    assert_eq!(
        text,
        "(a pr or b pr) and (c eq \"x\\\"y\\\\z\\n\\u0001\" and not (d pr))"
    );
    assert_eq!(parse(&text), f);
}

// ---------------------------------------------------------------- semantics

#[test]
fn precedence_not_over_and_over_or() {
    let a = || Filter::Present(p("a"));
    let b = || Filter::Present(p("b"));
    let c = || Filter::Present(p("c"));
    assert_eq!(
        parse("a pr or b pr and c pr"),
        Filter::or(a(), Filter::and(b(), c()))
    );
    assert_eq!(
        parse("a pr and b pr or c pr"),
        Filter::or(Filter::and(a(), b()), c())
    );
    assert_eq!(
        parse("(a pr or b pr) and c pr"),
        Filter::and(Filter::or(a(), b()), c())
    );
    assert_eq!(
        parse("not (a pr) and b pr"),
        Filter::and(Filter::negate(a()), b())
    );
    assert_eq!(
        parse("a pr and b pr and c pr"),
        Filter::and(Filter::and(a(), b()), c())
    );
    // `a or b and c` on users: title pr (bjensen only), userType eq Intern (omalley), active eq true (bjensen).
    assert_eq!(
        which("userType eq \"Intern\" or title pr and active eq true"),
        [true, true]
    );
    assert_eq!(
        which("(userType eq \"Intern\" or title pr) and active eq false"),
        [false, true]
    );
    assert_eq!(which("not (title pr)"), [false, true]);
    assert_eq!(which("not (not (title pr))"), [true, false]);
}

#[test]
fn case_sensitivity_follows_case_exact() {
    // userName, displayName, emails.value: caseExact false.
    assert_eq!(which("userName eq \"BJENSEN@EXAMPLE.COM\""), [true, false]);
    assert_eq!(which("displayName eq \"babs JENSEN\""), [true, false]);
    assert_eq!(which("emails.value eq \"BABS@jensen.ORG\""), [true, false]);
    assert_eq!(which("userName co \"OMALLEY\""), [false, true]);
    assert_eq!(which("userName ew \"EXAMPLE.ORG\""), [false, true]);
    // id, externalId, manager.value: caseExact true.
    assert_eq!(
        which("id eq \"2819C223-7F76-453A-919D-413861904646\""),
        [false, false]
    );
    assert_eq!(
        which("id eq \"2819c223-7f76-453a-919d-413861904646\""),
        [true, false]
    );
    assert_eq!(which("externalId eq JYOUNG"), [false, false]);
    assert_eq!(which("externalId sw \"jy\""), [false, true]);
    assert_eq!(which("externalId sw \"JY\""), [false, false]);
    // Non-ASCII folding.
    let schema = ResourceSchema::user();
    let u = json!({"userName": "ÖSTEN@example.com", "displayName": "Ärger"});
    assert!(parse("userName eq \"östen@EXAMPLE.com\"").matches(&u, &schema));
    assert!(parse("displayName sw \"äR\"").matches(&u, &schema));
}

#[test]
fn substring_operators_at_the_edges() {
    let schema = ResourceSchema::user();
    let u = json!({"userName": "aXbXc", "displayName": "ab"});
    let m = |f: &str| parse(f).matches(&u, &schema);
    assert!(m("userName co \"\"") && m("userName sw \"\"") && m("userName ew \"\""));
    assert!(m("userName co \"xBx\"") && m("userName co \"AXBXC\"") && m("userName co \"c\""));
    assert!(!m("userName co \"aXbXcd\"") && !m("userName co \"xx\""));
    assert!(m("userName sw \"AxB\"") && m("userName ew \"xC\""));
    assert!(!m("displayName sw \"abc\"") && !m("displayName ew \"xab\""));
    assert!(!m("displayName co \"abc\""));
}

#[test]
fn multi_valued_any_semantics() {
    assert_eq!(which("emails.type eq \"home\""), [true, false]);
    assert_eq!(which("emails.value ew \"jensen.org\""), [true, false]);
    assert_eq!(which("emails co \"jensen.org\""), [true, false]);
    // ne: any value differs.
    assert_eq!(which("emails.type ne \"work\""), [true, false]);
    assert_eq!(
        which("schemas eq \"urn:ietf:params:scim:schemas:core:2.0:User\""),
        [true, true]
    );
    assert_eq!(
        which("schemas[value eq \"urn:ietf:params:scim:schemas:core:2.0:User\"]"),
        [true, true]
    );
    // The value filter ties conditions to one element: no single email is both home and @example.com.
    assert_eq!(
        which("emails[type eq \"home\" and value co \"@example.com\"]"),
        [false, false]
    );
    assert_eq!(
        which("emails.type eq \"home\" and emails.value co \"@example.com\""),
        [true, false]
    );
}

#[test]
fn presence_null_and_absence() {
    let schema = ResourceSchema::user();
    let u = json!({"userName": "u", "title": "", "nickName": null, "emails": [], "name": {}, "addresses": [{"type": "work"}]});
    let m = |f: &str| parse(f).matches(&u, &schema);
    assert!(m("userName pr"));
    assert!(!m("title pr"));
    assert!(!m("nickName pr"));
    assert!(!m("emails pr"));
    assert!(!m("name pr"));
    assert!(m("addresses pr"));
    assert!(!m("addresses.streetAddress pr"));
    assert!(m("addresses.type pr"));
    assert!(!m("displayName pr"));
    assert!(m("displayName eq null"));
    assert!(m("nickName eq null"));
    assert!(!m("userName eq null"));
    assert!(m("userName ne null"));
    assert!(
        m("displayName ne \"x\""),
        "ne on an absent attribute is true"
    );
    assert!(!m("displayName eq \"x\""));
    assert!(!m("unknownAttr pr"));
    assert!(
        !m("unknownAttr eq null"),
        "unknown attributes match nothing"
    );
    assert!(m("not (unknownAttr eq \"x\")"));
}

#[test]
fn ordering_by_type() {
    let schema = ResourceSchema::user();
    let u = json!({"userName": "m", "displayName": "Bob", "active": true});
    let m = |f: &str| parse(f).matches(&u, &schema);
    assert!(
        m("userName gt \"L\"") && m("userName gt \"l\""),
        "case folded"
    );
    assert!(m("userName lt \"N\"") && m("userName le \"M\"") && m("userName ge \"m\""));
    assert!(!m("userName gt \"m\""));
    assert!(!m("userName gt 5"), "number vs string attr is a mismatch");
    assert!(!m("active gt false"));
    assert!(m("active eq true") && m("active ne false") && !m("active eq false"));
    assert!(!m("active co \"t\""));
    assert!(!m("active eq 1"));
    // Numbers (no numeric attribute in the User schema, so a custom one).
    use crate::scim::schema::{AttrType, AttributeDef};
    let mut custom = ResourceSchema::user();
    custom
        .core
        .attributes
        .push(AttributeDef::of_type("level", AttrType::Integer, "test"));
    custom
        .core
        .attributes
        .push(AttributeDef::of_type("score", AttrType::Decimal, "test"));
    let r = json!({"level": 10, "score": 2.5});
    let n = |f: &str| parse(f).matches(&r, &custom);
    assert!(n("level gt 9") && n("level ge 10") && !n("level gt 10") && n("level lt 10.5"));
    assert!(n("score gt 2.25") && n("score lt 3") && n("score eq 2.5") && n("score le 25e-1"));
    assert!(!n("level eq \"10\""), "string vs number is a mismatch");
    assert!(!n("level co 1"));
}

#[test]
fn datetime_ordering_falls_back_to_text_for_non_dates() {
    assert_eq!(which("meta.created sw \"2010\""), [true, false]);
    assert_eq!(which("meta.created gt \"not a date\""), [false, false]);
}

#[test]
fn matches_element_for_patch() {
    let schema = ResourceSchema::group();
    let members = schema.resolve(None, "members").expect("members").def;
    let f = match crate::scim::path::parse_path("members[value eq \"a\" or value eq \"b\"]") {
        Ok(path) => path.filter.expect("filter"),
        Err(e) => panic!("{e}"),
    };
    assert!(f.matches_element(&json!({"value": "a"}), members));
    assert!(f.matches_element(&json!({"value": "b", "display": "B"}), members));
    assert!(
        !f.matches_element(&json!({"value": "A"}), members),
        "members.value is caseExact"
    );
    assert!(!f.matches_element(&json!({"display": "a"}), members));
    let user = ResourceSchema::user();
    let emails = user.resolve(None, "emails").expect("emails").def;
    let work = parse("type eq \"WORK\" and primary eq true");
    assert!(work.matches_element(
        &json!({"type": "work", "primary": true, "value": "x"}),
        emails
    ));
    assert!(!work.matches_element(&json!({"type": "work", "value": "x"}), emails));
    let manager = user
        .resolve(Some(ENTERPRISE), "manager")
        .expect("manager")
        .def;
    assert!(parse("value eq \"m1\"").matches_element(&json!({"value": "m1"}), manager));
}

#[test]
fn validate_against_schema() {
    let user = ResourceSchema::user();
    let bad = |f: &str| {
        let e = parse(f).validate(&user).expect_err(f);
        assert_eq!(e.scim_type, Some(ScimType::InvalidFilter), "{f}");
        e.detail
    };
    assert!(bad("active gt true").contains("boolean"));
    assert!(bad("emails[primary ge false]").contains("boolean"));
    assert!(bad("x509Certificates.value lt \"a\"").contains("binary"));
    assert!(bad("x509Certificates lt \"a\"").contains("binary"));
    bad("userName[value eq \"x\"]");
    bad("emails[meta.created pr]");
    for ok in [
        "userName eq \"x\"",
        "meta.lastModified gt \"2011-05-13T04:42:34Z\"",
        "active eq true",
        "emails[type eq \"work\" and value co \"@x\"]",
        "unknown gt 1",
        "schemas eq \"x\"",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"x\"",
    ] {
        assert_eq!(parse(ok).validate(&user), Ok(()), "{ok}");
    }
}

#[test]
fn push_down_helpers() {
    let f = parse(
        "userName eq \"a\" and (title pr or x eq 1) and active eq true and emails[type eq \"w\"]",
    );
    let c = f.conjuncts();
    assert_eq!(c.len(), 4);
    assert_eq!(c[0], &eq(p("userName"), "a"));
    assert_eq!(
        c[2],
        &cmp(p("active"), CompareOp::Eq, CompValue::Bool(true))
    );
    assert_eq!(c[0].as_equality(), Some((&p("userName"), &s("a"))));
    assert_eq!(c[1].as_equality(), None);
    assert_eq!(
        parse("title pr").conjuncts(),
        vec![&Filter::Present(p("title"))]
    );
    assert_eq!(parse("userName ne \"a\"").as_equality(), None);
    assert_eq!(parse("a eq 1 or b eq 2").conjuncts().len(), 1);
}

// ---------------------------------------------------------------- errors

#[test]
fn errors_name_the_position_and_what_was_expected() {
    let d = parse_err("");
    assert!(d.contains("byte 0") && d.contains("attribute name"), "{d}");
    let d = parse_err("   ");
    assert!(d.contains("byte 3"), "{d}");
    let d = parse_err("userName");
    assert!(d.contains("byte 8") && d.contains("operator"), "{d}");
    let d = parse_err("userName equals \"x\"");
    assert!(d.contains("byte 9") && d.contains("operator"), "{d}");
    let d = parse_err("userName eq");
    assert!(d.contains("byte 11") && d.contains("value"), "{d}");
    let d = parse_err("userName eq \"x\" garbage");
    assert!(
        d.contains("byte 16") && d.contains("'and', 'or' or end of input"),
        "{d}"
    );
    let d = parse_err("userName eq \"abc");
    assert!(d.contains("byte 12") && d.contains("unterminated"), "{d}");
    let d = parse_err("userName eq \"a\\qb\"");
    assert!(d.contains("byte 14") && d.contains("invalid escape"), "{d}");
    let d = parse_err("(title pr");
    assert!(d.contains("byte 9") && d.contains("')'"), "{d}");
    let d = parse_err("emails[type eq \"work\"");
    assert!(d.contains("byte 21") && d.contains("']'"), "{d}");
    let d = parse_err("title pr and");
    assert!(d.contains("byte 12"), "{d}");
    let d = parse_err("emails[type[value pr]]");
    assert!(d.contains("byte 11") && d.contains("nested"), "{d}");
    let d = parse_err("name.familyName[value pr]");
    assert!(d.contains("byte 15"), "{d}");
    let d = parse_err("emails[type eq \"work\"]. eq \"x\"");
    assert!(d.contains("byte 23") && d.contains("sub-attribute"), "{d}");
    let d = parse_err("emails[type eq \"work\"].value");
    assert!(d.contains("operator"), "{d}");
    let d = parse_err("urn:x eq 1");
    assert!(d.contains("byte 0") && d.contains("URN"), "{d}");
    let d = parse_err("urn:a:b:c:name.sub.deeper eq 1");
    assert!(d.contains("byte 18"), "{d}");
    for bad in [
        "not title pr",
        "title pr not",
        "()",
        ")",
        "and",
        "title pr or or a pr",
        "userName eq \"x\")",
        "title pr]",
        "a.b.c pr",
        ".a pr",
        "1abc pr",
        "userName eq (x)",
        "userName eq \"\u{1}\"",
        "userName eq \"\\u12\"",
        "userName eq \"\\ud83d\"",
        "userName eq \"\\ude00\"",
        "userName eq \"\\ud83d\\u0041\"",
        "userName eq \"\\",
        "filter=userName eq \"x\"",
        "Runscope_random_username_caps",
    ] {
        parse_err(bad);
    }
}

#[test]
fn multibyte_input_never_breaks_positions() {
    for bad in [
        "é",
        "userName é \"x\"",
        "userName eq \"é",
        "ü€😀 eq 1",
        "userName eq \"x\" 😀",
        "emails[type eq \"é\"😀]",
        "urn:é:😀 eq 1",
        "urn:a:b:ü eq 1",
        "emails[type eq \"w\"].😀 eq 1",
        "userName eq \"\\u00é9\"",
        "userName eq \"\\😀\"",
    ] {
        let d = parse_err(bad);
        assert!(d.contains("byte"), "{d}");
    }
    // Values may hold any character; bare tokens too.
    assert_eq!(parse("userName eq \"😀é\""), eq(p("userName"), "😀é"));
    assert_eq!(parse("externalId eq ü€😀"), eq(p("externalId"), "ü€😀"));
    let d = parse_err("ü eq 1");
    assert!(d.contains("byte 0"), "{d}");
    let d = parse_err("userName eq \"x\" ü");
    assert!(d.contains("byte 16") && d.contains("'ü'"), "{d}");
}

#[test]
fn nesting_and_size_limits() {
    let deep = "(".repeat(10_000);
    let d = parse_err(&deep);
    assert!(
        d.contains("nesting") && d.contains(&format!("byte {MAX_DEPTH}")),
        "{d}"
    );
    let deep = format!("{}title pr{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(parse_err(&deep).contains("limit"), "over 16 KiB");
    let deep = format!("{}title pr{}", "not (".repeat(2_000), ")".repeat(2_000));
    assert!(parse_err(&deep).contains("nesting"));
    // Exactly at the limit still parses.
    let ok = format!("{}title pr{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert_eq!(parse(&ok), Filter::Present(p("title")));
    let over = format!(
        "{}title pr{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    parse_err(&over);
    let huge = format!("userName eq \"{}\"", "a".repeat(MAX_INPUT_LEN));
    let d = parse_err(&huge);
    assert!(
        d.contains("limit") && d.contains(&format!("byte {MAX_INPUT_LEN}")),
        "{d}"
    );

    // The longest `and` chain that fits is rendered, reparsed, compared and dropped without
    // overflowing a test thread's stack.
    let n = MAX_INPUT_LEN / 9 - 1;
    let chain = vec!["a pr"; n].join(" and ");
    let f = parse(&chain);
    assert_eq!(f.conjuncts().len(), n);
    assert_eq!(parse(&f.to_string()), f);
    assert!(!f.matches(&bjensen(), &ResourceSchema::user()));
}

#[test]
fn parse_time_is_linear_in_input() {
    // Many shallow alternatives over max-size input: a backtracking parser would take seconds.
    let group = "(emails[type eq \"work\" and value co \"@x.com\"] or not (title pr))";
    let mut s = group.to_string();
    while s.len() + group.len() + 5 < MAX_INPUT_LEN {
        s.push_str(" and ");
        s.push_str(group);
    }
    let started = std::time::Instant::now();
    for _ in 0..20 {
        parse(&s);
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------- properties

mod props {
    use super::super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "userName", "emails", "title", "NOT", "and", "or", "pr", "eq", "$ref", "x-y_z9",
                "true", "null",
            ])
            .prop_map(str::to_string),
            "[a-zA-Z][a-zA-Z0-9_-]{0,6}",
        ]
    }

    fn path(relative: bool) -> impl Strategy<Value = AttrPath> {
        let urn = prop::option::of(prop::sample::select(vec![
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            "URN:x-y:a.b.c",
        ]));
        (urn, name(), prop::option::of(name())).prop_map(move |(urn, name, sub)| {
            if relative {
                AttrPath {
                    urn: None,
                    name,
                    sub: None,
                }
            } else {
                AttrPath {
                    urn: urn.map(str::to_string),
                    name,
                    sub,
                }
            }
        })
    }

    fn value() -> impl Strategy<Value = CompValue> {
        prop_oneof![
            Just(CompValue::Null),
            any::<bool>().prop_map(CompValue::Bool),
            any::<i64>().prop_map(|n| CompValue::Number(n.into())),
            any::<u64>().prop_map(|n| CompValue::Number(n.into())),
            any::<f64>()
                .prop_filter_map("finite", serde_json::Number::from_f64)
                .prop_map(CompValue::Number),
            any::<String>().prop_map(CompValue::String),
        ]
    }

    fn op() -> impl Strategy<Value = CompareOp> {
        prop::sample::select(vec![
            CompareOp::Eq,
            CompareOp::Ne,
            CompareOp::Co,
            CompareOp::Sw,
            CompareOp::Ew,
            CompareOp::Gt,
            CompareOp::Ge,
            CompareOp::Lt,
            CompareOp::Le,
        ])
    }

    fn tree(relative: bool) -> BoxedStrategy<Filter> {
        let leaf = prop_oneof![
            path(relative).prop_map(Filter::Present),
            (path(relative), op(), value()).prop_map(|(path, op, value)| Filter::Compare {
                path,
                op,
                value
            }),
        ];
        leaf.prop_recursive(5, 32, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::and(a, b)),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::or(a, b)),
                inner.prop_map(Filter::negate),
            ]
        })
        .boxed()
    }

    fn top_tree() -> impl Strategy<Value = Filter> {
        let vp = (name(), tree(true))
            .prop_map(|(n, f)| Filter::value_path(AttrPath::new(n, None), f))
            .boxed();
        prop_oneof![3 => tree(false), 1 => vp.clone(), 1 => (tree(false), vp).prop_map(|(a, b)| Filter::or(a, b))]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn render_parse_round_trip(f in top_tree()) {
            let text = f.to_string();
            prop_assert_eq!(parse_filter(&text), Ok(f), "{}", text);
        }

        #[test]
        fn arbitrary_strings_never_panic(input in any::<String>()) {
            let _ = parse_filter(&input);
            let _ = crate::scim::path::parse_path(&input);
        }

        #[test]
        fn filter_like_strings_never_panic(input in r#"[a-z\[\]()" .:\\u0-9é😀-]{0,40}"#) {
            if let Ok(f) = parse_filter(&input) {
                prop_assert_eq!(parse_filter(&f.to_string()), Ok(f));
            }
            if let Ok(p) = crate::scim::path::parse_path(&input) {
                prop_assert_eq!(crate::scim::path::parse_path(&p.to_string()), Ok(p));
            }
        }
    }
}
