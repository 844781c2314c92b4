//! Request and response JSON (the proto3 JSON mapping, via prost-reflect's serde support).
//!
//! Request input is a sequence of JSON objects (one for a unary or server-streaming method,
//! any number for a client stream), like grpcurl's `-d`. It is read in two passes so both kinds
//! of mistake are reported precisely: first as plain JSON (syntax errors carry line and
//! column), then each value against the method's input message (unknown fields and wrong
//! types carry the path of the offending field).

use std::io::Read as _;
use std::path::PathBuf;

use prost_reflect::{
    DeserializeOptions, DynamicMessage, MessageDescriptor, ReflectMessage as _, SerializeOptions,
};

use super::CtlError;

/// Where the request JSON comes from (`call`'s last argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestSource {
    /// No argument: one empty request message.
    Empty,
    /// The JSON text itself.
    Inline(String),
    /// `@path`: a file holding the JSON.
    File(PathBuf),
    /// `-`: standard input.
    Stdin,
}

impl RequestSource {
    /// Interprets `call`'s request argument (`JSON`, `@file` or `-`).
    pub fn from_arg(arg: Option<&str>) -> Self {
        match arg {
            None => RequestSource::Empty,
            Some("-") => RequestSource::Stdin,
            Some(a) => match a.strip_prefix('@') {
                Some(path) => RequestSource::File(PathBuf::from(path)),
                None => RequestSource::Inline(a.to_owned()),
            },
        }
    }

    /// How error messages name this source ("in the argument", "in file x", "on stdin").
    pub(super) fn name(&self) -> String {
        match self {
            RequestSource::Empty | RequestSource::Inline(_) => "in the argument".to_owned(),
            RequestSource::File(path) => format!("in file {}", path.display()),
            RequestSource::Stdin => "on stdin".to_owned(),
        }
    }

    pub(super) fn read(&self) -> Result<String, CtlError> {
        let failed = |source| CtlError::ReadRequest {
            source_name: self.name(),
            source,
        };
        match self {
            RequestSource::Empty => Ok("{}".to_owned()),
            RequestSource::Inline(text) => Ok(text.clone()),
            RequestSource::File(path) => std::fs::read_to_string(path).map_err(failed),
            RequestSource::Stdin => {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).map_err(failed)?;
                Ok(text)
            }
        }
    }
}

/// Parses `text` (zero or more JSON objects) into messages of type `desc`.
pub(super) fn parse_requests(
    desc: &MessageDescriptor,
    text: &str,
    source_name: &str,
) -> Result<Vec<DynamicMessage>, CtlError> {
    let values = serde_json::Deserializer::from_str(text)
        .into_iter::<serde_json::Value>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CtlError::BadJson {
            source_name: source_name.to_owned(),
            detail: e.to_string(),
        })?;
    if values.is_empty() && text.trim().is_empty() {
        // An empty file or stdin means one empty request, as with no argument at all.
        return Ok(vec![DynamicMessage::new(desc.clone())]);
    }
    values
        .into_iter()
        .map(|value| message_from_value(desc, value, source_name))
        .collect()
}

fn message_from_value(
    desc: &MessageDescriptor,
    value: serde_json::Value,
    source_name: &str,
) -> Result<DynamicMessage, CtlError> {
    let mut track = serde_path_to_error::Track::new();
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(
        desc.clone(),
        serde_path_to_error::Deserializer::new(value, &mut track),
        &options,
    )
    .map_err(|e| {
        let path = track.path().to_string();
        let detail = if path.is_empty() || path == "." {
            e.to_string()
        } else {
            format!("{e} (at {path})")
        };
        CtlError::BadRequest {
            source_name: source_name.to_owned(),
            message: desc.full_name().to_owned(),
            detail,
        }
    })
}

/// `message` as proto3 JSON with default values included. Fails only for a
/// `google.protobuf.Any` whose type the server's descriptors do not define.
pub(super) fn to_json(message: &DynamicMessage) -> Result<serde_json::Value, CtlError> {
    let options = SerializeOptions::new().skip_default_fields(false);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| CtlError::Reflection {
            detail: format!(
                "cannot show a {} response as JSON: {e}",
                message.descriptor().full_name()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> MessageDescriptor {
        let pool = prost_reflect::DescriptorPool::decode(felhom_proto::FILE_DESCRIPTOR_SET)
            .expect("felhom's own descriptor set is valid");
        pool.get_message_by_name("felhom.agent.v1.SelftestReport")
            .expect("SelftestReport is in the agent proto")
    }

    #[test]
    fn request_argument_forms_are_recognised() {
        assert_eq!(RequestSource::from_arg(None), RequestSource::Empty);
        assert_eq!(RequestSource::from_arg(Some("-")), RequestSource::Stdin);
        assert_eq!(
            RequestSource::from_arg(Some("@r.json")),
            RequestSource::File(PathBuf::from("r.json"))
        );
        assert_eq!(
            RequestSource::from_arg(Some("{}")),
            RequestSource::Inline("{}".to_owned())
        );
    }

    #[test]
    fn several_objects_make_several_messages() {
        let parsed = parse_requests(&report(), r#"{"ok": true} {"ok": false}"#, "x")
            .expect("two valid objects");
        assert_eq!(parsed.len(), 2);
    }

    #[test]
    fn unknown_nested_field_names_field_and_path() {
        let err = parse_requests(
            &report(),
            r#"{"checks": [{"name": "a"}, {"nmae": "b"}]}"#,
            "in the argument",
        )
        .expect_err("nmae is not a field");
        assert_eq!(
            err.to_string(),
            "invalid request in the argument for felhom.agent.v1.SelftestReport: unrecognized field name 'nmae' (at checks[1])"
        );
    }

    #[test]
    fn defaults_are_printed() {
        let message = DynamicMessage::new(report());
        assert_eq!(
            to_json(&message).expect("a plain message maps to JSON"),
            serde_json::json!({"ok": false, "checks": []})
        );
    }
}
