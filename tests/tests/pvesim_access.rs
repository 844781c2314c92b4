//! The simulator's access-control API (roles, users, tokens, ACLs), as enrollment drives it.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[tokio::test]
async fn a_role_user_token_and_acls_give_a_working_privilege_separated_token() {
    let sim = start().await;
    let privs = "VM.Audit,Datastore.Audit";
    assert_eq!(
        post(
            &sim,
            ROOT,
            "/access/roles",
            &[("roleid", "Felhom"), ("privs", privs)]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        post(&sim, ROOT, "/access/users", &[("userid", "enrolled@pve")])
            .await
            .status,
        200
    );
    let t = post(
        &sim,
        ROOT,
        "/access/users/enrolled@pve/token/agent",
        &[("privsep", "1")],
    )
    .await;
    assert_eq!(t.status, 200, "{:?}", t.body);
    assert_eq!(t.data()["full-tokenid"], "enrolled@pve!agent");
    assert_eq!(t.data()["info"]["privsep"], 1);
    assert_eq!(t.data()["value"].as_str().unwrap().len(), 36);
    // Before any ACL the token sees nothing.
    let token = "enrolled@pve!agent";
    let perms = get(&sim, token, "/access/permissions").await;
    assert_eq!(perms.status, 200);
    assert!(
        perms
            .data()
            .get("/")
            .is_none_or(|p| p.as_object().unwrap().is_empty()),
        "{:?}",
        perms.body
    );
    for (kind, who) in [("users", "enrolled@pve"), ("tokens", token)] {
        let a = put(
            &sim,
            ROOT,
            "/access/acl",
            &[("path", "/"), ("roles", "Felhom"), (kind, who)],
        )
        .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
    }
    let perms = get(&sim, token, "/access/permissions").await;
    assert_eq!(perms.data()["/"]["VM.Audit"], 1, "{:?}", perms.body);
    assert!(perms.data()["/"].get("Sys.Modify").is_none());
}

#[tokio::test]
async fn creating_what_exists_fails_with_pves_texts() {
    let sim = start().await;
    post(
        &sim,
        ROOT,
        "/access/roles",
        &[("roleid", "Felhom"), ("privs", "VM.Audit")],
    )
    .await;
    let again = post(&sim, ROOT, "/access/roles", &[("roleid", "Felhom")]).await;
    assert_eq!(
        (again.status, again.reason.as_str()),
        (500, "create role failed: role 'Felhom' already exists")
    );
    let pve = post(&sim, ROOT, "/access/roles", &[("roleid", "PVEMine")]).await;
    assert_eq!(pve.status, 400);
    assert_eq!(
        pve.body["errors"]["roleid"],
        "cannot use role ID starting with the (case-insensitive) 'PVE' namespace"
    );
    post(&sim, ROOT, "/access/users", &[("userid", "u@pve")]).await;
    let user = post(&sim, ROOT, "/access/users", &[("userid", "u@pve")]).await;
    assert_eq!(
        user.reason,
        "create user failed: user 'u@pve' already exists"
    );
    post(&sim, ROOT, "/access/users/u@pve/token/t", &[]).await;
    let token = post(&sim, ROOT, "/access/users/u@pve/token/t", &[]).await;
    assert_eq!(token.status, 400);
    assert_eq!(token.body["errors"]["tokenid"], "Token already exists.");
    let priv_ = post(
        &sim,
        ROOT,
        "/access/roles",
        &[("roleid", "Bad"), ("privs", "VM.Fly")],
    )
    .await;
    assert_eq!(
        priv_.reason,
        "create role failed: invalid privilege 'VM.Fly'"
    );
}

#[tokio::test]
async fn updating_a_role_replaces_its_privileges_unless_appending() {
    let sim = start().await;
    post(
        &sim,
        ROOT,
        "/access/roles",
        &[("roleid", "R"), ("privs", "VM.Audit")],
    )
    .await;
    put(&sim, ROOT, "/access/roles/R", &[("privs", "Sys.Audit")]).await;
    let privs = |roles: &serde_json::Value| {
        roles
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["roleid"] == "R")
            .unwrap()["privs"]
            .clone()
    };
    assert_eq!(
        privs(get(&sim, ROOT, "/access/roles").await.data()),
        "Sys.Audit"
    );
    put(
        &sim,
        ROOT,
        "/access/roles/R",
        &[("privs", "VM.Audit"), ("append", "1")],
    )
    .await;
    assert_eq!(
        privs(get(&sim, ROOT, "/access/roles").await.data()),
        "Sys.Audit,VM.Audit"
    );
    let missing = put(&sim, ROOT, "/access/roles/Nope", &[("privs", "VM.Audit")]).await;
    assert_eq!(
        missing.reason,
        "update role failed: role 'Nope' does not exist"
    );
    let builtin = put(
        &sim,
        ROOT,
        "/access/roles/Administrator",
        &[("privs", "VM.Audit")],
    )
    .await;
    assert_eq!(
        builtin.reason,
        "auto-generated role 'Administrator' cannot be modified"
    );
}

#[tokio::test]
async fn access_changes_need_their_privileges() {
    let sim = start().await;
    let role = post(&sim, AGENT, "/access/roles", &[("roleid", "Mine")]).await;
    assert_eq!(
        (role.status, role.reason.as_str()),
        (403, "Permission check failed (/access, Sys.Modify)")
    );
    let acl = put(
        &sim,
        AGENT,
        "/access/acl",
        &[
            ("path", "/"),
            ("roles", "Administrator"),
            ("users", "felhom-agent@pve"),
        ],
    )
    .await;
    assert_eq!(
        (acl.status, acl.reason.as_str()),
        (403, "Permission check failed (/, Permissions.Modify)")
    );
    let user = post(&sim, AGENT, "/access/users", &[("userid", "x@pve")]).await;
    assert_eq!(user.status, 403);
}

#[tokio::test]
async fn an_acl_update_checks_what_it_names() {
    let sim = start().await;
    let none = put(
        &sim,
        ROOT,
        "/access/acl",
        &[("path", "/"), ("roles", "Administrator")],
    )
    .await;
    assert_eq!(none.status, 400);
    assert_eq!(
        none.body["errors"]["tokens"],
        "either 'users', 'groups' or 'tokens' is required."
    );
    let role = put(
        &sim,
        ROOT,
        "/access/acl",
        &[
            ("path", "/"),
            ("roles", "Ghost"),
            ("users", "felhom-agent@pve"),
        ],
    )
    .await;
    assert_eq!(
        role.reason,
        "ACL update failed: role 'Ghost' does not exist"
    );
    let token = put(
        &sim,
        ROOT,
        "/access/acl",
        &[
            ("path", "/"),
            ("roles", "Administrator"),
            ("tokens", "felhom-agent@pve!nope"),
        ],
    )
    .await;
    assert_eq!(
        token.reason,
        "ACL update failed: no such token 'nope' for user 'felhom-agent@pve'"
    );
    let path = put(
        &sim,
        ROOT,
        "/access/acl",
        &[
            ("path", "/moon"),
            ("roles", "Administrator"),
            ("users", "felhom-agent@pve"),
        ],
    )
    .await;
    assert_eq!(path.body["errors"]["path"], "invalid ACL path '/moon'");
}

#[tokio::test]
async fn setting_an_acl_twice_changes_nothing_and_delete_removes_it() {
    let sim = start().await;
    post(&sim, ROOT, "/access/users", &[("userid", "u@pve")]).await;
    let form = [
        ("path", "/vms"),
        ("roles", "PVEAuditor"),
        ("users", "u@pve"),
    ];
    put(&sim, ROOT, "/access/acl", &form).await;
    put(&sim, ROOT, "/access/acl", &form).await;
    let count = |acls: &serde_json::Value| {
        acls.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["ugid"] == "u@pve")
            .count()
    };
    assert_eq!(count(get(&sim, ROOT, "/access/acl").await.data()), 1);
    let mut del = form.to_vec();
    del.push(("delete", "1"));
    put(&sim, ROOT, "/access/acl", &del).await;
    assert_eq!(count(get(&sim, ROOT, "/access/acl").await.data()), 0);
}

#[tokio::test]
async fn a_removed_token_no_longer_authenticates() {
    let sim = start().await;
    post(&sim, ROOT, "/access/users", &[("userid", "u@pve")]).await;
    let t = post(&sim, ROOT, "/access/users/u@pve/token/t", &[]).await;
    let secret = t.data()["value"].as_str().unwrap().to_owned();
    let listed = get(&sim, ROOT, "/access/users/u@pve/token").await;
    assert_eq!(listed.data()[0]["tokenid"], "t");
    let gone = call(
        &sim,
        Some(ROOT),
        reqwest::Method::DELETE,
        "/access/users/u@pve/token/t",
        &[],
    )
    .await;
    assert_eq!(gone.status, 200, "{:?}", gone.body);
    let resp = client(&sim)
        .get(format!("{}/api2/json/version", sim.url()))
        .header("Authorization", format!("PVEAPIToken=u@pve!t={secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(reason_of(&resp), "no such token 't' for user 'u@pve'");
}
