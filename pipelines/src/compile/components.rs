//! The first step: the pipeline's own fields, and every component parsed
//! and validated through the registry ([`crate::config`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use tidemark_engine::component::ConfigError;
use tidemark_engine::spec::{SinkSpec, SourceSpec, TransformSpec};
use tidemark_engine::validate::Limits;

use super::{Ctx, DiagnosticKind};
use crate::config::{Section, SinkConfig, SourceConfig, TransformConfig};
use crate::yaml::{Node, Pos};

/// A pipeline's parts, each component validated where it could be.
pub(super) struct Parsed<'a> {
    pub(super) name: String,
    pub(super) limits: Limits,
    pub(super) sources: Vec<Component<'a>>,
    pub(super) transforms: Vec<Component<'a>>,
    pub(super) sinks: Vec<Component<'a>>,
    /// Which section each name is in (names are unique across sections,
    /// so inputs are unambiguous).
    pub(super) sections: BTreeMap<String, Section>,
    pub(super) source_specs: BTreeMap<String, Arc<dyn SourceSpec>>,
    pub(super) transform_specs: BTreeMap<String, Arc<dyn TransformSpec>>,
    pub(super) sink_specs: BTreeMap<String, Arc<dyn SinkSpec>>,
}

/// The longest pipeline or component name: names become metric labels,
/// file names and URL paths.
pub const MAX_NAME: usize = 128;

/// What is wrong with a name, if anything; `what` is how messages call it.
fn name_error(name: &str, what: &str) -> Option<String> {
    if name.len() > MAX_NAME {
        return Some(format!(
            "{what} may be at most {MAX_NAME} characters long (this one has {})",
            name.len()
        ));
    }
    (!valid_name(name)).then(|| format!("{what} may use letters, digits, `_` and `-` only"))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

const FIELDS: [&str; 6] = [
    "name",
    "description",
    "limits",
    "sources",
    "transforms",
    "sinks",
];

/// Parses and validates everything but the graph; `None` when the text is
/// not a map at all.
pub(super) fn parse<'a>(ctx: &mut Ctx<'_>, root: &'a Node) -> Option<Parsed<'a>> {
    let Node::Map(top, _) = root else {
        ctx.error(
            DiagnosticKind::Pipeline,
            root.pos(),
            None,
            "a pipeline is a map with name, sources, transforms and sinks",
        );
        return None;
    };
    for (key, pos, _) in top.iter().filter(|(k, _, _)| !FIELDS.contains(&k.as_str())) {
        ctx.error(DiagnosticKind::Pipeline, *pos, None, format!("unknown field `{key}`, expected one of `name`, `description`, `limits`, `sources`, `transforms`, `sinks`"));
    }
    if let Some(d) = root.get("description")
        && !matches!(d, Node::Scalar(..))
    {
        ctx.error(
            DiagnosticKind::Pipeline,
            d.pos(),
            None,
            "description must be a string",
        );
    }
    let name = pipeline_name(ctx, root);
    let limits = match root.get("limits") {
        Some(node) => typed::<Limits>(node, node.to_json()).unwrap_or_else(|errors| {
            for (pos, message) in errors {
                ctx.error(
                    DiagnosticKind::Pipeline,
                    pos,
                    None,
                    format!("limits: {message}"),
                );
            }
            Limits::default()
        }),
        None => Limits::default(),
    };
    let sources = components(ctx, root, Section::Source);
    let transforms = components(ctx, root, Section::Transform);
    let sinks = components(ctx, root, Section::Sink);
    let sections = unique_names(
        ctx,
        [
            (Section::Source, &sources),
            (Section::Transform, &transforms),
            (Section::Sink, &sinks),
        ],
    );
    Some(Parsed {
        name,
        limits,
        source_specs: validate(
            ctx,
            Section::Source,
            &sources,
            SourceConfig::from_node,
            SourceConfig::validate,
        ),
        transform_specs: validate(
            ctx,
            Section::Transform,
            &transforms,
            TransformConfig::from_node,
            TransformConfig::validate,
        ),
        sink_specs: validate(
            ctx,
            Section::Sink,
            &sinks,
            SinkConfig::from_node,
            SinkConfig::validate,
        ),
        sources,
        transforms,
        sinks,
        sections,
    })
}

fn pipeline_name(ctx: &mut Ctx<'_>, root: &Node) -> String {
    match root.get("name") {
        Some(Node::Scalar(n, _, p)) => {
            if let Some(message) = name_error(n, "the pipeline name") {
                ctx.error(DiagnosticKind::Pipeline, *p, None, message);
            }
            n.clone()
        }
        Some(other) => {
            ctx.error(
                DiagnosticKind::Pipeline,
                other.pos(),
                None,
                "name must be a string",
            );
            String::new()
        }
        None => {
            ctx.error(
                DiagnosticKind::Pipeline,
                Pos { line: 1, column: 1 },
                None,
                "the pipeline has no name (add `name: my-pipeline`)",
            );
            String::new()
        }
    }
}

/// Which section each name is in; a name used twice is an error.
fn unique_names(
    ctx: &mut Ctx<'_>,
    lists: [(Section, &Vec<Component<'_>>); 3],
) -> BTreeMap<String, Section> {
    let mut sections = BTreeMap::new();
    for (section, list) in lists {
        for c in list {
            if let Some(prev) = sections.insert(c.name.clone(), section) {
                ctx.error(
                    DiagnosticKind::Component,
                    c.key,
                    Some((section, &c.name)),
                    format!("the name is already used by a {}", prev.word()),
                );
            }
        }
    }
    sections
}

/// Reads each component's config (the registry enum `C`, by
/// `from_node`) and validates it into its spec `S`.
fn validate<C, S: ?Sized>(
    ctx: &mut Ctx<'_>,
    section: Section,
    list: &[Component<'_>],
    read: fn(&Node, serde_json::Value) -> Result<C, TypeErrors>,
    validated: fn(&C) -> Result<Arc<S>, Vec<ConfigError>>,
) -> BTreeMap<String, Arc<S>> {
    let mut specs = BTreeMap::new();
    for c in list {
        let me = (section, c.name.as_str());
        match read(c.node, without_inputs(c.node)).map(|config| validated(&config)) {
            Ok(Ok(spec)) => {
                specs.insert(c.name.clone(), spec);
            }
            Ok(Err(e)) => config_errors(ctx, c.node, me, e),
            Err(errors) => {
                for (pos, message) in errors {
                    ctx.error(DiagnosticKind::Config, pos, Some(me), message);
                }
            }
        }
    }
    specs
}

fn without_inputs(node: &Node) -> serde_json::Value {
    let mut v = node.to_json();
    if let Some(map) = v.as_object_mut() {
        map.remove("inputs");
    }
    v
}

/// Errors found reading a config, each where it belongs.
pub type TypeErrors = Vec<(Pos, String)>;

/// The most errors reported for one config.
const MAX_ERRORS: usize = 16;

/// Deserialises a config, placing each of serde's errors at the field it
/// names: after an error in a field, the field is left out and the rest is
/// read again, so that every bad field is reported, not only the first
/// (a required field left out ends the search: its error is already told).
pub fn typed<T: serde::de::DeserializeOwned>(
    node: &Node,
    mut value: serde_json::Value,
) -> Result<T, TypeErrors> {
    let mut errors = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    loop {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(config) if errors.is_empty() => return Ok(config),
            Ok(_) => return Err(errors),
            Err(e) => {
                let path: Vec<String> = e
                    .path()
                    .iter()
                    .filter_map(|seg| match seg {
                        serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                        serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                        _ => None,
                    })
                    .collect();
                let message = e.inner().to_string();
                if let Some(field) = message.strip_prefix("missing field `")
                    && removed.iter().any(|r| field.starts_with(&format!("{r}`")))
                {
                    return Err(errors);
                }
                errors.push(locate(node, &path, message));
                let Some(first) = path.first() else {
                    return Err(errors);
                };
                let left_out = value.as_object_mut().and_then(|m| m.remove(first));
                if left_out.is_none() || errors.len() >= MAX_ERRORS {
                    return Err(errors);
                }
                removed.push(first.clone());
            }
        }
    }
}

/// Where an error at `path` belongs, and its message for a reader: the
/// field is named when serde's message does not name it.
fn locate(node: &Node, path: &[String], message: String) -> (Pos, String) {
    // serde names unknown or missing fields in backticks; point at the key.
    let mut pos = node.locate(path, true);
    if let Some(field) = message.split('`').nth(1)
        && message.starts_with("unknown field")
    {
        let mut with = path.to_vec();
        if with.last().is_none_or(|last| last != field) {
            with.push(field.to_owned());
        }
        pos = node.locate(&with, true);
    }
    let named = message.starts_with("unknown field") || message.starts_with("missing field");
    let message = if path.is_empty() || named {
        message
    } else {
        format!("{}: {message}", path.join("."))
    };
    (pos, message)
}

/// Places each config error at the field it names.
fn config_errors(
    ctx: &mut Ctx<'_>,
    node: &Node,
    component: (Section, &str),
    errors: Vec<ConfigError>,
) {
    for e in errors {
        let pos = node.locate(&e.field, false);
        ctx.error(DiagnosticKind::Config, pos, Some(component), e.message);
    }
}

/// A component as written: its name, where, its YAML and its inputs.
pub(super) struct Component<'a> {
    pub(super) name: String,
    pub(super) key: Pos,
    pub(super) node: &'a Node,
    pub(super) inputs: Vec<(String, Pos)>,
}

/// The components of one section, with their inputs.
fn components<'a>(ctx: &mut Ctx<'_>, root: &'a Node, section: Section) -> Vec<Component<'a>> {
    let mut out = Vec::new();
    let Some((key_pos, node)) = root.entry(section.key()) else {
        if section != Section::Transform {
            ctx.error(
                DiagnosticKind::Pipeline,
                Pos { line: 1, column: 1 },
                None,
                format!(
                    "the pipeline has no {} (add a `{}:` map)",
                    section.key(),
                    section.key()
                ),
            );
        }
        return out;
    };
    let Node::Map(entries, _) = node else {
        if !matches!(node, Node::Scalar(s, false, _) if s.is_empty() || s == "~" || s == "null")
            || section != Section::Transform
        {
            ctx.error(
                DiagnosticKind::Pipeline,
                node.pos(),
                None,
                format!("`{}` must be a map of named components", section.key()),
            );
        }
        return out;
    };
    if entries.is_empty() && section != Section::Transform {
        ctx.error(
            DiagnosticKind::Pipeline,
            key_pos,
            None,
            format!("the pipeline has no {}", section.key()),
        );
    }
    for (name, pos, body) in entries {
        let me = (section, name.as_str());
        if let Some(message) = name_error(name, "names") {
            ctx.error(DiagnosticKind::Component, *pos, Some(me), message);
        }
        if !matches!(body, Node::Map(..)) {
            ctx.error(
                DiagnosticKind::Component,
                body.pos(),
                Some(me),
                "a component must be a map with a `type`",
            );
            continue;
        }
        let mut inputs = Vec::new();
        match (section, body.entry("inputs")) {
            (Section::Source, Some((p, _))) => {
                ctx.error(DiagnosticKind::Input, p, Some(me), "sources take no inputs")
            }
            (Section::Source, None) => {}
            (_, None) => ctx.error(
                DiagnosticKind::NoInputs,
                *pos,
                Some(me),
                format!("{} {name:?} has no inputs", section.word()),
            ),
            (_, Some((p, Node::Seq(items, _)))) => {
                if items.is_empty() {
                    ctx.error(
                        DiagnosticKind::NoInputs,
                        p,
                        Some(me),
                        format!("{} {name:?} has no inputs", section.word()),
                    );
                }
                for item in items {
                    match item {
                        Node::Scalar(s, _, ip) => inputs.push((s.clone(), *ip)),
                        other => ctx.error(
                            DiagnosticKind::Input,
                            other.pos(),
                            Some(me),
                            "inputs must be component names",
                        ),
                    }
                }
            }
            (_, Some((_, Node::Scalar(s, _, ip)))) => inputs.push((s.clone(), *ip)),
            (_, Some((p, _))) => ctx.error(
                DiagnosticKind::Input,
                p,
                Some(me),
                "inputs must be a list of component names",
            ),
        }
        out.push(Component {
            name: name.clone(),
            key: *pos,
            node: body,
            inputs,
        });
    }
    out
}
