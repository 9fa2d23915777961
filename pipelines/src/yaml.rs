//! YAML with positions.
//!
//! The pipeline is parsed once into a tree whose every node knows its line
//! and column, then turned into `serde_json::Value`s for typed
//! deserialisation. Errors found later (by serde, or by the compiler) are
//! placed by looking their path up in the tree.

use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the source, 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// A YAML node with its position.
#[derive(Clone, Debug)]
pub enum Node {
    /// A scalar as written, with whether it was quoted.
    Scalar(String, bool, Pos),
    /// A sequence.
    Seq(Vec<Node>, Pos),
    /// A mapping: keys (with their positions) and values, in order.
    Map(Vec<(String, Pos, Node)>, Pos),
}

impl Node {
    /// Where the node starts.
    pub fn pos(&self) -> Pos {
        match self {
            Node::Scalar(_, _, p) | Node::Seq(_, p) | Node::Map(_, p) => *p,
        }
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, n)| n)
    }

    /// The key's position and the value under `key` in a mapping.
    pub fn entry(&self, key: &str) -> Option<(Pos, &Node)> {
        match self {
            Node::Map(entries, _) => entries
                .iter()
                .find(|(k, _, _)| k == key)
                .map(|(_, p, n)| (*p, n)),
            _ => None,
        }
    }

    /// The position of the node at `path` (map keys or sequence indexes),
    /// or of the deepest node found on the way. With `key`, a final map key
    /// points at the key rather than its value.
    pub fn locate(&self, path: &[String], key: bool) -> Pos {
        let mut node = self;
        let mut pos = self.pos();
        for (i, step) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            match node {
                Node::Map(..) => match node.entry(step) {
                    Some((kp, n)) => {
                        pos = if last && key { kp } else { n.pos() };
                        node = n;
                    }
                    None => return pos,
                },
                Node::Seq(items, _) => {
                    match step.parse::<usize>().ok().and_then(|i| items.get(i)) {
                        Some(n) => {
                            pos = n.pos();
                            node = n;
                        }
                        None => return pos,
                    }
                }
                Node::Scalar(..) => return pos,
            }
        }
        pos
    }

    /// The node as JSON, resolving plain scalars as YAML 1.2 does (numbers,
    /// booleans, null); quoted scalars stay strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Scalar(s, true, _) => Value::String(s.clone()),
            Node::Scalar(s, false, _) => match Yaml::from_str(s) {
                Yaml::Integer(i) => Value::from(i),
                Yaml::Real(r) => r
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::String(s.clone()), Value::Number),
                Yaml::Boolean(b) => Value::Bool(b),
                Yaml::Null => Value::Null,
                _ => Value::String(s.clone()),
            },
            Node::Seq(items, _) => Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Map(entries, _) => Value::Object(
                entries
                    .iter()
                    .map(|(k, _, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A YAML syntax error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where.
    pub pos: Pos,
    /// What.
    pub message: String,
}

enum Frame {
    Seq(Vec<Node>, Pos),
    Map(Vec<(String, Pos, Node)>, Pos, Option<(String, Pos)>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: Vec<(usize, Node)>,
    docs: Vec<Node>,
    error: Option<SyntaxError>,
}

fn pos(mark: Marker) -> Pos {
    Pos {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

impl Builder {
    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.push((anchor, node.clone()));
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq(items, _)) => items.push(node),
            Some(Frame::Map(entries, _, pending)) => match pending.take() {
                None => match node {
                    Node::Scalar(k, _, p) => *pending = Some((k, p)),
                    other => {
                        self.error.get_or_insert(SyntaxError {
                            pos: other.pos(),
                            message: "mapping keys must be plain strings".into(),
                        });
                        *pending = Some((String::new(), other.pos()));
                    }
                },
                Some((k, p)) => {
                    if entries.iter().any(|(e, _, _)| *e == k) && self.error.is_none() {
                        self.error = Some(SyntaxError {
                            pos: p,
                            message: format!("duplicate key {k:?}"),
                        });
                    }
                    entries.push((k, p, node));
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.push(Node::Scalar(value, quoted, pos(mark)), anchor);
            }
            Event::SequenceStart(_, _) => self.stack.push(Frame::Seq(Vec::new(), pos(mark))),
            Event::MappingStart(_, _) => self.stack.push(Frame::Map(Vec::new(), pos(mark), None)),
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Frame::Seq(items, p)) => Node::Seq(items, p),
                    Some(Frame::Map(entries, p, _)) => Node::Map(entries, p),
                    None => return,
                };
                self.push(node, 0);
            }
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .iter()
                    .rev()
                    .find(|(a, _)| *a == id)
                    .map(|(_, n)| n.clone());
                match node {
                    Some(n) => self.push(n, 0),
                    None => {
                        self.error.get_or_insert(SyntaxError {
                            pos: pos(mark),
                            message: "unknown alias".into(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
}

/// Parses every document of a YAML stream (`---` separated).
pub fn parse_all(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        pos: pos(*e.marker()),
        message: e.info().to_owned(),
    })?;
    match builder.error {
        Some(e) => Err(e),
        None => Ok(builder.docs),
    }
}

/// Parses one YAML document. An empty document is an empty mapping.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        pos: pos(*e.marker()),
        message: e.info().to_owned(),
    })?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder
        .docs
        .into_iter()
        .next()
        .unwrap_or(Node::Map(Vec::new(), Pos { line: 1, column: 1 })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_json() {
        let text = "name: x\nsources:\n  a:\n    type: generator\n    series: 10\n    quoted: '10'\n    list: [1, 2.5, true, null]\n";
        let doc = parse(text).unwrap();
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            doc.locate(&path(&["sources", "a", "series"]), true),
            Pos { line: 5, column: 5 }
        );
        assert_eq!(
            doc.locate(&path(&["sources", "a", "series"]), false),
            Pos {
                line: 5,
                column: 13
            }
        );
        assert_eq!(
            doc.locate(&path(&["sources", "a", "list", "1"]), false),
            Pos {
                line: 7,
                column: 15
            }
        );
        // Missing steps stop at the deepest node found.
        assert_eq!(doc.locate(&path(&["sources", "a", "nope"]), true).line, 4);
        let json = doc.get("sources").unwrap().get("a").unwrap().to_json();
        assert_eq!(json["series"], serde_json::json!(10));
        assert_eq!(json["quoted"], serde_json::json!("10"));
        assert_eq!(json["list"], serde_json::json!([1, 2.5, true, null]));
    }

    #[test]
    fn syntax_errors_are_located() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
        let dup = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(dup.pos.line, 2);
        assert!(dup.message.contains("duplicate"));
    }
}
