//! The schema compiler against hand-written documents: every prefix of a valid document is
//! live and the whole is complete; documents breaking the schema are refused; unsupported
//! keywords are errors when strict and warnings otherwise.

use std::sync::Arc;

use serde_json::{json, Value};

use super::schema::{compile, SchemaError};
use super::Grammar;

fn grammar(schema: Value) -> Arc<Grammar> {
    compile(&schema, true, 200_000)
        .unwrap_or_else(|e| panic!("{schema}: {e}"))
        .grammar
}

fn complete(g: &Arc<Grammar>, text: &str) -> bool {
    g.start()
        .feed_all(g, text.as_bytes())
        .is_some_and(|s| s.is_complete())
}

fn assert_accepts(g: &Arc<Grammar>, text: &str) {
    let mut st = g.start();
    for (i, &b) in text.as_bytes().iter().enumerate() {
        st = st
            .feed(g, b)
            .unwrap_or_else(|| panic!("refused at byte {i} of {text}"));
    }
    assert!(st.is_complete(), "incomplete: {text}");
}

#[test]
fn objects_follow_properties_required_and_additional_properties() {
    let g = grammar(json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "email": {"type": "string", "format": "email"},
        },
        "required": ["name", "age"],
        "additionalProperties": false,
    }));
    assert_accepts(&g, r#"{"name": "Ada", "age": 36}"#);
    assert_accepts(
        &g,
        "{\n  \"name\": \"Ada\",\n  \"age\": 36,\n  \"email\": \"ada@example.org\"\n}",
    );
    for bad in [
        r#"{"age": 36, "name": "Ada"}"#, // required ones come in `required` order
        r#"{"name": "Ada"}"#,
        r#"{"name": "Ada", "age": 151}"#,
        r#"{"name": "Ada", "age": -1}"#,
        r#"{"name": "Ada", "age": 3.5}"#,
        r#"{"name": "Ada", "age": 36, "x": 1}"#,
        r#"{"name": "Ada", "age": 36, "email": "nope"}"#,
        r#"{"name": 1, "age": 36}"#,
        r#"{"name": "Ada", "age": 36,}"#,
    ] {
        assert!(!complete(&g, bad), "accepted {bad}");
    }
    // Extra keys where additionalProperties allows them, with its schema.
    let g = grammar(json!({
        "type": "object",
        "properties": {"id": {"type": "integer"}},
        "additionalProperties": {"type": "boolean"},
    }));
    assert_accepts(&g, r#"{"id": 1, "x": true, "y": false}"#);
    assert_accepts(&g, r#"{}"#);
    assert!(!complete(&g, r#"{"id": 1, "x": 2}"#));
    // Only optional properties: any subset, in key order.
    let g = grammar(json!({"properties": {"a": {"type": "null"}, "b": {"const": 2}}}));
    for ok in [
        "{}",
        r#"{"a": null}"#,
        r#"{"b": 2}"#,
        r#"{"a": null, "b": 2}"#,
    ] {
        assert_accepts(&g, ok);
    }
    assert!(!complete(&g, r#"{"b": 2, "a": null}"#));
    assert!(!complete(&g, r#"{, "b": 2}"#));
}

#[test]
fn arrays_enums_consts_and_combinators() {
    let g = grammar(json!({
        "type": "array",
        "items": {"enum": ["red", "green", 3, null]},
        "minItems": 1,
        "maxItems": 3,
    }));
    assert_accepts(&g, r#"["red"]"#);
    assert_accepts(&g, r#"["green", 3, null]"#);
    for bad in [
        "[]",
        r#"["red", "red", "red", "red"]"#,
        r#"["blue"]"#,
        "[4]",
    ] {
        assert!(!complete(&g, bad), "accepted {bad}");
    }
    let g = grammar(json!({
        "anyOf": [{"type": "string", "pattern": "^[A-Z]{2}$"}, {"type": "integer", "exclusiveMinimum": 10}]
    }));
    assert_accepts(&g, r#""AB""#);
    assert_accepts(&g, "11");
    for bad in ["10", r#""abc""#, "null"] {
        assert!(!complete(&g, bad), "accepted {bad}");
    }
    let g = grammar(json!({"type": ["string", "null"], "maxLength": 2}));
    assert_accepts(&g, "null");
    assert_accepts(&g, r#""ab""#);
    assert!(!complete(&g, r#""abc""#));
    let g = grammar(json!({"prefixItems": [{"type": "boolean"}, {"const": "x"}], "items": false}));
    assert_accepts(&g, r#"[true, "x"]"#);
    assert!(!complete(&g, r#"[true]"#));
}

#[test]
fn refs_resolve_and_may_recurse() {
    let g = grammar(json!({
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "value": {"type": "integer"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
                "required": ["value", "children"],
                "additionalProperties": false,
            }
        },
        "$ref": "#/$defs/node",
    }));
    assert_accepts(
        &g,
        r#"{"value": 1, "children": [{"value": 2, "children": []}, {"value": 3, "children": [{"value": 4, "children": []}]}]}"#,
    );
    assert!(!complete(&g, r#"{"value": 1, "children": [{"value": 2}]}"#));
    // Pydantic's shape: a field wrapped in allOf with a description.
    let g = grammar(json!({
        "$defs": {"Color": {"enum": ["red", "blue"], "type": "string"}},
        "properties": {"c": {"allOf": [{"$ref": "#/$defs/Color"}], "description": "a colour"}},
        "required": ["c"],
        "type": "object",
    }));
    assert_accepts(&g, r#"{"c": "blue"}"#);
    assert!(!complete(&g, r#"{"c": "green"}"#));
}

#[test]
fn free_json_is_any_object_for_type_object() {
    let g = grammar(json!({"type": "object"}));
    for ok in [
        "{}",
        r#"{"a": [1, 2.5e3, {"b": null}], "c": "\u00e9\n", "d": true}"#,
        "{\n  \"nested\": {\"deep\": [[], [[]]]}\n}",
    ] {
        assert_accepts(&g, ok);
    }
    for bad in [
        "[]",
        "\"s\"",
        "{a: 1}",
        "{\"a\": 01}",
        "{} {}",
        "{\"a\": tru}",
    ] {
        assert!(!complete(&g, bad), "accepted {bad}");
    }
    // Nothing but the end may follow the closed object.
    let st = g.start().feed_all(&g, b"{}").unwrap();
    assert!(st.is_complete() && !st.can_continue());
}

#[test]
fn unsupported_keywords_are_errors_when_strict_and_warnings_otherwise() {
    let schema = json!({
        "type": "object",
        "properties": {"n": {"type": "integer", "multipleOf": 5}},
        "required": ["n"],
    });
    let err = compile(&schema, true, 100_000).unwrap_err();
    assert!(
        matches!(&err, SchemaError::Unsupported { keyword, path, .. } if keyword == "multipleOf" && path == "/properties/n"),
        "{err}"
    );
    let lenient = compile(&schema, false, 100_000).unwrap();
    assert_eq!(lenient.warnings.len(), 1, "{:?}", lenient.warnings);
    assert!(lenient.warnings[0].contains("multipleOf"));
    let fmt = json!({"type": "string", "format": "hostname"});
    assert!(compile(&fmt, true, 100_000).is_err());
    assert!(compile(&fmt, false, 100_000).unwrap().warnings[0].contains("hostname"));
    for bad in [
        json!({"type": "integer", "minimum": 5, "maximum": 4}),
        json!({"type": "frobnicate"}),
        json!({"$ref": "https://example.org/schema.json"}),
        json!({"$ref": "#/$defs/missing"}),
        json!(false),
        json!({"type": "string", "pattern": "(unclosed"}),
    ] {
        assert!(
            matches!(
                compile(&bad, false, 100_000),
                Err(SchemaError::Invalid { .. })
            ),
            "{bad}"
        );
    }
    let huge = json!({"type": "array", "items": {"type": "string", "maxLength": 100000}});
    assert!(matches!(
        compile(&huge, true, 10_000),
        Err(SchemaError::Grammar(_))
    ));
}
