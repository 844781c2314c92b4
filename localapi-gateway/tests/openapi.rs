//! The OpenAPI document and the route table describe the same API: every route is documented
//! and every documented operation is routed, with matching availability.

mod common;

use std::collections::BTreeSet;

use common::*;
use felhom_localapi_gateway::OPENAPI_JSON;
use felhom_localapi_gateway::routes::{Handling, ROUTES};

fn document() -> serde_json::Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is valid JSON")
}

#[test]
fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let routed: BTreeSet<String> = ROUTES
        .iter()
        .map(|r| format!("{} {}", r.verb.as_str(), r.path))
        .collect();
    assert_eq!(documented, routed);
}

#[test]
fn documented_availability_matches_the_table() {
    let doc = document();
    for r in ROUTES {
        let op = &doc["paths"][r.path][r.verb.as_str().to_lowercase()];
        let documented_available =
            op.get("x-felhom-available") != Some(&serde_json::Value::Bool(false));
        assert_eq!(
            documented_available,
            r.handling != Handling::NotAvailable,
            "{} {}",
            r.verb.as_str(),
            r.path
        );
    }
}

#[test]
fn every_operation_but_the_document_requires_the_bearer_token() {
    let doc = document();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
    for r in ROUTES {
        let op = &doc["paths"][r.path][r.verb.as_str().to_lowercase()];
        let public = op.get("security") == Some(&serde_json::json!([]));
        assert_eq!(
            public,
            r.handling == Handling::OpenApiDocument,
            "{}",
            r.path
        );
    }
}

#[test]
fn every_schema_reference_resolves() {
    let doc = document();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
}

fn collect_refs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    out.push(v.as_str().expect("$ref values are strings").to_owned());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn document_is_served_without_a_token() {
    let h = Harness::start().await;
    let r = h.client().get(h.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), OPENAPI_JSON);
    assert!(h.fake().calls().is_empty());
    h.shutdown().await;
}
