//! The raw layer: the YAML document as a tree of values, each with the line
//! and column it was written at, read by serde-saphyr.
//!
//! Why a tree and not `#[derive(Deserialize)] #[serde(deny_unknown_fields)]`
//! structs: serde stops at the first problem, and `ftpgate check` must list
//! every problem in the file at once. serde-saphyr still does all the YAML
//! work (syntax, anchors, duplicate keys, resource budgets); the schema
//! (compile.rs) then walks the tree, collecting problems as it goes.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, MessageFormatter, Spanned, UserMessageFormatter};

pub(crate) type SNode = Spanned<Node>;

#[derive(Debug)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<SNode>),
    Map(Vec<(Spanned<String>, SNode)>),
}

impl Node {
    /// For "expected X, found Y" messages.
    pub(crate) fn kind(&self) -> String {
        match self {
            Node::Null => "nothing".into(),
            Node::Bool(b) => format!("the boolean {b}"),
            Node::Int(n) => format!("the number {n}"),
            Node::Float(f) => format!("the number {f}"),
            Node::Str(s) => format!("'{s}'"),
            Node::Seq(_) => "a list".into(),
            Node::Map(_) => "a mapping".into(),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
        // Saturating is fine: anything this large is out of range for every key.
        Ok(Node::Int(i128::try_from(v).unwrap_or(i128::MAX)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = a.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = a.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

/// A YAML-level failure: where and what.
pub(crate) struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

pub(crate) fn line_col(l: &Location) -> (usize, usize) {
    // Location::UNKNOWN is 0:0; a position in the file reads better as 1:1.
    let line = usize::try_from(l.line()).unwrap_or(usize::MAX).max(1);
    let column = usize::try_from(l.column()).unwrap_or(usize::MAX).max(1);
    (line, column)
}

/// Parse one YAML document into the tree. Duplicate keys, bad syntax,
/// unknown anchors and more than one document are refused here.
pub(crate) fn parse(text: &str) -> Result<SNode, SyntaxError> {
    // Aliases are rare in a gateway's configuration; a small replay limit
    // refuses alias bombs long before the general node budget would, and
    // still allows, say, a list of networks shared by a few rules.
    let options = serde_saphyr::options! {
        alias_limits: serde_saphyr::alias_limits! { max_total_replayed_events: 20_000 },
    };
    serde_saphyr::from_str_with_options::<SNode>(text, options).map_err(|e| {
        let (line, column) = e.location().as_ref().map(line_col).unwrap_or((1, 1));
        SyntaxError { line, column, message: message(&e) }
    })
}

fn message(e: &serde_saphyr::Error) -> String {
    let mut inner = e;
    while let serde_saphyr::Error::WithSnippet { error, .. } | serde_saphyr::Error::AliasError { error, .. } = inner {
        inner = error;
    }
    match inner {
        serde_saphyr::Error::DuplicateMappingKey { key: Some(k), .. } => {
            format!("'{k}' appears twice here: each key (and each interface name) may appear only once")
        }
        serde_saphyr::Error::DuplicateMappingKey { key: None, .. } => {
            "a key appears twice here: each key may appear only once".into()
        }
        serde_saphyr::Error::MultipleDocuments { .. } => {
            "the file holds more than one YAML document ('---'): put the whole configuration in one".into()
        }
        other => format!("YAML: {}", UserMessageFormatter.format_message(other)),
    }
}
