//! What can go wrong compiling a policy set, located in its source.

use std::fmt;

/// What kind of problem a policy source has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The text is not Cedar.
    Syntax,
    /// The policy does not agree with the built-in schema (strict validation).
    Schema,
    /// Two policies of the set share an id.
    DuplicateId,
    /// Cedar that this crate does not accept, such as templates.
    Unsupported,
}

/// One problem in one policy source, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The name of the source (a file path or a label).
    pub source: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The id of the policy concerned, when known.
    pub policy: Option<String>,
    pub kind: ProblemKind,
    /// What is wrong, lowercase, with a hint when Cedar offers one.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.source, self.line, self.column, self.message)
    }
}

/// Why a policy set could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The sources have problems; every one found is listed, in source order.
    #[error("policy set '{set}' has {} problem(s):{}", problems.len(), Listing(problems))]
    Invalid { set: String, problems: Vec<Problem> },
    /// The built-in schema does not parse: a bug in this crate.
    #[error("built-in policy schema: {0}")]
    Schema(String),
}

struct Listing<'a>(&'a [Problem]);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "ab\ncé\nx";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 3), (2, 1));
        assert_eq!(position(text, 6), (2, 3));
        assert_eq!(position(text, 8), (3, 2));
        assert_eq!(position(text, 5), (2, 2), "inside a character counts from its start");
        assert_eq!(position(text, 99), (3, 2));
    }

    #[test]
    fn invalid_lists_every_problem() {
        let problem = |line| Problem {
            source: "a.cedar".to_owned(),
            line,
            column: 2,
            policy: None,
            kind: ProblemKind::Syntax,
            message: "unexpected token".to_owned(),
        };
        let error = PolicyError::Invalid { set: "main".to_owned(), problems: vec![problem(1), problem(4)] };
        assert_eq!(
            error.to_string(),
            "policy set 'main' has 2 problem(s):\n  a.cedar:1:2: unexpected token\n  a.cedar:4:2: unexpected token"
        );
    }
}
