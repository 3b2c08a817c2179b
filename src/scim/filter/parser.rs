//! The RFC 7644 §3.4.2.2 filter grammar, with nom for the tokens and a precedence-climbing driver
//! for the logical structure.
//!
//! Why not a pure `alt` tower: every alternative here is chosen by one token of lookahead (`(`,
//! `not (`, an attribute path, then `[` or an operator), so nothing is ever parsed twice and the
//! parse is linear. `and`/`or` chains are loops, not recursion; the only recursion is through
//! `(`, `not (` and `[`, each of which counts against [`MAX_DEPTH`], so hostile input such as
//! 10,000 `(` ends in an `invalidFilter` instead of a stack overflow.
//!
//! Dialects accepted on top of the ABNF (shared/reference/idp-behavior.md §2.3):
//! - Entra's `emails[type eq "work"].value eq "x"`, read as `emails[type eq "work" and value eq "x"]`;
//! - legacy unquoted values (`externalId eq jyoung`): a bare token that is not `true`, `false`,
//!   `null` or a JSON number is a string.

use super::ast::{AttrPath, CompValue, CompareOp, Filter};
use nom::branch::alt;
use nom::bytes::complete::{tag, take_while, take_while1};
use nom::character::complete::{char, digit0, digit1, multispace0, one_of, satisfy};
use nom::combinator::{opt, recognize};
use nom::sequence::pair;
use nom::{IResult, Parser};

/// Longest filter or PATCH path accepted, in bytes. Real IdP filters are under 200 bytes; the cap
/// bounds parse time and the depth of `and`/`or` chains.
pub const MAX_INPUT_LEN: usize = 16 * 1024;
/// Deepest nesting of `(`, `not (` and `[` accepted.
pub const MAX_DEPTH: usize = 64;

/// A syntax error at a byte position of the input; the caller chooses the `scimType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub pos: usize,
    pub message: String,
}

impl SyntaxError {
    pub fn detail(&self, what: &str) -> String {
        format!("invalid {what} at byte {}: {}", self.pos, self.message)
    }
}

type PResult<'a, T> = Result<(&'a str, T), SyntaxError>;

/// The pieces of a PATCH path (RFC 7644 §3.5.2: `attrPath / valuePath [subAttr]`).
pub(crate) struct PathParts {
    pub attr: AttrPath,
    pub filter: Option<Filter>,
    pub sub_attr: Option<String>,
}

pub(crate) fn parse_filter_syntax(src: &str) -> Result<Filter, SyntaxError> {
    let mut g = Grammar::new(src)?;
    let rest = ws(src);
    let (rest, f) = g.filter(rest)?;
    let rest = ws(rest);
    if !rest.is_empty() {
        return Err(g.expected(rest, "'and', 'or' or end of input"));
    }
    Ok(f)
}

pub(crate) fn parse_path_syntax(src: &str) -> Result<PathParts, SyntaxError> {
    let mut g = Grammar::new(src)?;
    let rest = ws(src);
    let (rest, attr) = g.attr_path(rest)?;
    let (rest, filter, sub_attr) = if rest.starts_with('[') {
        let (rest, filter) = g.bracketed(rest, &attr)?;
        let (rest, sub) = g.dotted_sub_attr(rest)?;
        (rest, Some(filter), sub)
    } else {
        (rest, None, None)
    };
    let rest = ws(rest);
    if !rest.is_empty() {
        let what = if filter.is_some() {
            "'.' sub-attribute or end of path"
        } else {
            "'[' value filter or end of path"
        };
        return Err(g.expected(rest, what));
    }
    Ok(PathParts {
        attr,
        filter,
        sub_attr,
    })
}

fn ws(i: &str) -> &str {
    let r: IResult<&str, &str> = multispace0(i);
    match r {
        Ok((rest, _)) => rest,
        Err(_) => i,
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Characters that end a URN or a bare value token.
fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | '"')
}

/// `ATTRNAME = ALPHA *(nameChar)`, plus `$ref` (RFC 7643 §2.1 allows it as a sub-attribute name).
fn attr_name(i: &str) -> IResult<&str, &str> {
    recognize(pair(
        satisfy(|c| c.is_ascii_alphabetic() || c == '$'),
        take_while(is_name_char),
    ))
    .parse(i)
}

fn word(i: &str) -> IResult<&str, &str> {
    take_while1(|c: char| c.is_ascii_alphabetic()).parse(i)
}

/// The next word if it is `kw` (case-insensitive), and the input after it.
fn keyword<'a>(i: &'a str, kw: &str) -> Option<&'a str> {
    match word(i) {
        Ok((rest, w)) if w.eq_ignore_ascii_case(kw) => Some(rest),
        _ => None,
    }
}

fn describe(rest: &str) -> String {
    if rest.is_empty() {
        return "end of input".to_string();
    }
    let shown: String = rest.chars().take(16).collect();
    if shown.len() < rest.len() {
        format!("'{shown}…'")
    } else {
        format!("'{shown}'")
    }
}

/// `number = [ minus ] int [ frac ] [ exp ]` (RFC 8259 §6).
fn json_number_syntax(i: &str) -> IResult<&str, &str> {
    recognize((
        opt(char('-')),
        alt((
            tag("0"),
            recognize(pair(satisfy(|c| matches!(c, '1'..='9')), digit0)),
        )),
        opt(pair(char('.'), digit1)),
        opt((one_of("eE"), opt(one_of("+-")), digit1)),
    ))
    .parse(i)
}

/// A whole token as a JSON number. Integers stay exact; decimals go through Rust's correctly
/// rounded `f64` parser so that rendering and re-parsing gives back the same number. Tokens out
/// of `f64` range are not numbers (they stay legacy strings).
fn json_number(token: &str) -> Option<serde_json::Number> {
    match json_number_syntax(token) {
        Ok(("", _)) => {}
        _ => return None,
    }
    let integral = !token.contains(['.', 'e', 'E']);
    if integral {
        if let Ok(n) = token.parse::<i64>() {
            return Some(n.into());
        }
        if let Ok(n) = token.parse::<u64>() {
            return Some(n.into());
        }
    }
    token
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
}

struct Grammar<'s> {
    src: &'s str,
    depth: usize,
    in_value_filter: bool,
}

impl<'s> Grammar<'s> {
    fn new(src: &'s str) -> Result<Self, SyntaxError> {
        if src.len() > MAX_INPUT_LEN {
            return Err(SyntaxError {
                pos: MAX_INPUT_LEN,
                message: format!("input is {} bytes, the limit is {MAX_INPUT_LEN}", src.len()),
            });
        }
        Ok(Grammar {
            src,
            depth: 0,
            in_value_filter: false,
        })
    }

    /// Byte offset of `rest`, a suffix of the input. (Length arithmetic, not pointers: nom's
    /// `multispace0` returns an empty remainder that does not point at the end of its input.)
    fn pos(&self, rest: &str) -> usize {
        self.src.len().saturating_sub(rest.len())
    }

    fn expected(&self, rest: &str, what: &str) -> SyntaxError {
        SyntaxError {
            pos: self.pos(rest),
            message: format!("expected {what}, found {}", describe(rest)),
        }
    }

    fn error_at(&self, rest: &str, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            pos: self.pos(rest),
            message: message.into(),
        }
    }

    fn enter(&mut self, at: &str) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_at(
                at,
                format!("nesting deeper than {MAX_DEPTH} levels of '(', 'not' or '['"),
            ));
        }
        Ok(())
    }

    /// `FILTER = logExp` with `or` binding loosest.
    fn filter<'a>(&mut self, i: &'a str) -> PResult<'a, Filter> {
        let (mut i, mut lhs) = self.and_expr(i)?;
        loop {
            let after_ws = ws(i);
            match keyword(after_ws, "or") {
                Some(rest) => {
                    let (rest, rhs) = self.and_expr(ws(rest))?;
                    lhs = Filter::or(lhs, rhs);
                    i = rest;
                }
                None => return Ok((i, lhs)),
            }
        }
    }

    fn and_expr<'a>(&mut self, i: &'a str) -> PResult<'a, Filter> {
        let (mut i, mut lhs) = self.unary(i)?;
        loop {
            let after_ws = ws(i);
            match keyword(after_ws, "and") {
                Some(rest) => {
                    let (rest, rhs) = self.unary(ws(rest))?;
                    lhs = Filter::and(lhs, rhs);
                    i = rest;
                }
                None => return Ok((i, lhs)),
            }
        }
    }

    /// `"(" valFilter ")"`, `"not" "(" valFilter ")"`, or an attribute expression. One token of
    /// lookahead picks the branch; `not` not followed by `(` is an attribute named `not`.
    fn unary<'a>(&mut self, i: &'a str) -> PResult<'a, Filter> {
        if i.starts_with('(') {
            return self.parenthesized(i);
        }
        if let Some(rest) = keyword(i, "not") {
            let rest = ws(rest);
            if rest.starts_with('(') {
                let (rest, inner) = self.parenthesized(rest)?;
                return Ok((rest, Filter::negate(inner)));
            }
        }
        self.attr_exp(i)
    }

    fn parenthesized<'a>(&mut self, i: &'a str) -> PResult<'a, Filter> {
        self.enter(i)?;
        let inner_start = ws(i.get(1..).unwrap_or(""));
        let (rest, inner) = self.filter(inner_start)?;
        let rest = ws(rest);
        let rest = match rest.strip_prefix(')') {
            Some(r) => r,
            None => return Err(self.expected(rest, "')', 'and' or 'or'")),
        };
        self.depth -= 1;
        Ok((rest, inner))
    }

    /// `attrPath SP "pr" / attrPath SP compareOp SP compValue / valuePath`, and Entra's
    /// `valuePath "." subAttr SP compareOp SP compValue`.
    fn attr_exp<'a>(&mut self, i: &'a str) -> PResult<'a, Filter> {
        let (rest, path) = self.attr_path(i)?;
        if rest.starts_with('[') {
            if self.in_value_filter {
                return Err(self.error_at(
                    rest,
                    "a value filter cannot be nested inside another value filter",
                ));
            }
            let (rest, inner) = self.bracketed(rest, &path)?;
            let (rest, sub) = self.dotted_sub_attr(rest)?;
            let filter = match sub {
                // Entra: `emails[type eq "work"].value eq "x"` (idp-behavior.md §2.3).
                Some(sub) => {
                    let (rest, cond) = self.operator_tail(ws(rest), AttrPath::new(sub, None))?;
                    return Ok((rest, Filter::value_path(path, Filter::and(inner, cond))));
                }
                None => Filter::value_path(path, inner),
            };
            return Ok((rest, filter));
        }
        self.operator_tail(ws(rest), path)
    }

    /// `"[" valFilter "]"` after `attr`; the paths inside are relative to one element of `attr`.
    fn bracketed<'a>(&mut self, i: &'a str, attr: &AttrPath) -> PResult<'a, Filter> {
        if attr.sub.is_some() {
            return Err(self.error_at(
                i,
                format!("a value filter must follow an attribute, not the sub-attribute '{attr}'"),
            ));
        }
        self.enter(i)?;
        self.in_value_filter = true;
        let (rest, inner) = self.filter(ws(i.get(1..).unwrap_or("")))?;
        let rest = ws(rest);
        let rest = match rest.strip_prefix(']') {
            Some(r) => r,
            None => return Err(self.expected(rest, "']', 'and' or 'or'")),
        };
        self.in_value_filter = false;
        self.depth -= 1;
        Ok((rest, inner))
    }

    /// An optional `"." subAttr` right after `]`.
    fn dotted_sub_attr<'a>(&self, i: &'a str) -> PResult<'a, Option<String>> {
        match i.strip_prefix('.') {
            None => Ok((i, None)),
            Some(after) => match attr_name(after) {
                Ok((rest, name)) => Ok((rest, Some(name.to_string()))),
                Err(_) => Err(self.expected(after, "a sub-attribute name after '.'")),
            },
        }
    }

    fn operator_tail<'a>(&mut self, i: &'a str, path: AttrPath) -> PResult<'a, Filter> {
        const EXPECTED: &str = "an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)";
        let (rest, w) = match word(i) {
            Ok(ok) => ok,
            Err(_) => return Err(self.expected(i, EXPECTED)),
        };
        if w.eq_ignore_ascii_case("pr") {
            return Ok((rest, Filter::Present(path)));
        }
        let Some(op) = CompareOp::from_keyword(w) else {
            return Err(self.expected(i, EXPECTED));
        };
        let (rest, value) = self.comp_value(ws(rest))?;
        Ok((rest, Filter::Compare { path, op, value }))
    }

    /// `[URI ":"] ATTRNAME *1subAttr`. A URN-qualified path's attribute is what follows the last
    /// `:` (the URN itself contains dots, e.g. `…:enterprise:2.0:User:manager.value`).
    fn attr_path<'a>(&self, i: &'a str) -> PResult<'a, AttrPath> {
        let is_urn = i.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"));
        if !is_urn {
            let (rest, (name, sub)) = self.name_and_sub(i)?;
            return Ok((
                rest,
                AttrPath {
                    urn: None,
                    name: name.to_string(),
                    sub: sub.map(str::to_string),
                },
            ));
        }
        let token_len = i.find(is_delimiter).unwrap_or(i.len());
        let token = i.get(..token_len).unwrap_or("");
        let rest = i.get(token_len..).unwrap_or("");
        let colon = token.rfind(':').unwrap_or(0);
        let urn = token.get(..colon).unwrap_or("");
        if urn.len() <= 4 {
            return Err(self.expected(i, "a schema URN followed by ':' and an attribute name"));
        }
        // Parse the name on the suffix of the input (positions are suffix lengths), then check
        // it used up the token.
        let (tail_rest, (name, sub)) = self.name_and_sub(i.get(colon + 1..).unwrap_or(""))?;
        if tail_rest.len() != rest.len() {
            return Err(self.expected(tail_rest, "an attribute name after the schema URN"));
        }
        Ok((
            rest,
            AttrPath {
                urn: Some(urn.to_string()),
                name: name.to_string(),
                sub: sub.map(str::to_string),
            },
        ))
    }

    fn name_and_sub<'a>(&self, i: &'a str) -> PResult<'a, (&'a str, Option<&'a str>)> {
        let (rest, name) = match attr_name(i) {
            Ok(ok) => ok,
            Err(_) => return Err(self.expected(i, "an attribute name")),
        };
        match rest.strip_prefix('.') {
            None => Ok((rest, (name, None))),
            Some(after) => match attr_name(after) {
                Ok((rest, sub)) => Ok((rest, (name, Some(sub)))),
                Err(_) => Err(self.expected(after, "a sub-attribute name after '.'")),
            },
        }
    }

    /// `compValue = false / null / true / number / string`, plus legacy bare tokens.
    fn comp_value<'a>(&self, i: &'a str) -> PResult<'a, CompValue> {
        if i.starts_with('"') {
            let (rest, s) = self.string_literal(i)?;
            return Ok((rest, CompValue::String(s)));
        }
        let len = i.find(is_delimiter).unwrap_or(i.len());
        let token = i.get(..len).unwrap_or("");
        if token.is_empty() {
            return Err(self.expected(i, "a value (string, number, true, false or null)"));
        }
        let rest = i.get(len..).unwrap_or("");
        let value = if token.eq_ignore_ascii_case("true") {
            CompValue::Bool(true)
        } else if token.eq_ignore_ascii_case("false") {
            CompValue::Bool(false)
        } else if token.eq_ignore_ascii_case("null") {
            CompValue::Null
        } else {
            match json_number(token) {
                Some(n) => CompValue::Number(n),
                // Entra's legacy unquoted values: `externalId eq jyoung` (idp-behavior.md §2.3).
                None => CompValue::String(token.to_string()),
            }
        };
        Ok((rest, value))
    }

    /// A JSON string (RFC 8259 §7) with every escape, surrogate pairs included.
    fn string_literal<'a>(&self, i: &'a str) -> PResult<'a, String> {
        let open = i;
        let body = i.get(1..).unwrap_or("");
        let mut out = String::new();
        let mut run_start = 0;
        let mut chars = body.char_indices();
        while let Some((k, c)) = chars.next() {
            match c {
                '"' => {
                    out.push_str(body.get(run_start..k).unwrap_or(""));
                    return Ok((body.get(k + 1..).unwrap_or(""), out));
                }
                '\\' => {
                    out.push_str(body.get(run_start..k).unwrap_or(""));
                    let at = body.get(k..).unwrap_or("");
                    let decoded = match chars.next() {
                        Some((_, '"')) => '"',
                        Some((_, '\\')) => '\\',
                        Some((_, '/')) => '/',
                        Some((_, 'b')) => '\u{8}',
                        Some((_, 'f')) => '\u{c}',
                        Some((_, 'n')) => '\n',
                        Some((_, 'r')) => '\r',
                        Some((_, 't')) => '\t',
                        Some((_, 'u')) => self.unicode_escape(&mut chars, at)?,
                        Some(_) => {
                            return Err(self.error_at(
                                at,
                                format!(
                                    "invalid escape {} in string (allowed: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)",
                                    describe(at).chars().take(4).collect::<String>()
                                ),
                            ))
                        }
                        None => break,
                    };
                    out.push(decoded);
                    run_start = chars.offset();
                }
                c if (c as u32) < 0x20 => {
                    return Err(self.error_at(
                        body.get(k..).unwrap_or(""),
                        "control character in string; JSON requires it escaped",
                    ))
                }
                _ => {}
            }
        }
        Err(self.error_at(open, "unterminated string: expected closing '\"'"))
    }

    /// The `XXXX` after `\u`, and for a high surrogate the `\uXXXX` low half that must follow.
    fn unicode_escape(
        &self,
        chars: &mut std::str::CharIndices<'_>,
        at: &str,
    ) -> Result<char, SyntaxError> {
        let bad = |msg: &str| self.error_at(at, msg.to_string());
        let hex4 = |chars: &mut std::str::CharIndices<'_>| -> Option<u32> {
            let mut v = 0u32;
            for _ in 0..4 {
                let (_, c) = chars.next()?;
                v = v * 16 + c.to_digit(16)?;
            }
            Some(v)
        };
        let hi = hex4(chars).ok_or_else(|| bad("invalid \\u escape: expected 4 hex digits"))?;
        match hi {
            0xD800..=0xDBFF => {
                let low = match (chars.next(), chars.next()) {
                    (Some((_, '\\')), Some((_, 'u'))) => hex4(chars),
                    _ => None,
                };
                match low {
                    Some(lo @ 0xDC00..=0xDFFF) => {
                        let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        char::from_u32(cp).ok_or_else(|| bad("invalid surrogate pair"))
                    }
                    _ => Err(bad(
                        "high surrogate \\uD800-\\uDBFF must be followed by a \\uDC00-\\uDFFF low surrogate",
                    )),
                }
            }
            0xDC00..=0xDFFF => Err(bad("lone low surrogate in \\u escape")),
            v => char::from_u32(v).ok_or_else(|| bad("invalid \\u escape")),
        }
    }
}
