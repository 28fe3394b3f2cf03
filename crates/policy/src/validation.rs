//! Strict validation against the built-in schema, with one opening: attribute accesses under
//! `context.arguments`, whose shape each tool defines and no schema here can know.
//!
//! Cedar's strict validator closes every record, so `context.arguments.amount` is an unknown
//! attribute and `context.arguments has amount` is typed as always false, which would also
//! switch off the checking of everything to its right in an `&&`. So the validator is given a
//! probe of each source in which every `context.arguments… has …` test reads `true` (padded to
//! the same length, so positions still match), and its complaints about accesses rooted at
//! `context.arguments` are dropped. Everything else is checked strictly.

use std::sync::OnceLock;

use cedar_policy::{Schema, ValidationError, ValidationMode, Validator};
use miette::Diagnostic;

use crate::error::PolicyError;

/// The built-in schema's text.
pub const SCHEMA: &str = include_str!("../policies/schema.cedarschema");

/// The validator for the built-in schema, parsed once.
pub(crate) fn validator() -> Result<&'static Validator, PolicyError> {
    static VALIDATOR: OnceLock<Result<Validator, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            Schema::from_cedarschema_str(SCHEMA).map(|(schema, _)| Validator::new(schema)).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| PolicyError::Schema(e.clone()))
}

/// Validates `policies` strictly.
pub(crate) fn validate(policies: &cedar_policy::PolicySet) -> Result<Vec<ValidationError>, PolicyError> {
    let result = validator()?.validate(policies, ValidationMode::Strict);
    Ok(result.validation_errors().cloned().collect())
}

/// The byte span an error points at, if it has one.
pub(crate) fn span(error: &dyn Diagnostic) -> Option<(usize, usize)> {
    let label = error.labels()?.next()?;
    Some((label.offset(), label.len()))
}

/// Whether `error` is about an attribute under `context.arguments`, which validation lets pass.
pub(crate) fn is_argument_access(error: &ValidationError, text: &str) -> bool {
    if !matches!(error, ValidationError::UnsafeAttributeAccess(_)) {
        return false;
    }
    let Some((offset, len)) = span(error) else { return false };
    let Some(snippet) = text.get(offset..offset.saturating_add(len)) else { return false };
    let tokens = tokenize(snippet);
    // The erring expression is `context.arguments.<attr>…` (or the `["…"]` spelling of a step).
    let skip = tokens.iter().take_while(|t| t.is_punct(snippet, '(')).count();
    matches!(argument_path(&tokens[skip..], snippet), Some(end) if end + skip < tokens.len())
}

/// `text` with every `context.arguments… has …` test replaced by `true`, padded to the same length.
pub(crate) fn probe(text: &str) -> String {
    let tokens = tokenize(text);
    let mut out = text.to_owned();
    let mut i = 0;
    while i < tokens.len() {
        let allowed_before = match i.checked_sub(1).map(|p| &tokens[p]) {
            None => true,
            Some(t) => {
                ["(", "{", "[", ",", "&", "|"].iter().any(|p| t.text(text) == *p)
                    || ["if", "then", "else"].iter().any(|k| t.text(text) == *k)
            }
        };
        if allowed_before && let Some(end) = has_test(&tokens[i..], text) {
            let (start, stop) = (tokens[i].start, tokens[i + end - 1].end);
            // Spaces for everything but line breaks, then `true` over the start of `context`.
            let mut replacement: String = text[start..stop]
                .chars()
                .map(|c| if c == '\n' { "\n".to_owned() } else { " ".repeat(c.len_utf8()) })
                .collect();
            replacement.replace_range(..4, "true");
            out.replace_range(start..stop, &replacement);
            i += end;
        } else {
            i += 1;
        }
    }
    out
}

/// A token of Cedar text, by byte span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    start: usize,
    end: usize,
    kind: TokenKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Ident,
    Str,
    Punct,
}

impl Token {
    fn text<'t>(&self, source: &'t str) -> &'t str {
        &source[self.start..self.end]
    }

    fn is_ident(&self, source: &str, word: &str) -> bool {
        self.kind == TokenKind::Ident && self.text(source) == word
    }

    fn is_punct(&self, source: &str, c: char) -> bool {
        self.kind == TokenKind::Punct && self.text(source).starts_with(c)
    }
}

/// Splits Cedar text into identifiers, string literals and single punctuation characters,
/// skipping whitespace and `//` comments.
fn tokenize(text: &str) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let start = i;
        let kind = if b.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        } else if b == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(bytes.len());
            TokenKind::Str
        } else if b.is_ascii_alphabetic() || b == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            TokenKind::Ident
        } else {
            i += text[i..].chars().next().map_or(1, char::len_utf8);
            TokenKind::Punct
        };
        tokens.push(Token { start, end: i, kind });
    }
    tokens
}

/// If `tokens` start with `context.arguments` (either spelling), how many tokens that takes.
fn argument_path(tokens: &[Token], text: &str) -> Option<usize> {
    match tokens {
        [c, dot, a, ..] if c.is_ident(text, "context") && dot.is_punct(text, '.') && a.is_ident(text, "arguments") => {
            Some(3)
        }
        [c, open, a, close, ..]
            if c.is_ident(text, "context")
                && open.is_punct(text, '[')
                && a.kind == TokenKind::Str
                && a.text(text) == "\"arguments\""
                && close.is_punct(text, ']') =>
        {
            Some(4)
        }
        _ => None,
    }
}

/// If `tokens` start with `context.arguments(.a | ["a"])* has a(.b)*`, how many tokens that takes.
fn has_test(tokens: &[Token], text: &str) -> Option<usize> {
    let mut i = argument_path(tokens, text)?;
    loop {
        match &tokens[i..] {
            [dot, a, ..] if dot.is_punct(text, '.') && a.kind == TokenKind::Ident => i += 2,
            [open, a, close, ..]
                if open.is_punct(text, '[') && a.kind == TokenKind::Str && close.is_punct(text, ']') =>
            {
                i += 3
            }
            _ => break,
        }
    }
    let (has, attr) = (tokens.get(i)?, tokens.get(i + 1)?);
    if !has.is_ident(text, "has") || !matches!(attr.kind, TokenKind::Ident | TokenKind::Str) {
        return None;
    }
    i += 2;
    while let [dot, a, ..] = &tokens[i..] {
        if !(dot.is_punct(text, '.') && a.kind == TokenKind::Ident) {
            break;
        }
        i += 2;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_schema_parses() {
        assert!(validator().is_ok());
    }

    #[test]
    fn probe_replaces_argument_has_tests_and_keeps_positions() {
        let text = "when { context.arguments has amount && context.arguments.amount > 1 }";
        let probed = probe(text);
        assert_eq!(probed.len(), text.len());
        assert_eq!(probed, format!("when {{ true{} && context.arguments.amount > 1 }}", " ".repeat(24)));
    }

    #[test]
    fn probe_handles_nested_paths_quoted_keys_and_extended_has() {
        let text = r#"{ context["arguments"].a["b c"] has d.e || (context.arguments has "x y") }"#;
        let probed = probe(text);
        assert_eq!(probed.len(), text.len());
        assert!(!probed.contains("has"), "{probed}");
        assert!(probed.starts_with("{ true ") && probed.contains("(true"), "{probed}");
    }

    #[test]
    fn probe_leaves_other_text_alone() {
        for text in [
            r#"when { context has arguments }"#,
            r#"when { principal.id == "context.arguments has x" } // context.arguments has y"#,
            r#"when { 1 + context.arguments has x }"#,
            r#"when { resource has riskTier }"#,
        ] {
            assert_eq!(probe(text), text);
        }
    }

    #[test]
    fn probe_keeps_line_breaks() {
        let text = "{ context.arguments\n  has amount }";
        assert_eq!(probe(text), format!("{{ true{}\n{}}}", " ".repeat(13), " ".repeat(13)));
    }
}
