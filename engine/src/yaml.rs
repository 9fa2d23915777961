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

/// How much aliases may copy in one stream, in [`weight`] units (about
/// bytes): a document that references a large anchor many times (an
/// "alias bomb") would otherwise grow without bound in memory.
pub const MAX_ALIAS_EXPANSION: usize = 1 << 20;

/// A collection being built, with its anchor (0 for none).
enum Frame {
    Seq(Vec<Node>, Pos, usize),
    Map(Vec<(String, Pos, Node)>, Pos, Option<(String, Pos)>, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Anchored nodes with their weight.
    anchors: Vec<(usize, Node, usize)>,
    /// What aliases have copied so far.
    expanded: usize,
    docs: Vec<Node>,
    error: Option<SyntaxError>,
}

/// The size of a node: its scalars' bytes plus one per node.
fn weight(node: &Node) -> usize {
    match node {
        Node::Scalar(s, _, _) => s.len() + 1,
        Node::Seq(items, _) => 1 + items.iter().map(weight).sum::<usize>(),
        Node::Map(entries, _) => {
            1 + entries
                .iter()
                .map(|(k, _, v)| k.len() + weight(v))
                .sum::<usize>()
        }
    }
}

fn pos(mark: Marker) -> Pos {
    Pos {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

impl Builder {
    fn fail(&mut self, pos: Pos, message: impl Into<String>) {
        self.error.get_or_insert(SyntaxError {
            pos,
            message: message.into(),
        });
    }

    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let w = weight(&node);
            self.anchors.push((anchor, node.clone(), w));
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq(items, _, _)) => items.push(node),
            Some(Frame::Map(entries, _, pending, _)) => match pending.take() {
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
        if self.error.is_some() {
            // The first error is reported; building on would only cost.
            return;
        }
        match ev {
            Event::Scalar(value, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.push(Node::Scalar(value, quoted, pos(mark)), anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq(Vec::new(), pos(mark), anchor))
            }
            Event::MappingStart(anchor, _) => {
                self.stack
                    .push(Frame::Map(Vec::new(), pos(mark), None, anchor))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq(items, p, a)) => (Node::Seq(items, p), a),
                    Some(Frame::Map(entries, p, _, a)) => {
                        if let Some((_, at, _)) = entries.iter().find(|(k, _, _)| k == "<<") {
                            let at = *at;
                            self.fail(at, "merge keys (`<<`) are not supported: write the fields out, or anchor the whole map");
                        }
                        (Node::Map(entries, p), a)
                    }
                    None => return,
                };
                self.push(node, anchor);
            }
            Event::Alias(id) => {
                let found = self.anchors.iter().rev().find(|(a, _, _)| *a == id);
                let Some((_, node, w)) = found.map(|(a, n, w)| (*a, n.clone(), *w)) else {
                    self.fail(pos(mark), "unknown alias");
                    return;
                };
                self.expanded = self.expanded.saturating_add(w);
                if self.expanded > MAX_ALIAS_EXPANSION {
                    self.fail(
                        pos(mark),
                        format!(
                            "aliases expand to more than {} KiB; write the values out",
                            MAX_ALIAS_EXPANSION >> 10
                        ),
                    );
                    return;
                }
                self.push(node, 0);
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
    fn anchors_work_on_every_node_within_a_budget() {
        let doc = parse("base: &b {type: generator, series: 3}\nlist: &l [1, 2]\na: *b\nc: *l\n")
            .unwrap();
        assert_eq!(
            doc.get("a").unwrap().to_json(),
            doc.get("base").unwrap().to_json()
        );
        assert_eq!(doc.get("c").unwrap().to_json(), serde_json::json!([1, 2]));
        // 64 KiB referenced 100 times: refused at the alias that crosses
        // the budget, not expanded to 6 MiB.
        let big = "x".repeat(64 << 10);
        let mut text = format!("big: &big {big}\nrefs:\n");
        for _ in 0..100 {
            text.push_str("  - *big\n");
        }
        let e = parse(&text).unwrap_err();
        assert!(
            e.message.contains("aliases expand to more than 1024 KiB"),
            "{e:?}"
        );
        // The 16th alias (line 2 + 16) crosses 1 MiB: each copies 64 KiB + 1.
        assert_eq!(e.pos.line, 2 + (MAX_ALIAS_EXPANSION / (64 << 10)));
        let e = parse("a: &a {x: 1}\nb:\n  <<: *a\n  y: 2\n").unwrap_err();
        assert!(e.message.contains("merge keys"), "{e:?}");
        assert_eq!(e.pos.line, 3);
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
