use std::fmt;

use serde_saphyr::Spanned;

/// A position in a pipeline file, 1-based. `line == 0` means "unknown".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    pub fn of<T>(spanned: &Spanned<T>) -> Self {
        Self { line: spanned.referenced.line(), column: spanned.referenced.column() }
    }
}

/// One mistake in a pipeline file: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub pos: Pos,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(pos: Pos, message: impl Into<String>) -> Self {
        Self { pos, message: message.into(), hint: None }
    }

    pub fn at<T>(spanned: &Spanned<T>, message: impl Into<String>) -> Self {
        Self::new(Pos::of(spanned), message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Renders as `file:line:col: message` (and an indented hint), the shape editors and CI annotate.
    pub fn display_in<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        DisplayIn { diagnostic: self, file }
    }
}

struct DisplayIn<'a> {
    diagnostic: &'a Diagnostic,
    file: &'a str,
}

impl fmt::Display for DisplayIn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.diagnostic;
        if d.pos.line > 0 {
            write!(f, "{}:{}:{}: {}", self.file, d.pos.line, d.pos.column, d.message)?;
        } else {
            write!(f, "{}: {}", self.file, d.message)?;
        }
        if let Some(hint) = &d.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display_in("<pipeline>").fmt(f)
    }
}

impl From<serde_saphyr::Error> for Diagnostic {
    fn from(err: serde_saphyr::Error) -> Self {
        let pos = err.location().map(|l| Pos { line: l.line(), column: l.column() }).unwrap_or_default();
        let message = err.without_snippet().to_string();
        let message = message.lines().next().unwrap_or("invalid YAML").to_string();
        let hint = unknown_field_hint(&message);
        Self { pos, message, hint }
    }
}

/// serde lists the expected names on unknown fields; point at `weir schema` for the rest.
fn unknown_field_hint(message: &str) -> Option<String> {
    (message.contains("unknown field") || message.contains("unknown variant") || message.contains("unknown step kind"))
        .then(|| "`weir schema` prints every allowed field; `weir list` prints the step kinds".to_string())
}

/// The nearest of `candidates` to `word`, when it is near enough to be a likely misspelling of it.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(distance, c)| *distance <= c.len().max(word.len()) / 3 + 1)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn near_misses_are_suggested_and_far_ones_are_not() {
        let options = ["endpoint", "region", "access_key_id", "secret_access_key"];
        assert_eq!(did_you_mean("endpiont", options), Some("endpoint"));
        assert_eq!(did_you_mean("acess_key_id", options), Some("access_key_id"));
        assert_eq!(did_you_mean("colour", options), None);
    }
}
