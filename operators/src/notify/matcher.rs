//! Alertmanager's label matchers: `name="value"`, `name!="value"`,
//! `name=~"regex"`, `name!~"regex"`, alone or in a list
//! (`{a="1", b=~"x|y"}`), values quoted or bare, regular expressions
//! anchored at both ends. A label an alert lacks matches as the empty
//! string, as in Alertmanager.

use std::fmt;

use regex::Regex;
use tidemark_engine::notify::{LabelMap, go_quote};

/// How a matcher compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Equal => "=",
            Op::NotEqual => "!=",
            Op::Regex => "=~",
            Op::NotRegex => "!~",
        }
    }
}

/// One matcher.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// The label's name.
    pub name: String,
    /// How it compares.
    pub op: Op,
    /// The value or the regular expression, as written.
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Matcher) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl Matcher {
    /// A matcher; a regular expression is compiled (anchored) here.
    pub fn new(name: &str, op: Op, value: &str) -> Result<Matcher, String> {
        if !valid_name(name) {
            return Err(format!("{name:?} is not a valid label name"));
        }
        let regex = match op {
            Op::Regex | Op::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("invalid regular expression {value:?}: {e}"))?,
            ),
            Op::Equal | Op::NotEqual => None,
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            regex,
        })
    }

    /// Whether `labels` satisfy it.
    pub fn matches(&self, labels: &LabelMap) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match (self.op, &self.regex) {
            (Op::Equal, _) => v == self.value,
            (Op::NotEqual, _) => v != self.value,
            (Op::Regex, Some(r)) => r.is_match(v),
            (Op::NotRegex, Some(r)) => !r.is_match(v),
            (Op::Regex | Op::NotRegex, None) => false,
        }
    }
}

impl fmt::Display for Matcher {
    /// As Alertmanager prints it: `name=~"value"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            self.name,
            self.op.as_str(),
            go_quote(&self.value)
        )
    }
}

/// Whether every matcher is satisfied.
pub fn all_match(matchers: &[Matcher], labels: &LabelMap) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// Sorts matchers as Alertmanager does (by name, then operator, then
/// value), which fixes a route's key.
pub fn sort(matchers: &mut [Matcher]) {
    matchers.sort_by(|a, b| (&a.name, a.op, &a.value).cmp(&(&b.name, b.op, &b.value)));
}

/// `{a="1",b=~"x"}`: a list as Alertmanager prints it in route keys.
pub fn list_string(matchers: &[Matcher]) -> String {
    let parts: Vec<String> = matchers.iter().map(ToString::to_string).collect();
    format!("{{{}}}", parts.join(","))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses one entry of a `matchers:` list, which may itself hold several
/// matchers (`a="1", b!="2"` or `{a="1"}`).
pub fn parse(text: &str) -> Result<Vec<Matcher>, String> {
    let mut rest = text.trim();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner
            .strip_suffix('}')
            .ok_or_else(|| format!("{text:?}: an opening {{ without its closing }}"))?
            .trim();
    }
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (matcher, after) = one(rest).map_err(|e| format!("{text:?}: {e}"))?;
        out.push(matcher);
        rest = after.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("{text:?}: expected a comma before {rest:?}"));
        }
    }
    if out.is_empty() {
        return Err(format!("{text:?}: no matcher"));
    }
    Ok(out)
}

/// One matcher at the start of `text`, and what follows it.
fn one(text: &str) -> Result<(Matcher, &str), String> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    let (name, rest) = text.split_at(end);
    let rest = rest.trim_start();
    let (op, rest) = [
        ("=~", Op::Regex),
        ("!~", Op::NotRegex),
        ("!=", Op::NotEqual),
        ("=", Op::Equal),
    ]
    .into_iter()
    .find_map(|(s, op)| rest.strip_prefix(s).map(|r| (op, r)))
    .ok_or_else(|| format!("expected =, !=, =~ or !~ after {name:?}"))?;
    let rest = rest.trim_start();
    let (value, rest) = if let Some(quoted) = rest.strip_prefix('"') {
        unquote(quoted)?
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        (rest[..end].trim_end().to_owned(), &rest[end..])
    };
    Ok((Matcher::new(name, op, &value)?, rest))
}

/// The rest of a double-quoted string (after its opening quote): its
/// value, with Go's escapes undone, and what follows the closing quote.
fn unquote(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('n') => value.push('\n'),
                Some('t') => value.push('\t'),
                Some('r') => value.push('\r'),
                Some(c @ ('"' | '\\')) => value.push(c),
                // Kept for the regular expression (`\d`, `\.`).
                Some(c) => {
                    value.push('\\');
                    value.push(c);
                }
                None => break,
            },
            c => value.push(c),
        }
    }
    Err("a quoted value without its closing quote".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_engine::notify::labels;

    #[test]
    fn parses_alertmanagers_forms() {
        let ms = parse(r#"{service=~"db|cache", severity!="info"}"#).unwrap();
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].to_string(), r#"service=~"db|cache""#);
        assert_eq!(ms[1].op, Op::NotEqual);
        let bare = parse("team = infra").unwrap();
        assert_eq!(bare[0].value, "infra");
        let esc = parse(r#"path=~"a\.b\"c""#).unwrap();
        assert_eq!(esc[0].value, r#"a\.b"c"#);
        for bad in ["", "{a=1", "a", "1a=2", r#"a="x"#, "a=~(", r#"a="1" b="2""#] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn matching_is_anchored_and_missing_is_empty() {
        let l = labels(&[("service", "database")]);
        assert!(!parse("service=~db").unwrap()[0].matches(&l));
        assert!(parse("service=~data.*").unwrap()[0].matches(&l));
        assert!(parse(r#"team="""#).unwrap()[0].matches(&l));
        assert!(parse("team!~.+").unwrap()[0].matches(&l));
        assert!(!parse("team=~.+").unwrap()[0].matches(&l));
    }
}
