//! `template.yaml` read the way CloudFormation reads it, for the parts a deployment wires:
//! the short-tag intrinsics (`!Ref`, `!GetAtt`, `!Sub`, `!If`, `!Join`, `!Equals`, `!Not`,
//! `!Select`, `!Split`) resolved against parameter values and the physical resources a test
//! created. The loader keeps each node's tag, which a plain YAML loader drops.

use std::collections::BTreeMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::Marker;

/// A YAML node with its tag (`Ref` for `!Ref`, …).
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Scalar(String, Option<String>),
    Seq(Vec<Node>, Option<String>),
    Map(Vec<(String, Node)>, Option<String>),
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries, _) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[(String, Node)] {
        match self {
            Node::Map(entries, _) => entries,
            _ => &[],
        }
    }

    pub fn str(&self) -> Option<&str> {
        match self {
            Node::Scalar(s, None) => Some(s),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Loader {
    stack: Vec<Node>,
    keys: Vec<Option<String>>,
    done: Option<Node>,
}

fn tag_name(tag: Option<Tag>) -> Option<String> {
    // `!Ref` has handle "!" and suffix "Ref"; core tags (`!!str`) are not intrinsics.
    tag.filter(|t| t.handle == "!").map(|t| t.suffix)
}

impl Loader {
    fn push(&mut self, node: Node) {
        match self.stack.last_mut() {
            Some(Node::Seq(items, _)) => items.push(node),
            Some(Node::Map(entries, _)) => match self.keys.last_mut() {
                Some(slot @ None) => {
                    let Node::Scalar(key, _) = node else {
                        panic!("a mapping key that is not a scalar")
                    };
                    *slot = Some(key);
                }
                Some(slot) => {
                    let key = slot.take().expect("a key");
                    entries.push((key, node));
                }
                None => unreachable!("a mapping always has a key slot"),
            },
            _ => self.done = Some(node),
        }
    }
}

impl MarkedEventReceiver for Loader {
    fn on_event(&mut self, ev: Event, _: Marker) {
        match ev {
            Event::Scalar(v, _, _, tag) => self.push(Node::Scalar(v, tag_name(tag))),
            Event::SequenceStart(_, tag) => self.stack.push(Node::Seq(Vec::new(), tag_name(tag))),
            Event::MappingStart(_, tag) => {
                self.stack.push(Node::Map(Vec::new(), tag_name(tag)));
                self.keys.push(None);
            }
            Event::SequenceEnd => {
                let node = self.stack.pop().expect("open sequence");
                self.push(node);
            }
            Event::MappingEnd => {
                self.keys.pop();
                let node = self.stack.pop().expect("open mapping");
                self.push(node);
            }
            _ => {}
        }
    }
}

pub fn load(text: &str) -> Node {
    let mut loader = Loader::default();
    Parser::new_from_str(text)
        .load(&mut loader, false)
        .expect("template.yaml is YAML");
    loader.done.expect("a document")
}

/// What a resource's `!Ref` and `!GetAtt X.Arn` resolve to.
#[derive(Debug, Clone)]
pub struct Physical {
    pub reference: String,
    pub arn: String,
}

/// A resolved value: text, a list, or nothing (`AWS::NoValue`, a false `!If` branch).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    List(Vec<Value>),
    Map(Vec<(String, Value)>),
    None,
}

impl Value {
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// A text, or each text of a list (a CommaDelimitedList parameter resolves to a list).
    pub fn texts(&self) -> Vec<String> {
        match self {
            Value::Text(s) => vec![s.clone()],
            Value::List(items) => items.iter().flat_map(Value::texts).collect(),
            _ => Vec::new(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// The template, a stack name, its parameter values and the physical resources behind the
/// logical ids.
pub struct Stack {
    pub template: Node,
    pub name: String,
    pub region: String,
    pub account: String,
    pub params: BTreeMap<String, String>,
    pub resources: BTreeMap<String, Physical>,
}

impl Stack {
    fn param(&self, name: &str) -> Option<Value> {
        let spec = self.template.get("Parameters")?.get(name)?;
        let value = self
            .params
            .get(name)
            .cloned()
            .or_else(|| spec.get("Default").and_then(Node::str).map(str::to_string))
            .unwrap_or_default();
        let list = spec
            .get("Type")
            .and_then(Node::str)
            .is_some_and(|t| t == "CommaDelimitedList");
        Some(if list {
            Value::List(
                value
                    .split(',')
                    .map(|v| Value::Text(v.to_string()))
                    .collect(),
            )
        } else {
            Value::Text(value)
        })
    }

    fn reference(&self, name: &str) -> Value {
        match name {
            "AWS::NoValue" => Value::None,
            "AWS::StackName" => Value::Text(self.name.clone()),
            "AWS::Region" => Value::Text(self.region.clone()),
            "AWS::AccountId" => Value::Text(self.account.clone()),
            "AWS::Partition" => Value::Text("aws".into()),
            "AWS::URLSuffix" => Value::Text("amazonaws.com".into()),
            _ => self
                .param(name)
                .or_else(|| {
                    self.resources
                        .get(name)
                        .map(|p| Value::Text(p.reference.clone()))
                })
                .unwrap_or_else(|| panic!("!Ref {name}: no such parameter or resource")),
        }
    }

    fn get_att(&self, path: &str) -> Value {
        let (resource, attribute) = path.split_once('.').expect("!GetAtt Resource.Attribute");
        let physical = self
            .resources
            .get(resource)
            .unwrap_or_else(|| panic!("!GetAtt {path}: no physical resource {resource}"));
        match attribute {
            "Arn" => Value::Text(physical.arn.clone()),
            "QueueName" | "Name" => Value::Text(physical.reference.clone()),
            other => panic!("!GetAtt {resource}.{other}: not modelled"),
        }
    }

    fn sub(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closed ${") + start;
            let name = &rest[start + 2..end];
            let value = if name.contains('.') && !name.starts_with("AWS::") {
                self.get_att(name)
            } else {
                self.reference(name)
            };
            out.push_str(
                value
                    .text()
                    .unwrap_or_else(|| panic!("${{{name}}} is not text")),
            );
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    pub fn condition(&self, name: &str) -> bool {
        let node = self
            .template
            .get("Conditions")
            .and_then(|c| c.get(name))
            .unwrap_or_else(|| panic!("no condition {name}"))
            .clone();
        match self.resolve(&node) {
            Value::Text(t) => t == "true",
            other => panic!("condition {name} resolved to {other:?}"),
        }
    }

    /// A node with every intrinsic applied.
    pub fn resolve(&self, node: &Node) -> Value {
        let args = |n: &Node| -> Vec<Node> {
            match n {
                Node::Seq(items, _) => items.clone(),
                other => vec![other.clone()],
            }
        };
        match node {
            Node::Scalar(s, None) => Value::Text(s.clone()),
            Node::Scalar(s, Some(tag)) if tag == "Ref" => self.reference(s),
            Node::Scalar(s, Some(tag)) if tag == "GetAtt" => self.get_att(s),
            Node::Scalar(s, Some(tag)) if tag == "Sub" => Value::Text(self.sub(s)),
            Node::Scalar(s, Some(tag)) if tag == "Condition" => {
                Value::Text(self.condition(s).to_string())
            }
            Node::Seq(items, Some(tag)) => {
                let items = args(&Node::Seq(items.clone(), None));
                match tag.as_str() {
                    "If" => {
                        let cond = items[0].str().expect("!If names a condition");
                        self.resolve(&items[if self.condition(cond) { 1 } else { 2 }])
                    }
                    "Equals" => Value::Text(
                        (self.resolve(&items[0]) == self.resolve(&items[1])).to_string(),
                    ),
                    "Not" => {
                        Value::Text((self.resolve(&items[0]).text() != Some("true")).to_string())
                    }
                    "And" | "Or" => {
                        let all: Vec<bool> = items
                            .iter()
                            .map(|i| self.resolve(i).text() == Some("true"))
                            .collect();
                        let v = if tag == "And" {
                            all.iter().all(|b| *b)
                        } else {
                            all.iter().any(|b| *b)
                        };
                        Value::Text(v.to_string())
                    }
                    "Join" => {
                        let sep = self.resolve(&items[0]).text().unwrap_or("").to_string();
                        let parts = match self.resolve(&items[1]) {
                            Value::List(l) => l,
                            other => vec![other],
                        };
                        Value::Text(
                            parts
                                .iter()
                                .flat_map(Value::texts)
                                .collect::<Vec<_>>()
                                .join(&sep),
                        )
                    }
                    "Split" => {
                        let sep = self.resolve(&items[0]).text().unwrap_or("").to_string();
                        let whole = self.resolve(&items[1]).text().unwrap_or("").to_string();
                        Value::List(whole.split(&sep).map(|s| Value::Text(s.into())).collect())
                    }
                    "Select" => {
                        let i: usize = self
                            .resolve(&items[0])
                            .text()
                            .and_then(|t| t.parse().ok())
                            .expect("index");
                        match self.resolve(&items[1]) {
                            Value::List(l) => l[i].clone(),
                            other => panic!("!Select from {other:?}"),
                        }
                    }
                    "Sub" => Value::Text(self.sub(self.resolve(&items[0]).text().expect("text"))),
                    "GetAtt" => {
                        let path = items
                            .iter()
                            .filter_map(Node::str)
                            .collect::<Vec<_>>()
                            .join(".");
                        self.get_att(&path)
                    }
                    other => panic!("intrinsic !{other} not modelled"),
                }
            }
            Node::Seq(items, None) => Value::List(
                items
                    .iter()
                    .map(|i| self.resolve(i))
                    .filter(|v| *v != Value::None)
                    .collect(),
            ),
            Node::Map(entries, None) => Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), self.resolve(v)))
                    .filter(|(_, v)| *v != Value::None)
                    .collect(),
            ),
            other => panic!("tagged node not modelled: {other:?}"),
        }
    }

    pub fn resource(&self, logical: &str) -> &Node {
        self.template
            .get("Resources")
            .and_then(|r| r.get(logical))
            .unwrap_or_else(|| panic!("no resource {logical}"))
    }

    /// The environment a function gets: `Globals.Function` variables, then its own.
    pub fn function_env(&self, logical: &str) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let global = self
            .template
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .and_then(|f| f.get("Environment"))
            .and_then(|e| e.get("Variables"));
        let own = self
            .resource(logical)
            .get("Properties")
            .and_then(|p| p.get("Environment"))
            .and_then(|e| e.get("Variables"));
        for vars in [global, own].into_iter().flatten() {
            for (name, node) in vars.entries() {
                match self.resolve(node) {
                    Value::Text(v) => {
                        env.insert(name.clone(), v);
                    }
                    Value::None => {}
                    other => panic!("{logical} {name} = {other:?} is not text"),
                }
            }
        }
        env
    }

    /// The stack's outputs as a deployment shows them (an output whose condition is false is
    /// left out).
    pub fn outputs(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, output) in self
            .template
            .get("Outputs")
            .map(Node::entries)
            .unwrap_or_default()
        {
            if let Some(cond) = output.get("Condition").and_then(Node::str) {
                if !self.condition(cond) {
                    continue;
                }
            }
            let value = self.resolve(output.get("Value").expect("an output has a Value"));
            let text = value
                .text()
                .unwrap_or_else(|| panic!("output {name} = {value:?}"));
            out.insert(name.clone(), text.to_string());
        }
        out
    }

    /// Every `(action, resource)` a role's inline policies allow, for the roles' `Allow`
    /// statements (none of the template's roles uses `Deny`).
    pub fn role_grants(&self, role: &str) -> Vec<(String, String)> {
        let props = self.resolve(self.resource(role).get("Properties").expect("properties"));
        let mut out = Vec::new();
        let Some(Value::List(policies)) = props.get("Policies") else {
            return out;
        };
        for policy in policies {
            let Some(Value::List(statements)) = policy
                .get("PolicyDocument")
                .and_then(|d| d.get("Statement"))
            else {
                continue;
            };
            for st in statements {
                assert_eq!(
                    st.get("Effect").and_then(Value::text),
                    Some("Allow"),
                    "{st:?}"
                );
                let actions = st.get("Action").map(Value::texts).unwrap_or_default();
                let resources = st.get("Resource").map(Value::texts).unwrap_or_default();
                for a in &actions {
                    for r in &resources {
                        out.push((a.clone(), r.clone()));
                    }
                }
            }
        }
        out
    }
}
