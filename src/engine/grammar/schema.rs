//! JSON Schema to grammar: what `response_format: {"type": "json_schema"}` constrains the output
//! to, and `{"type": "json_object"}` too (the schema `{"type": "object"}`).
//!
//! Enforced: `type` (one or several), `enum`, `const`, `properties`, `required`,
//! `additionalProperties` (false, true or a schema), `items`, `prefixItems`, `minItems`,
//! `maxItems`, `anyOf`, `oneOf` (as `anyOf`: exclusivity is not checked), `allOf` of one schema,
//! `$ref` into the same document (`#`, `#/$defs/…`, `#/definitions/…`; recursion allowed),
//! string `pattern`, `format` (`date`, `time`, `date-time`, `uuid`, `email`), `minLength`,
//! `maxLength`, and number bounds (`minimum`, `maximum`, both `exclusive…` spellings; a
//! fractional bound on `number` is tightened to the whole number inside it). Annotations
//! (`title`, `description`, `default`, `examples`…) are ignored. Anything else is
//! unsupported: an error naming it when the schema is `strict`, otherwise a warning and the
//! keyword is not enforced.
//!
//! Object properties come out required ones first, in `required` order (which is declaration
//! order for the schemas SDKs generate), then optional ones in key order, each of which may be
//! left out; keys beyond `properties` only where `additionalProperties` allows them. Whitespace
//! between tokens is limited to a space or a newline and an indent, so a model cannot stall in
//! blank output.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::numbers::{self, Bound};
use super::regex::{self, PatternError};
use super::{Builder, ByteSet, Elem, Grammar, GrammarError, RuleId};

/// Keywords that only describe: never enforced, never warned about.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "definitions",
    "deprecated",
    "readOnly",
    "writeOnly",
    "discriminator",
];

/// Most indentation bytes after a newline between tokens.
const MAX_INDENT: usize = 20;

/// Why a schema cannot be compiled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// A keyword the compiler does not enforce, in a strict schema.
    #[error("{path}: `{keyword}` is not supported{detail}")]
    Unsupported {
        /// Where (a JSON pointer into the schema).
        path: String,
        /// The keyword.
        keyword: String,
        /// More, starting with a separator, or empty.
        detail: String,
    },
    /// Not a valid schema, or one nothing satisfies.
    #[error("{path}: {message}")]
    Invalid {
        /// Where.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Too large.
    #[error(transparent)]
    Grammar(#[from] GrammarError),
}

/// A compiled schema: its grammar and what it could not enforce.
#[derive(Debug)]
pub struct CompiledSchema {
    /// The grammar of the JSON text.
    pub grammar: Arc<Grammar>,
    /// Keywords ignored (non-strict schemas only), each with where it was.
    pub warnings: Vec<String>,
}

/// Literal text around each document: `open` JSON `close`, and with a `separator` one or more
/// such blocks (tool calls: [`crate::engine::tools`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing<'a> {
    /// Before each document.
    pub open: &'a [u8],
    /// After each.
    pub close: &'a [u8],
    /// Between blocks; `None`: exactly one block.
    pub separator: Option<&'a [u8]>,
}

/// Compile `schema`; `strict` makes unsupported keywords errors; `limit` bounds the grammar.
pub fn compile(schema: &Value, strict: bool, limit: usize) -> Result<CompiledSchema, SchemaError> {
    compile_framed(schema, strict, limit, None)
}

/// [`compile`], with the documents framed by literal text.
pub fn compile_framed(
    schema: &Value,
    strict: bool,
    limit: usize,
    framing: Option<&Framing<'_>>,
) -> Result<CompiledSchema, SchemaError> {
    let mut c = Compiler {
        b: Builder::new(limit),
        root: schema,
        strict,
        warnings: Vec::new(),
        refs: HashMap::new(),
        shared: HashMap::new(),
    };
    let mut root = c.schema(schema, "")?;
    if let Some(f) = framing {
        let mut block = c.b.lit(f.open);
        block.push(root);
        block.extend(c.b.lit(f.close));
        root = c.b.seq(block)?;
        if let Some(sep) = f.separator {
            let mut more = c.b.lit(sep);
            more.push(root);
            let rest = c.b.star(more)?;
            root = c.b.seq(vec![root, rest])?;
        }
    }
    Ok(CompiledSchema {
        grammar: Arc::new(c.b.build(root)),
        warnings: c.warnings,
    })
}

struct Compiler<'a> {
    b: Builder,
    root: &'a Value,
    strict: bool,
    warnings: Vec<String>,
    refs: HashMap<String, RuleId>,
    shared: HashMap<&'static str, Elem>,
}

fn invalid(path: &str, message: impl Into<String>) -> SchemaError {
    SchemaError::Invalid {
        path: display(path),
        message: message.into(),
    }
}

fn display(path: &str) -> String {
    if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    }
}

impl Compiler<'_> {
    /// A keyword that cannot be enforced: an error if strict, else a warning.
    fn unsupported(&mut self, path: &str, keyword: &str, detail: &str) -> Result<(), SchemaError> {
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        };
        if self.strict {
            return Err(SchemaError::Unsupported {
                path: display(path),
                keyword: keyword.to_string(),
                detail,
            });
        }
        self.warnings.push(format!(
            "`{keyword}` at {} is not enforced{detail}",
            display(path)
        ));
        Ok(())
    }

    /// A building block made once per grammar.
    fn shared(
        &mut self,
        name: &'static str,
        make: impl FnOnce(&mut Self) -> Result<Elem, SchemaError>,
    ) -> Result<Elem, SchemaError> {
        if let Some(e) = self.shared.get(name) {
            return Ok(*e);
        }
        let e = make(self)?;
        self.shared.insert(name, e);
        Ok(e)
    }

    /// Optional whitespace between tokens.
    fn ws(&mut self) -> Result<Elem, SchemaError> {
        self.shared("ws", |c| {
            let indent = c.b.class(ByteSet::byte(b' ').union(ByteSet::byte(b'\t')));
            let indent = c.b.rep(indent, 0, Some(MAX_INDENT))?;
            let nl = c.b.class(ByteSet::byte(b'\n'));
            let space = c.b.lit(b" ");
            Ok(c.b.alt(vec![Vec::new(), space, vec![nl, indent]])?)
        })
    }

    /// `ws <byte> ws`: a separator or bracket with space around it.
    fn punct(&mut self, byte: u8) -> Result<Vec<Elem>, SchemaError> {
        let ws = self.ws()?;
        let p = self.b.class(ByteSet::byte(byte));
        Ok(vec![ws, p, ws])
    }

    fn literal(&mut self, v: &Value) -> Result<Elem, SchemaError> {
        let text = serde_json::to_string(v).expect("a Value serialises");
        let elems = self.b.lit(text.as_bytes());
        Ok(self.b.seq(elems)?)
    }

    /// Any JSON value.
    fn any_value(&mut self) -> Result<Elem, SchemaError> {
        if let Some(e) = self.shared.get("value") {
            return Ok(*e);
        }
        let id = self.b.declare();
        let value = Elem::Rule(id);
        self.shared.insert("value", value);
        let object = self.map(value)?;
        let array = self.list(value, 0, None)?;
        let string = self.shared("string", |c| Ok(regex::any_string(&mut c.b, 0, None)?))?;
        let number = self.shared("number", |c| Ok(numbers::any(&mut c.b, false)?))?;
        let mut alts = vec![vec![object], vec![array], vec![string], vec![number]];
        for lit in ["true", "false", "null"] {
            alts.push(self.b.lit(lit.as_bytes()));
        }
        self.b.define(id, alts)?;
        Ok(value)
    }

    /// An object of any keys whose values are `value`.
    fn map(&mut self, value: Elem) -> Result<Elem, SchemaError> {
        let key = self.shared("string", |c| Ok(regex::any_string(&mut c.b, 0, None)?))?;
        let mut kv = vec![key];
        kv.extend(self.punct(b':')?);
        kv.push(value);
        let kv = self.b.seq(kv)?;
        let mut more = self.punct(b',')?;
        more.push(kv);
        let more = self.b.star(more)?;
        let entries = self.b.opt(vec![kv, more])?;
        let mut elems = self.b.lit(b"{");
        let ws = self.ws()?;
        elems.extend([ws, entries, ws]);
        elems.extend(self.b.lit(b"}"));
        Ok(self.b.seq(elems)?)
    }

    /// An array of `min..=max` items.
    fn list(&mut self, item: Elem, min: usize, max: Option<usize>) -> Result<Elem, SchemaError> {
        let ws = self.ws()?;
        let mut elems = self.b.lit(b"[");
        elems.push(ws);
        if max != Some(0) {
            let mut more = self.punct(b',')?;
            more.push(item);
            let more = self.b.seq(more)?;
            let rest = self.b.rep(
                more,
                min.saturating_sub(1),
                max.map(|m| m.saturating_sub(1)),
            )?;
            let items = if min == 0 {
                self.b.opt(vec![item, rest])?
            } else {
                self.b.seq(vec![item, rest])?
            };
            elems.extend([items, ws]);
        }
        elems.extend(self.b.lit(b"]"));
        Ok(self.b.seq(elems)?)
    }

    fn schema(&mut self, s: &Value, path: &str) -> Result<Elem, SchemaError> {
        let obj = match s {
            Value::Bool(true) => return self.any_value(),
            Value::Bool(false) => return Err(invalid(path, "the schema `false` matches nothing")),
            Value::Object(o) => o,
            _ => return Err(invalid(path, "a schema must be an object or a boolean")),
        };
        if let Some(r) = obj.get("$ref") {
            return self.reference(r, path);
        }
        for (key, keyword) in [("anyOf", "anyOf"), ("oneOf", "oneOf")] {
            if let Some(alts) = obj.get(key) {
                return self.any_of(obj, keyword, alts, path);
            }
        }
        if let Some(all) = obj.get("allOf") {
            let Some(list) = all.as_array().filter(|l| !l.is_empty()) else {
                return Err(invalid(path, "`allOf` must be a non-empty array"));
            };
            if list.len() > 1 {
                self.unsupported(path, "allOf", "only one schema; the first is used")?;
            }
            let merged = merge(obj, &list[0], "allOf");
            return self.schema(&merged, &format!("{path}/allOf/0"));
        }
        if let Some(c) = obj.get("const") {
            self.check_keywords(obj, path, &["const", "type", "enum"])?;
            return self.literal(c);
        }
        if let Some(e) = obj.get("enum") {
            self.check_keywords(obj, path, &["enum", "type"])?;
            let Some(values) = e.as_array().filter(|v| !v.is_empty()) else {
                return Err(invalid(path, "`enum` must be a non-empty array"));
            };
            let alts = values
                .iter()
                .map(|v| self.literal(v).map(|e| vec![e]))
                .collect::<Result<_, _>>()?;
            return Ok(self.b.alt(alts)?);
        }
        let types: Vec<&str> = match obj.get("type") {
            None => infer_type(obj).into_iter().collect(),
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts
                .iter()
                .map(|t| {
                    t.as_str()
                        .ok_or_else(|| invalid(path, "`type` entries must be strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid(path, "`type` must be a string or an array")),
        };
        if types.is_empty() {
            self.check_keywords(obj, path, &[])?;
            return self.any_value();
        }
        let mut known = vec!["type"];
        for t in &types {
            known.extend_from_slice(keywords(t));
        }
        self.check_keywords(obj, path, &known)?;
        let mut alts = Vec::new();
        for t in types {
            alts.push(vec![self.typed(obj, t, path)?]);
        }
        Ok(self.b.alt(alts)?)
    }

    /// Every keyword of `obj` not in `known` (nor an annotation) is unsupported.
    fn check_keywords(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        known: &[&str],
    ) -> Result<(), SchemaError> {
        for key in obj.keys() {
            if !known.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
                self.unsupported(path, key, "")?;
            }
        }
        Ok(())
    }

    fn reference(&mut self, r: &Value, path: &str) -> Result<Elem, SchemaError> {
        let Some(r) = r.as_str() else {
            return Err(invalid(path, "`$ref` must be a string"));
        };
        if let Some(&id) = self.refs.get(r) {
            return Ok(Elem::Rule(id));
        }
        let Some(pointer) = r.strip_prefix('#') else {
            return Err(invalid(
                path,
                format!("`$ref` {r:?}: only references into the same schema (`#/…`) are supported"),
            ));
        };
        let root = self.root;
        let target = root
            .pointer(pointer)
            .ok_or_else(|| invalid(path, format!("`$ref` {r:?} points at nothing")))?;
        let id = self.b.declare();
        self.refs.insert(r.to_string(), id);
        let body = self.schema(target, pointer)?;
        self.b.define(id, vec![vec![body]])?;
        Ok(Elem::Rule(id))
    }

    fn any_of(
        &mut self,
        obj: &Map<String, Value>,
        keyword: &str,
        alts: &Value,
        path: &str,
    ) -> Result<Elem, SchemaError> {
        let Some(list) = alts.as_array().filter(|l| !l.is_empty()) else {
            return Err(invalid(
                path,
                format!("`{keyword}` must be a non-empty array"),
            ));
        };
        let mut out = Vec::new();
        for (i, alt) in list.iter().enumerate() {
            let merged = merge(obj, alt, keyword);
            out.push(vec![self.schema(&merged, &format!("{path}/{keyword}/{i}"))?]);
        }
        Ok(self.b.alt(out)?)
    }

    fn typed(
        &mut self,
        obj: &Map<String, Value>,
        t: &str,
        path: &str,
    ) -> Result<Elem, SchemaError> {
        match t {
            "null" | "boolean" => {
                if t == "null" {
                    let l = self.b.lit(b"null");
                    return Ok(self.b.seq(l)?);
                }
                let (yes, no) = (self.b.lit(b"true"), self.b.lit(b"false"));
                Ok(self.b.alt(vec![yes, no])?)
            }
            "string" => self.string(obj, path),
            "integer" | "number" => self.number(obj, path, t == "integer"),
            "object" => self.object(obj, path),
            "array" => self.array(obj, path),
            other => Err(invalid(path, format!("unknown type `{other}`"))),
        }
    }

    fn string(&mut self, obj: &Map<String, Value>, path: &str) -> Result<Elem, SchemaError> {
        let min = count(obj, "minLength", path)?;
        let max = count(obj, "maxLength", path)?;
        let pattern = match (obj.get("pattern"), obj.get("format")) {
            (Some(p), format) => {
                if format.is_some() {
                    self.unsupported(
                        path,
                        "format",
                        "together with `pattern`; the pattern is used",
                    )?;
                }
                let p = p
                    .as_str()
                    .ok_or_else(|| invalid(path, "`pattern` must be a string"))?;
                Some(p.to_string())
            }
            (None, Some(f)) => {
                let f = f
                    .as_str()
                    .ok_or_else(|| invalid(path, "`format` must be a string"))?;
                match regex::format_pattern(f) {
                    Some(p) => Some(p.to_string()),
                    None => {
                        self.unsupported(
                            path,
                            "format",
                            &format!("`{f}`; supported: date, time, date-time, uuid, email"),
                        )?;
                        None
                    }
                }
            }
            (None, None) => None,
        };
        let Some(pattern) = pattern else {
            if let (Some(lo), Some(hi)) = (min, max) {
                if lo > hi {
                    return Err(invalid(path, "`minLength` is above `maxLength`"));
                }
            }
            return Ok(regex::any_string(&mut self.b, min.unwrap_or(0), max)?);
        };
        if min.is_some() || max.is_some() {
            self.unsupported(path, "minLength", "together with `pattern` or `format`")?;
        }
        regex::string_matching(&mut self.b, &pattern).map_err(|e| match e {
            PatternError::Grammar(g) => SchemaError::Grammar(g),
            PatternError::Unsupported(what) => SchemaError::Unsupported {
                path: display(path),
                keyword: "pattern".into(),
                detail: format!(" ({what})"),
            },
            PatternError::Syntax(m) => invalid(path, format!("`pattern`: {m}")),
        })
    }

    fn number(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        integer: bool,
    ) -> Result<Elem, SchemaError> {
        let min = bound(obj, "minimum", "exclusiveMinimum", path, true, integer)?;
        let max = bound(obj, "maximum", "exclusiveMaximum", path, false, integer)?;
        if min.is_none() && max.is_none() {
            return self.shared(if integer { "integer" } else { "number" }, |c| {
                Ok(numbers::any(&mut c.b, integer)?)
            });
        }
        numbers::bounded(&mut self.b, min, max, integer)?
            .ok_or_else(|| invalid(path, "no number lies within the bounds"))
    }

    fn object(&mut self, obj: &Map<String, Value>, path: &str) -> Result<Elem, SchemaError> {
        let empty = Map::new();
        let props = match obj.get("properties") {
            None => &empty,
            Some(Value::Object(p)) => p,
            Some(_) => return Err(invalid(path, "`properties` must be an object")),
        };
        let required: Vec<&str> = match obj.get("required") {
            None => Vec::new(),
            Some(Value::Array(r)) => r
                .iter()
                .map(|k| {
                    k.as_str()
                        .ok_or_else(|| invalid(path, "`required` entries must be strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid(path, "`required` must be an array")),
        };
        let additional = match obj.get("additionalProperties") {
            None if props.is_empty() => Some(Value::Bool(true)),
            None | Some(Value::Bool(false)) => None,
            Some(v) => Some(v.clone()),
        };
        let extra_value = match &additional {
            Some(v) => Some(self.schema(v, &format!("{path}/additionalProperties"))?),
            None => None,
        };
        if props.is_empty() && required.is_empty() {
            let value = match extra_value {
                Some(v) => v,
                None => {
                    let ws = self.ws()?;
                    let mut e = self.b.lit(b"{");
                    e.push(ws);
                    e.extend(self.b.lit(b"}"));
                    return Ok(self.b.seq(e)?);
                }
            };
            return self.map(value);
        }
        let mut seen = Vec::new();
        let mut req = Vec::new();
        for &name in &required {
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            let sub = match props.get(name) {
                Some(s) => s.clone(),
                None if additional.is_some() => additional.clone().expect("checked"),
                None => {
                    return Err(invalid(
                        path,
                        format!("`{name}` is required but not in `properties` and `additionalProperties` is false"),
                    ))
                }
            };
            req.push(self.property(name, &sub, path)?);
        }
        let mut opt = Vec::new();
        for (name, sub) in props {
            if !seen.contains(&name.as_str()) {
                opt.push(self.property(name, sub, path)?);
            }
        }
        // Extra keys come last, any number of them.
        let extra = match extra_value {
            Some(v) => {
                let key = self.shared("string", |c| Ok(regex::any_string(&mut c.b, 0, None)?))?;
                let mut kv = vec![key];
                kv.extend(self.punct(b':')?);
                kv.push(v);
                let kv = self.b.seq(kv)?;
                let mut sep_kv = self.punct(b',')?;
                sep_kv.push(kv);
                Some((kv, self.b.star(sep_kv)?))
            }
            None => None,
        };
        self.entries(req, opt, extra)
    }

    /// `"name": value` for a property.
    fn property(&mut self, name: &str, sub: &Value, path: &str) -> Result<Elem, SchemaError> {
        let value = self.schema(sub, &format!("{path}/properties/{}", escape_pointer(name)))?;
        let key = self.literal(&Value::String(name.to_string()))?;
        let mut kv = vec![key];
        kv.extend(self.punct(b':')?);
        kv.push(value);
        Ok(self.b.seq(kv)?)
    }

    /// `{ required…, optional…, extra… }`, commas only between what is present.
    fn entries(
        &mut self,
        req: Vec<Elem>,
        opt: Vec<Elem>,
        extra: Option<(Elem, Elem)>,
    ) -> Result<Elem, SchemaError> {
        let sep = self.punct(b',')?;
        // suffixes[i]: what may follow once the entries before optional entry i are decided:
        // each optional entry from i on, present or not, in order, then the extra entries.
        let last = match extra {
            Some((_, tail)) => vec![tail],
            None => Vec::new(),
        };
        let mut suffixes = vec![self.b.seq(last)?];
        for &kv in opt.iter().rev() {
            let mut with = sep.clone();
            with.push(kv);
            let one = self.b.opt(with)?;
            let next = *suffixes.last().expect("non-empty");
            suffixes.push(self.b.seq(vec![one, next])?);
        }
        suffixes.reverse();
        let body = if req.is_empty() {
            // Nothing, or the first entry present and what follows it.
            let mut alts = vec![Vec::new()];
            for (i, &kv) in opt.iter().enumerate() {
                alts.push(vec![kv, suffixes[i + 1]]);
            }
            if let Some((kv, tail)) = extra {
                alts.push(vec![kv, tail]);
            }
            self.b.alt(alts)?
        } else {
            let mut elems = Vec::new();
            for (i, &kv) in req.iter().enumerate() {
                if i > 0 {
                    elems.extend(sep.iter().copied());
                }
                elems.push(kv);
            }
            elems.push(suffixes[0]);
            self.b.seq(elems)?
        };
        let ws = self.ws()?;
        let mut elems = self.b.lit(b"{");
        elems.extend([ws, body, ws]);
        elems.extend(self.b.lit(b"}"));
        Ok(self.b.seq(elems)?)
    }

    fn array(&mut self, obj: &Map<String, Value>, path: &str) -> Result<Elem, SchemaError> {
        let min = count(obj, "minItems", path)?.unwrap_or(0);
        let max = count(obj, "maxItems", path)?;
        if max.is_some_and(|m| m < min) {
            return Err(invalid(path, "`minItems` is above `maxItems`"));
        }
        let item = match obj.get("items") {
            None | Some(Value::Bool(true)) => self.any_value()?,
            Some(Value::Bool(false)) if obj.contains_key("prefixItems") => {
                return self.tuple(obj, path, None, min, max)
            }
            Some(Value::Bool(false)) => {
                return Err(invalid(
                    path,
                    "`items: false` without `prefixItems` allows only []",
                ))
            }
            Some(s) => self.schema(s, &format!("{path}/items"))?,
        };
        if obj.contains_key("prefixItems") {
            return self.tuple(obj, path, Some(item), min, max);
        }
        self.list(item, min, max)
    }

    /// `prefixItems`: the listed items in order, then `rest` items if allowed.
    fn tuple(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        rest: Option<Elem>,
        min: usize,
        max: Option<usize>,
    ) -> Result<Elem, SchemaError> {
        let Some(prefix) = obj.get("prefixItems").and_then(Value::as_array) else {
            return Err(invalid(path, "`prefixItems` must be an array"));
        };
        let n = prefix.len();
        if rest.is_none() && min > n {
            return Err(invalid(
                path,
                "`minItems` is above the number of `prefixItems`",
            ));
        }
        // All prefix items are written (a valid, simpler subset), then extras up to `max`.
        if max.is_some_and(|m| m < n) {
            self.unsupported(path, "maxItems", "below the number of `prefixItems`")?;
        }
        let mut elems = self.b.lit(b"[");
        let ws = self.ws()?;
        elems.push(ws);
        for (i, p) in prefix.iter().enumerate() {
            if i > 0 {
                elems.extend(self.punct(b',')?);
            }
            elems.push(self.schema(p, &format!("{path}/prefixItems/{i}"))?);
        }
        if let Some(item) = rest {
            let mut more = self.punct(b',')?;
            more.push(item);
            let more = self.b.seq(more)?;
            let extra_min = min.saturating_sub(n);
            let extra_max = max.map(|m| m.saturating_sub(n));
            if n == 0 {
                let list = self.list(item, min, max)?;
                return Ok(list);
            }
            elems.push(self.b.rep(more, extra_min, extra_max)?);
        }
        elems.push(ws);
        elems.extend(self.b.lit(b"]"));
        Ok(self.b.seq(elems)?)
    }
}

/// `alt` with the keywords of `parent` it does not set (the combinator itself dropped).
fn merge(parent: &Map<String, Value>, alt: &Value, combinator: &str) -> Value {
    let Value::Object(a) = alt else {
        return alt.clone();
    };
    let mut out = a.clone();
    for (k, v) in parent {
        if k != combinator && !out.contains_key(k) && !ANNOTATIONS.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// The keywords enforced for a type.
fn keywords(t: &str) -> &'static [&'static str] {
    match t {
        "string" => &["pattern", "format", "minLength", "maxLength"],
        "integer" | "number" => &["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"],
        "object" => &["properties", "required", "additionalProperties"],
        "array" => &["items", "prefixItems", "minItems", "maxItems"],
        _ => &[],
    }
}

/// The type a schema without `type` implies from its keywords, if any.
fn infer_type(obj: &Map<String, Value>) -> Option<&'static str> {
    let has = |keys: &[&str]| keys.iter().any(|k| obj.contains_key(*k));
    if has(&["properties", "required", "additionalProperties"]) {
        Some("object")
    } else if has(&["items", "prefixItems", "minItems", "maxItems"]) {
        Some("array")
    } else if has(&["pattern", "format", "minLength", "maxLength"]) {
        Some("string")
    } else if has(&["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]) {
        Some("number")
    } else {
        None
    }
}

/// A non-negative integer keyword.
fn count(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<usize>, SchemaError> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| invalid(path, format!("`{key}` must be a non-negative integer"))),
    }
}

/// A lower (`lower`) or upper bound from `key` and its exclusive form (a number since draft 6,
/// a boolean beside `key` in draft 4). On `number`, a fractional bound is tightened to the
/// whole number inside it.
fn bound(
    obj: &Map<String, Value>,
    key: &str,
    exclusive_key: &str,
    path: &str,
    lower: bool,
    integer: bool,
) -> Result<Option<Bound>, SchemaError> {
    let num = |k: &str| -> Result<Option<f64>, SchemaError> {
        match obj.get(k) {
            None | Some(Value::Bool(_)) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| invalid(path, format!("`{k}` must be a number"))),
        }
    };
    let inclusive = num(key)?;
    let exclusive = num(exclusive_key)?;
    let draft4 = obj.get(exclusive_key) == Some(&Value::Bool(true));
    let mut candidates = Vec::new();
    if let Some(v) = inclusive {
        candidates.push(Bound {
            value: v,
            exclusive: draft4,
        });
    }
    if let Some(v) = exclusive {
        candidates.push(Bound {
            value: v,
            exclusive: true,
        });
    }
    // The tighter of the two.
    let tighter = candidates.into_iter().reduce(|a, b| {
        let a_tighter = if lower {
            a.value > b.value || (a.value == b.value && a.exclusive)
        } else {
            a.value < b.value || (a.value == b.value && a.exclusive)
        };
        if a_tighter {
            a
        } else {
            b
        }
    });
    Ok(tighter.map(|b| {
        if integer || b.value.fract() == 0.0 {
            b
        } else {
            Bound {
                value: if lower {
                    b.value.ceil()
                } else {
                    b.value.floor()
                },
                exclusive: false,
            }
        }
    }))
}

/// A JSON pointer segment.
fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}
