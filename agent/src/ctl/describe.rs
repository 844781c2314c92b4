//! `describe`: a service, method, message or enum as proto-ish text, in the shape grpcurl
//! prints (`X is a message:` then the definition, types fully qualified with a leading dot).
//! Leading comments are included when the server's descriptors carry source info.

use std::fmt::Write as _;

use prost_reflect::{
    EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    ServiceDescriptor,
};

use super::symbols::Symbol;

/// The text `felhomctl describe` prints for `symbol` (ends with a newline).
pub(super) fn render(symbol: &Symbol) -> String {
    let mut out = String::new();
    match symbol {
        Symbol::Service(s) => {
            let _ = writeln!(out, "{} is a service:", s.full_name());
            service(&mut out, s);
        }
        Symbol::Method(m) => {
            let _ = writeln!(out, "{} is a method:", m.full_name());
            method(&mut out, m, "");
        }
        Symbol::Message(m) => {
            let _ = writeln!(out, "{} is a message:", m.full_name());
            message(&mut out, m, "");
        }
        Symbol::Enum(e) => {
            let _ = writeln!(out, "{} is an enum:", e.full_name());
            enumeration(&mut out, e, "");
        }
    }
    out
}

fn service(out: &mut String, s: &ServiceDescriptor) {
    comment(out, &s.parent_file(), s.path(), "");
    let _ = writeln!(out, "service {} {{", s.name());
    for m in s.methods() {
        method(out, &m, "  ");
    }
    out.push_str("}\n");
}

fn method(out: &mut String, m: &MethodDescriptor, indent: &str) {
    comment(out, &m.parent_service().parent_file(), m.path(), indent);
    let stream = |yes: bool| if yes { "stream " } else { "" };
    let _ = writeln!(
        out,
        "{indent}rpc {} ( {}.{} ) returns ( {}.{} );",
        m.name(),
        stream(m.is_client_streaming()),
        m.input().full_name(),
        stream(m.is_server_streaming()),
        m.output().full_name(),
    );
}

fn message(out: &mut String, m: &MessageDescriptor, indent: &str) {
    comment(out, &m.parent_file(), m.path(), indent);
    let _ = writeln!(out, "{indent}message {} {{", m.name());
    let inner = format!("{indent}  ");
    for f in m.fields() {
        match f.containing_oneof() {
            // Members of a real oneof are printed inside it, at its first member.
            Some(o) if !o.is_synthetic() => {
                let first = o.fields().next().map(|x| x.number()) == Some(f.number());
                if first {
                    let _ = writeln!(out, "{inner}oneof {} {{", o.name());
                    let member = format!("{inner}  ");
                    for member_field in o.fields() {
                        field(out, &member_field, &member, "");
                    }
                    let _ = writeln!(out, "{inner}}}");
                }
            }
            Some(_) => field(out, &f, &inner, "optional "),
            None if f.is_list() => field(out, &f, &inner, "repeated "),
            None => field(out, &f, &inner, ""),
        }
    }
    for child in m.child_messages().filter(|c| !c.is_map_entry()) {
        message(out, &child, &inner);
    }
    for child in m.child_enums() {
        enumeration(out, &child, &inner);
    }
    let _ = writeln!(out, "{indent}}}");
}

fn field(out: &mut String, f: &FieldDescriptor, indent: &str, label: &str) {
    comment(out, &f.parent_file(), f.path(), indent);
    let ty = match f.kind() {
        Kind::Message(entry) if f.is_map() => {
            let key = entry.map_entry_key_field();
            let value = entry.map_entry_value_field();
            format!("map<{}, {}>", kind(&key.kind()), kind(&value.kind()))
        }
        other => kind(&other),
    };
    let _ = writeln!(out, "{indent}{label}{ty} {} = {};", f.name(), f.number());
}

fn enumeration(out: &mut String, e: &EnumDescriptor, indent: &str) {
    comment(out, &e.parent_file(), e.path(), indent);
    let _ = writeln!(out, "{indent}enum {} {{", e.name());
    for v in e.values() {
        let _ = writeln!(out, "{indent}  {} = {};", v.name(), v.number());
    }
    let _ = writeln!(out, "{indent}}}");
}

fn kind(k: &Kind) -> String {
    match k {
        Kind::Double => "double".to_owned(),
        Kind::Float => "float".to_owned(),
        Kind::Int32 => "int32".to_owned(),
        Kind::Int64 => "int64".to_owned(),
        Kind::Uint32 => "uint32".to_owned(),
        Kind::Uint64 => "uint64".to_owned(),
        Kind::Sint32 => "sint32".to_owned(),
        Kind::Sint64 => "sint64".to_owned(),
        Kind::Fixed32 => "fixed32".to_owned(),
        Kind::Fixed64 => "fixed64".to_owned(),
        Kind::Sfixed32 => "sfixed32".to_owned(),
        Kind::Sfixed64 => "sfixed64".to_owned(),
        Kind::Bool => "bool".to_owned(),
        Kind::String => "string".to_owned(),
        Kind::Bytes => "bytes".to_owned(),
        Kind::Message(m) => format!(".{}", m.full_name()),
        Kind::Enum(e) => format!(".{}", e.full_name()),
    }
}

/// Writes the leading comment recorded for the element at `path` of `file`, if any.
fn comment(out: &mut String, file: &FileDescriptor, path: &[i32], indent: &str) {
    let Some(info) = &file.file_descriptor_proto().source_code_info else {
        return;
    };
    let Some(text) = info
        .location
        .iter()
        .find(|l| l.path == path)
        .and_then(|l| l.leading_comments.as_deref())
    else {
        return;
    };
    for line in text.trim_end().lines() {
        let _ = writeln!(out, "{indent}//{line}");
    }
}
