//! Authentication and authorization behave like PVE: reason phrases carry the message, bodies
//! are `{"data":null}`, privilege-separated tokens get the intersection with their user.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn missing_credentials_are_401_no_ticket() {
    let sim = start().await;
    let a = call(&sim, None, Method::GET, "/version", &[]).await;
    assert_eq!((a.status, a.reason.as_str()), (401, "No ticket"));
    assert_eq!(a.body, json!({"data": null}));
}

#[tokio::test]
async fn wrong_secret_is_401_invalid_token_value() {
    let sim = start().await;
    let resp = client(&sim)
        .get(format!("{}/api2/json/version", sim.url()))
        .header(
            "Authorization",
            "PVEAPIToken=felhom-agent@pve!agent=00000000-0000-0000-0000-000000000000",
        )
        .send()
        .await
        .unwrap();
    let a = answer(resp).await;
    assert_eq!((a.status, a.reason.as_str()), (401, "invalid token value!"));
}

#[tokio::test]
async fn unknown_token_is_401_naming_token_and_user() {
    let sim = start().await;
    let resp = client(&sim)
        .get(format!("{}/api2/json/version", sim.url()))
        .header("Authorization", "PVEAPIToken=felhom-agent@pve!nope=x")
        .send()
        .await
        .unwrap();
    let a = answer(resp).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.reason, "no such token 'nope' for user 'felhom-agent@pve'");
}

#[tokio::test]
async fn valid_token_reads_version_in_data_envelope() {
    let sim = start().await;
    let a = get(&sim, AGENT, "/version").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.data()["release"], "8.4");
}

#[tokio::test]
async fn privsep_token_granted_without_its_user_is_refused() {
    let sim = start().await;
    let a = get(&sim, TOKENONLY, "/nodes/pve1/lxc/101/config").await;
    assert_eq!(a.status, 403);
    assert_eq!(a.reason, "Permission check failed (/vms/101, VM.Audit)");
    assert_eq!(a.body, json!({"data": null}));
}

#[tokio::test]
async fn privsep_token_granted_without_its_user_lists_no_guests() {
    let sim = start().await;
    let a = get(&sim, TOKENONLY, "/nodes/pve1/lxc").await;
    assert_eq!(a.data(), &json!([]));
}

#[tokio::test]
async fn auditor_cannot_start_a_guest() {
    let sim = start().await;
    let a = post(&sim, AUDITOR, "/nodes/pve1/lxc/103/status/start", &[]).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.reason, "Permission check failed (/vms/103, VM.PowerMgmt)");
}

#[tokio::test]
async fn storage_content_refusal_names_both_alternatives() {
    let sim = start().await;
    let a = get(&sim, TOKENONLY, "/nodes/pve1/storage/local/content").await;
    assert_eq!(a.status, 403);
    assert_eq!(
        a.reason,
        "Permission check failed (/storage/local, Datastore.Audit|Datastore.AllocateSpace)"
    );
}

#[tokio::test]
async fn unknown_guest_is_500_config_file_missing() {
    let sim = start().await;
    let a = get(&sim, AGENT, "/nodes/pve1/lxc/999/status/current").await;
    assert_eq!(a.status, 500);
    assert_eq!(
        a.reason,
        "Configuration file 'nodes/pve1/lxc/999.conf' does not exist"
    );
}

#[tokio::test]
async fn unknown_path_is_501_method_not_implemented() {
    let sim = start().await;
    let a = get(&sim, AGENT, "/nodes/pve1/qemu").await;
    assert_eq!(a.status, 501);
    assert_eq!(a.reason, "Method 'GET /nodes/pve1/qemu' not implemented");
}

#[tokio::test]
async fn unknown_parameter_is_400_with_errors_object() {
    let sim = start().await;
    let a = put(
        &sim,
        AGENT,
        "/nodes/pve1/lxc/103/config",
        &[("colour", "red")],
    )
    .await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (400, "Parameter verification failed.")
    );
    assert_eq!(
        a.body["errors"]["colour"],
        "property is not defined in schema and the schema does not allow additional properties"
    );
    assert_eq!(a.body["data"], json!(null));
}

#[tokio::test]
async fn permissions_endpoint_reports_effective_privileges() {
    let sim = start().await;
    let a = get(&sim, AGENT, "/access/permissions?path=/vms/101").await;
    assert_eq!(a.data()["/vms/101"]["VM.Backup"], 1);
    let none = get(&sim, TOKENONLY, "/access/permissions?path=/vms/101").await;
    assert_eq!(none.data(), &json!({}));
}

#[tokio::test]
async fn nodes_reports_the_served_certificate_fingerprint() {
    let sim = start().await;
    let a = get(&sim, AGENT, "/nodes").await;
    assert_eq!(a.data()[0]["ssl_fingerprint"], sim.fingerprint());
    assert_eq!(sim.fingerprint().len(), 32 * 3 - 1);
}

#[tokio::test]
async fn delete_with_a_body_is_refused_like_pveproxy() {
    let sim = start().await;
    let resp = client(&sim)
        .delete(format!("{}/api2/json/nodes/pve1/lxc/103", sim.url()))
        .header(
            "Authorization",
            format!("PVEAPIToken={}", sim.token(AGENT).unwrap()),
        )
        .form(&[("purge", "1")])
        .send()
        .await
        .unwrap();
    let a = answer(resp).await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (501, "Unexpected content for method 'DELETE'")
    );
    assert!(sim.state().guest(103).is_some());
}

#[tokio::test]
async fn json_and_form_bodies_are_both_accepted() {
    let sim = start().await;
    let resp = client(&sim)
        .put(format!("{}/api2/json/nodes/pve1/lxc/103/config", sim.url()))
        .header(
            "Authorization",
            format!("PVEAPIToken={}", sim.token(AGENT).unwrap()),
        )
        .json(&json!({"memory": 1536, "onboot": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let cfg = get(&sim, AGENT, "/nodes/pve1/lxc/103/config").await;
    assert_eq!(cfg.data()["memory"], 1536);
    assert_eq!(cfg.data()["onboot"], 1);
}

#[tokio::test]
async fn token_without_token_name_is_401_not_splittable() {
    let sim = start().await;
    let resp = client(&sim)
        .get(format!("{}/api2/json/version", sim.url()))
        .header("Authorization", "PVEAPIToken=felhom-agent@pve=abc")
        .send()
        .await
        .unwrap();
    let a = answer(resp).await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.reason,
        "'felhom-agent@pve' is not a valid token ID - not able to split into user and token parts"
    );
}
