//! Inbound webhooks: `POST /v1/hooks` bodies, their views, and the template a hook
//! turns into a task.
//!
//! An inbound hook lets an outside system (a CI server, a chat bot) trigger a task
//! without an API key: it POSTs a JSON body to `/v1/hooks/{id}`, signed with the hook's
//! secret exactly as RIS signs its outbound webhooks (`RIS-Signature: t=..,v1=..`). The
//! hook's template is a [`TaskRequest`] whose string values may hold `{{field}}`
//! placeholders; each is replaced by the body's top-level value of that name, as a
//! string, never evaluated.
//!
//! Where a placeholder could change *what* runs rather than its arguments, it is
//! refused when the hook is created: in `task.argv[0]` (the program), in `task.script`
//! (a shell would evaluate the value) and in the scheme or host of `task.url`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::ids::InvalidName;
use crate::task::TaskRequest;
use crate::webhooks::WebhookSecret;

/// Fields a hook may declare.
pub const MAX_FIELDS: usize = 32;
/// Largest template, serialized.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

crate::ids::uuid_id!(
    /// Identifies an inbound hook (time-ordered UUIDv7). Also its credential scope: the
    /// trigger URL names it, the signature proves the caller knows its secret.
    InboundHookId
);

macro_rules! word {
    ($(#[$doc:meta])* $name:ident, $what:literal, $pattern:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
        )]
        #[serde(try_from = "String", into = "String")]
        #[schemars(with = "String", extend("pattern" = $pattern, "minLength" = 1, "maxLength" = 64))]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, InvalidName> {
                let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
                if s.is_empty() || s.len() > 64 || !s.chars().all(ok) {
                    return Err(InvalidName(format!(
                        concat!($what, " must be 1 to 64 letters, digits, `_` or `-`, got `{}`"),
                        s
                    )));
                }
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidName;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> Self {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

word!(
    /// A hook's name, for people: 1–64 letters, digits, `_` or `-`.
    HookName,
    "hook name",
    r"^[A-Za-z0-9_-]{1,64}$"
);
word!(
    /// A field of the trigger body a template may use: 1–64 letters, digits, `_` or `-`.
    HookField,
    "field name",
    r"^[A-Za-z0-9_-]{1,64}$"
);

/// `POST /v1/hooks`. The template is checked against `fields` by
/// [`HookTemplate::new`] (which needs both).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInboundHook {
    pub name: HookName,
    /// Signs every trigger (HMAC-SHA256). Write-only.
    pub secret: WebhookSecret,
    /// A task request whose string values may hold `{{field}}` placeholders.
    pub template: Value,
    /// The body fields the template may use.
    #[serde(default)]
    pub fields: Vec<HookField>,
}

/// An inbound hook as the API shows it (never with its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InboundHookView {
    pub id: InboundHookId,
    pub name: HookName,
    /// Where to POST a trigger: `/v1/hooks/{id}`.
    pub path: String,
    pub template: Value,
    pub fields: Vec<HookField>,
    pub created_at: DateTime<Utc>,
}

/// Why a template or a trigger was refused: the offending field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct HookError {
    /// `template.task.argv[0]`, or a body field's name.
    pub field: String,
    pub message: String,
}

impl HookError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A validated template: every placeholder names a declared field, none sits where it
/// could choose the program, a shell script or the URL's scheme or host, and with
/// sample values it is a valid [`TaskRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct HookTemplate {
    template: Value,
    fields: Vec<HookField>,
}

impl HookTemplate {
    pub fn new(template: Value, fields: Vec<HookField>) -> Result<Self, HookError> {
        if fields.len() > MAX_FIELDS {
            return Err(HookError::new(
                "fields",
                format!("at most {MAX_FIELDS} fields"),
            ));
        }
        if serde_json::to_vec(&template).map_or(0, |v| v.len()) > MAX_TEMPLATE_BYTES {
            return Err(HookError::new(
                "template",
                format!("template must be at most {MAX_TEMPLATE_BYTES} bytes"),
            ));
        }
        let declared: BTreeSet<&str> = fields.iter().map(HookField::as_str).collect();
        check_strings(&template, "template", &mut |path, s| {
            for name in placeholders(s).map_err(|m| HookError::new(path, m))? {
                if !declared.contains(name) {
                    return Err(HookError::new(
                        path,
                        format!("placeholder `{{{{{name}}}}}` is not among the declared `fields`"),
                    ));
                }
            }
            Ok(())
        })?;
        forbid_placeholders(&template)?;
        let this = Self { template, fields };
        // Sample values must make a valid task (the values a trigger brings are
        // checked again, on the result).
        let sample = substitute(this.template.clone(), &|_| Some("x".to_owned()));
        serde_json::from_value::<TaskRequest>(sample)
            .map_err(|e| HookError::new("template", format!("not a valid task: {e}")))?;
        Ok(this)
    }

    pub fn template(&self) -> &Value {
        &self.template
    }

    pub fn fields(&self) -> &[HookField] {
        &self.fields
    }

    /// The template with each placeholder replaced by `body`'s top-level value of that
    /// name (a string as is; a number or boolean as its JSON text). Not yet parsed: the
    /// caller parses it as a [`TaskRequest`], naming the offending field if it fails.
    pub fn render(&self, body: &Value) -> Result<Value, HookError> {
        let Some(object) = body.as_object() else {
            return Err(HookError::new("body", "body must be a JSON object"));
        };
        let mut values = std::collections::BTreeMap::new();
        for field in &self.fields {
            let text = match object.get(field.as_str()) {
                None => {
                    return Err(HookError::new(
                        field.as_str(),
                        format!("missing field `{field}`"),
                    ))
                }
                Some(Value::String(s)) => s.clone(),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                Some(_) => {
                    return Err(HookError::new(
                        field.as_str(),
                        format!("field `{field}` must be a string, number or boolean"),
                    ))
                }
            };
            values.insert(field.as_str(), text);
        }
        Ok(substitute(self.template.clone(), &|name| {
            values.get(name).cloned()
        }))
    }
}

/// The names of the `{{name}}` placeholders in `s`, in order.
fn placeholders(s: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "unclosed `{{` placeholder".to_owned())?;
        let name = after[..end].trim();
        HookField::parse(name).map_err(|e| format!("bad placeholder: {}", e.0))?;
        names.push(name);
        rest = &after[end + 2..];
    }
    Ok(names)
}

/// Calls `check(path, string)` on every string value (not object keys).
fn check_strings(
    v: &Value,
    path: &str,
    check: &mut dyn FnMut(&str, &str) -> Result<(), HookError>,
) -> Result<(), HookError> {
    match v {
        Value::String(s) => check(path, s),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_strings(item, &format!("{path}[{i}]"), check)),
        Value::Object(map) => map
            .iter()
            .try_for_each(|(k, item)| check_strings(item, &format!("{path}.{k}"), check)),
        _ => Ok(()),
    }
}

/// Refuses placeholders that could choose what runs rather than its arguments.
fn forbid_placeholders(template: &Value) -> Result<(), HookError> {
    let task = &template["task"];
    let refuse = |field: &str, why: &str| {
        Err(HookError::new(
            format!("template.task.{field}"),
            format!("placeholders are not allowed in {why}"),
        ))
    };
    if task["argv"][0].as_str().is_some_and(|s| s.contains("{{")) {
        return refuse("argv[0]", "the program to run");
    }
    if task["script"].as_str().is_some_and(|s| s.contains("{{")) {
        return refuse("script", "a shell script (use `argv`)");
    }
    if let Some(url) = task["url"].as_str() {
        if let Some(at) = url.find("{{") {
            // The path starts at the first `/`, `?` or `#` after `scheme://host`.
            let authority_start = url.find("://").map_or(0, |i| i + 3);
            let path_start = url[authority_start..]
                .find(['/', '?', '#'])
                .map(|i| authority_start + i);
            if path_start.is_none_or(|p| at < p) {
                return refuse("url", "the url's scheme or host");
            }
        }
    }
    Ok(())
}

/// Replaces placeholders in every string value, in one pass: inserted text is never
/// scanned again.
fn substitute(v: Value, value_of: &dyn Fn(&str) -> Option<String>) -> Value {
    match v {
        Value::String(s) => Value::String(substitute_str(&s, value_of)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| substitute(item, value_of))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, item)| (k, substitute(item, value_of)))
                .collect(),
        ),
        other => other,
    }
}

fn substitute_str(s: &str, value_of: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        match value_of(after[..end].trim()) {
            Some(text) => out.push_str(&text),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn fields(names: &[&str]) -> Vec<HookField> {
        names.iter().map(|n| HookField::parse(n).unwrap()).collect()
    }

    fn echo() -> Value {
        json!({"target": {"selector": "env=prod"}, "task": {"kind": "shell", "argv": ["echo", "{{ref}}"]}})
    }

    #[test]
    fn renders_declared_fields_as_plain_strings() {
        let t = HookTemplate::new(echo(), fields(&["ref"])).unwrap();
        let out = t.render(&json!({"ref": "{{ref}} $(rm -rf /)"})).unwrap();
        assert_eq!(out["task"]["argv"], json!(["echo", "{{ref}} $(rm -rf /)"]));
        let out = t.render(&json!({"ref": 7})).unwrap();
        assert_eq!(out["task"]["argv"][1], "7");
        let err = t.render(&json!({"other": "x"})).unwrap_err();
        assert_eq!(err.field, "ref");
        assert!(t.render(&json!({"ref": {"a": 1}})).is_err());
        assert!(t.render(&json!(["ref"])).is_err());
    }

    #[test]
    fn refuses_dangerous_or_undeclared_placeholders() {
        let bad = [
            json!({"target": {"selector": "a=b"}, "task": {"kind": "shell", "argv": ["{{ref}}"]}}),
            json!({"target": {"selector": "a=b"}, "task": {"kind": "shell", "script": "echo {{ref}}"}}),
            json!({"target": {"selector": "a=b"}, "task": {"kind": "http", "url": "{{ref}}://x/"}}),
            json!({"target": {"selector": "a=b"}, "task": {"kind": "http", "url": "https://{{ref}}/"}}),
            json!({"target": {"selector": "a=b"}, "task": {"kind": "shell", "argv": ["echo", "{{nope}}"]}}),
            json!({"target": {"selector": "a=b"}, "task": {"kind": "shell", "argv": ["echo", "{{ref"]}}),
            json!({"target": {"selector": "a=b"}, "task": {"kind": "bogus"}}),
        ];
        for t in bad {
            assert!(
                HookTemplate::new(t.clone(), fields(&["ref"])).is_err(),
                "{t}"
            );
        }
        let ok = json!({"target": {"selector": "a=b"}, "task": {"kind": "http", "url": "https://ci.example.com/builds/{{ref}}"}});
        assert!(HookTemplate::new(ok, fields(&["ref"])).is_ok());
    }
}
