//! The access-control API that setting up a host uses (`pveum` calls these handlers as
//! root@pam): roles, users, API tokens and ACL updates, after pve-access-control
//! `src/PVE/API2/Role.pm`, `User.pm` and `ACL.pm` (verified):
//!
//! - `POST /access/roles` and `PUT /access/roles/{roleid}` need `Sys.Modify` on `/access`; a
//!   role id starting with `PVE` is a parameter error; `die`s inside `lock_user_config` come
//!   back as 500 with the step's prefix: `create role failed: role '<id>' already exists`,
//!   `update role failed: role '<id>' does not exist`; built-in roles: `auto-generated role
//!   '<id>' cannot be modified`. Unknown privileges: `invalid privilege '<p>'` (from memory of
//!   `add_role_privs`). `PUT` replaces the privileges unless `append`.
//! - `POST /access/users` needs `Realm.AllocateUser` on `/access/realm/<realm>` and
//!   `User.Modify` on `/access/groups`; `create user failed: user '<id>' already exists`.
//!   `GET /access/users/{userid}` needs `User.Modify` or `Sys.Audit` on `/access/groups`.
//! - Tokens (`/access/users/{userid}/token[/{tokenid}]`): the user itself, or `User.Modify` on
//!   `/access/users/{userid}`. Create answers `{info: {privsep, comment?}, value,
//!   "full-tokenid"}` (privsep defaults to 1); an existing token is the parameter error
//!   `tokenid: Token already exists.`; unknown ones `no such token '<t>' for user '<u>'`,
//!   unknown users `no such user ('<u>')`.
//! - `PUT /access/acl` needs `Permissions.Modify` on the path (`perm-modify`); one of users,
//!   groups or tokens is required (the parameter error names all three); roles, users and
//!   tokens must exist (`ACL update failed: role '<r>' does not exist`, …); `propagate`
//!   defaults to 1; `delete` removes. Setting an entry that exists changes nothing.
//!
//! Limits: no groups, realms are `pam` and `pve` only, no token expiry, no user fields
//! besides `comment` and `enable`.

use serde_json::{Value, json};

use super::acl::{ALL_PRIVILEGES, AclFixture, AclKind, TokenEntry, builtin_role};
use super::call::Call;
use super::reply::ApiError;
use super::state::{World, random_uuid};

/// Routes `/access/…` below `/api2/json`; `None` for paths this module does not serve.
pub fn route(call: &Call, w: &mut World, m: &str, s: &[&str]) -> Option<Result<Value, ApiError>> {
    Some(match (m, s) {
        ("GET", ["access", "roles"]) => Ok(roles_index(w)),
        ("POST", ["access", "roles"]) => create_role(call, w),
        ("PUT", ["access", "roles", roleid]) => update_role(call, w, roleid),
        ("POST", ["access", "users"]) => create_user(call, w),
        ("GET", ["access", "users", userid]) => read_user(call, w, userid),
        ("GET", ["access", "users", userid, "token"]) => token_index(call, w, userid),
        ("POST", ["access", "users", userid, "token", tokenid]) => {
            generate_token(call, w, userid, tokenid)
        }
        ("DELETE", ["access", "users", userid, "token", tokenid]) => {
            remove_token(call, w, userid, tokenid)
        }
        ("GET", ["access", "acl"]) => acl_index(call, w),
        ("PUT", ["access", "acl"]) => update_acl(call, w),
        _ => return None,
    })
}

fn split_list(text: &str) -> Vec<&str> {
    text.split([',', ';', ' ', '\0'])
        .filter(|p| !p.is_empty())
        .collect()
}

fn roles_index(w: &World) -> Value {
    let mut out: Vec<Value> = w
        .access
        .roles
        .iter()
        .map(|(id, privs)| {
            json!({"roleid": id, "privs": privs.iter().cloned().collect::<Vec<_>>().join(","), "special": 0})
        })
        .collect();
    for id in ["Administrator", "NoAccess", "PVEAuditor"] {
        let privs = builtin_role(id).unwrap_or_default();
        let mut privs: Vec<&str> = privs.clone();
        privs.sort_unstable();
        out.push(json!({"roleid": id, "privs": privs.join(","), "special": 1}));
    }
    json!(out)
}

/// The privileges of a `privs` parameter, each one PVE knows.
fn parse_privs(call: &Call, step: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for p in split_list(call.params.get("privs").unwrap_or("")) {
        if !ALL_PRIVILEGES.contains(&p) {
            return Err(ApiError::internal(format!(
                "{step}: invalid privilege '{p}'"
            )));
        }
        out.push(p.to_owned());
    }
    Ok(out)
}

fn create_role(call: &Call, w: &mut World) -> Result<Value, ApiError> {
    call.need(w, "/access", "Sys.Modify")?;
    let role = call.params.required("roleid")?.to_owned();
    if role.to_ascii_lowercase().starts_with("pve") {
        return Err(ApiError::param(
            "roleid",
            "cannot use role ID starting with the (case-insensitive) 'PVE' namespace",
        ));
    }
    if w.access.roles.contains_key(&role) || builtin_role(&role).is_some() {
        return Err(ApiError::internal(format!(
            "create role failed: role '{role}' already exists"
        )));
    }
    let privs = parse_privs(call, "create role failed")?;
    w.access.roles.insert(role, privs.into_iter().collect());
    Ok(Value::Null)
}

fn update_role(call: &Call, w: &mut World, role: &str) -> Result<Value, ApiError> {
    call.need(w, "/access", "Sys.Modify")?;
    if builtin_role(role).is_some() {
        return Err(ApiError::internal(format!(
            "auto-generated role '{role}' cannot be modified"
        )));
    }
    if !w.access.roles.contains_key(role) {
        return Err(ApiError::internal(format!(
            "update role failed: role '{role}' does not exist"
        )));
    }
    let append = call.params.flag("append")?;
    let privs = parse_privs(call, "update role failed")?;
    let entry = w.access.roles.entry(role.to_owned()).or_default();
    if !append {
        entry.clear();
    }
    entry.extend(privs);
    Ok(Value::Null)
}

/// `user@realm` with a known realm, or PVE's parameter error.
fn check_userid(param: &str, userid: &str) -> Result<(), ApiError> {
    match userid.rsplit_once('@') {
        Some((name, "pam" | "pve")) if !name.is_empty() && !name.contains(['!', ':', '/']) => {
            Ok(())
        }
        Some((_, realm)) if !realm.is_empty() && realm != "pam" && realm != "pve" => Err(
            ApiError::internal(format!("domain '{realm}' does not exist")),
        ),
        _ => Err(ApiError::param(
            param,
            format!("value '{userid}' does not look like a valid user name"),
        )),
    }
}

fn create_user(call: &Call, w: &mut World) -> Result<Value, ApiError> {
    let userid = call.params.required("userid")?.to_owned();
    check_userid("userid", &userid)?;
    let realm = userid.rsplit_once('@').map_or("", |(_, r)| r);
    call.need(w, &format!("/access/realm/{realm}"), "Realm.AllocateUser")?;
    call.need(w, "/access/groups", "User.Modify")?;
    if w.access.users.contains_key(&userid) {
        return Err(ApiError::internal(format!(
            "create user failed: user '{userid}' already exists"
        )));
    }
    let enable = match call.params.get("enable") {
        None => true,
        Some(_) => call.params.flag("enable")?,
    };
    w.access.users.insert(userid, enable);
    Ok(Value::Null)
}

fn no_user(userid: &str) -> ApiError {
    ApiError::internal(format!("no such user ('{userid}')"))
}

fn read_user(call: &Call, w: &World, userid: &str) -> Result<Value, ApiError> {
    call.need_any(w, "/access/groups", &["User.Modify", "Sys.Audit"])?;
    let Some(enable) = w.access.users.get(userid) else {
        return Err(no_user(userid));
    };
    let tokens: serde_json::Map<String, Value> = tokens_of(w, userid)
        .map(|(id, e)| (id.to_owned(), json!({"privsep": i32::from(e.privsep)})))
        .collect();
    Ok(json!({"enable": i32::from(*enable), "tokens": tokens}))
}

fn tokens_of<'a>(w: &'a World, userid: &'a str) -> impl Iterator<Item = (&'a str, &'a TokenEntry)> {
    w.access.tokens.iter().filter_map(move |(authid, e)| {
        let (u, t) = authid.split_once('!')?;
        (u == userid).then_some((t, e))
    })
}

/// The user itself, or `User.Modify` on `/access/users/{userid}`.
fn need_token_admin(call: &Call, w: &World, userid: &str) -> Result<(), ApiError> {
    if call.user() == userid {
        return Ok(());
    }
    call.need(w, &format!("/access/users/{userid}"), "User.Modify")
}

fn token_index(call: &Call, w: &World, userid: &str) -> Result<Value, ApiError> {
    need_token_admin(call, w, userid)?;
    if !w.access.users.contains_key(userid) {
        return Err(no_user(userid));
    }
    let out: Vec<Value> = tokens_of(w, userid)
        .map(|(id, e)| json!({"tokenid": id, "privsep": i32::from(e.privsep)}))
        .collect();
    Ok(json!(out))
}

fn generate_token(
    call: &Call,
    w: &mut World,
    userid: &str,
    tokenid: &str,
) -> Result<Value, ApiError> {
    need_token_admin(call, w, userid)?;
    let valid = !tokenid.is_empty()
        && tokenid.len() <= 64
        && tokenid.starts_with(|c: char| c.is_ascii_alphabetic())
        && tokenid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid {
        return Err(ApiError::param(
            "tokenid",
            format!("value '{tokenid}' does not match the regex pattern"),
        ));
    }
    let full = format!("{userid}!{tokenid}");
    if !w.access.users.contains_key(userid) {
        return Err(no_user(userid));
    }
    if w.access.tokens.contains_key(&full) {
        return Err(ApiError::param("tokenid", "Token already exists."));
    }
    let privsep = match call.params.get("privsep") {
        None => true,
        Some(_) => call.params.flag("privsep")?,
    };
    let value = random_uuid(&mut rand::rng());
    w.access.tokens.insert(
        full.clone(),
        TokenEntry {
            privsep,
            secret: value.clone(),
        },
    );
    let mut info = json!({"privsep": i32::from(privsep)});
    if let Some(c) = call.params.get("comment").filter(|c| !c.is_empty()) {
        info["comment"] = json!(c);
    }
    Ok(json!({"info": info, "value": value, "full-tokenid": full}))
}

fn remove_token(
    call: &Call,
    w: &mut World,
    userid: &str,
    tokenid: &str,
) -> Result<Value, ApiError> {
    need_token_admin(call, w, userid)?;
    let full = format!("{userid}!{tokenid}");
    if w.access.tokens.remove(&full).is_none() {
        return Err(ApiError::internal(format!(
            "no such token '{tokenid}' for user '{userid}'"
        )));
    }
    w.access
        .acls
        .retain(|a| !(a.kind == AclKind::Token && a.ugid == full));
    Ok(Value::Null)
}

fn acl_index(call: &Call, w: &World) -> Result<Value, ApiError> {
    call.need(w, "/access", "Sys.Audit")?;
    let out: Vec<Value> = w
        .access
        .acls
        .iter()
        .map(|a| {
            json!({"path": a.path, "roleid": a.role, "ugid": a.ugid, "propagate": i32::from(a.propagate),
                   "type": match a.kind { AclKind::User => "user", AclKind::Token => "token" }})
        })
        .collect();
    Ok(json!(out))
}

/// `normalize_path` and `check_path`: an absolute path under one of PVE's ACL roots.
fn acl_path(raw: &str) -> Result<String, ApiError> {
    let bad = || ApiError::param("path", format!("invalid ACL path '{raw}'"));
    let trimmed = raw.trim_end_matches('/');
    let path = if trimmed.is_empty() { "/" } else { trimmed };
    if !path.starts_with('/') || path.contains("//") {
        return Err(bad());
    }
    let root = path.split('/').nth(1).unwrap_or("");
    if ![
        "", "access", "nodes", "pool", "sdn", "storage", "vms", "mapping",
    ]
    .contains(&root)
    {
        return Err(bad());
    }
    Ok(path.to_owned())
}

fn update_acl(call: &Call, w: &mut World) -> Result<Value, ApiError> {
    let raw_path = call.params.required("path")?.to_owned();
    let roles = call.params.required("roles")?.to_owned();
    let path = acl_path(&raw_path)?;
    call.need(w, &path, "Permissions.Modify")?;
    let users = call.params.get("users").unwrap_or("").to_owned();
    let tokens = call.params.get("tokens").unwrap_or("").to_owned();
    let groups = call.params.get("groups").unwrap_or("").to_owned();
    if users.is_empty() && tokens.is_empty() && groups.is_empty() {
        let text = "either 'users', 'groups' or 'tokens' is required.";
        return Err(ApiError::params(
            ["users", "groups", "tokens"]
                .into_iter()
                .map(|k| (k.to_owned(), text.to_owned()))
                .collect(),
        ));
    }
    let propagate = match call.params.get("propagate") {
        None => true,
        Some(_) => call.params.flag("propagate")?,
    };
    let delete = call.params.flag("delete")?;
    let failed = |text: String| ApiError::internal(format!("ACL update failed: {text}"));
    let mut entries = Vec::new();
    for role in split_list(&roles) {
        if !w.access.roles.contains_key(role) && builtin_role(role).is_none() {
            return Err(failed(format!("role '{role}' does not exist")));
        }
        if let Some(group) = split_list(&groups).first() {
            return Err(failed(format!("group '{group}' does not exist")));
        }
        for user in split_list(&users) {
            if !w.access.users.contains_key(user) {
                return Err(failed(format!("user '{user}' does not exist")));
            }
            entries.push((AclKind::User, user.to_owned(), role.to_owned()));
        }
        for token in split_list(&tokens) {
            let Some((user, tid)) = token.split_once('!') else {
                return Err(failed(format!(
                    "'{token}' is not a valid token ID - not able to split into user and token parts"
                )));
            };
            if !w.access.users.contains_key(user) {
                return Err(failed(format!("no such user ('{user}')")));
            }
            if !w.access.tokens.contains_key(token) {
                return Err(failed(format!("no such token '{tid}' for user '{user}'")));
            }
            entries.push((AclKind::Token, token.to_owned(), role.to_owned()));
        }
    }
    for (kind, ugid, role) in entries {
        let same =
            |a: &AclFixture| a.kind == kind && a.ugid == ugid && a.role == role && a.path == path;
        w.access.acls.retain(|a| !same(a));
        if !delete {
            w.access.acls.push(AclFixture {
                path: path.clone(),
                role,
                kind,
                ugid,
                propagate,
            });
        }
    }
    Ok(Value::Null)
}
