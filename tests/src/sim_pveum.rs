//! Stand-in for `pveum` on the simulated host: roles, users, API tokens and ACLs, against the
//! Proxmox VE simulator's access API.
//!
//! Usage: `felhom-sim-pveum --sim-state <state.json> <command> <args…> [--<opt> <value>]…`
//!
//! The real `pveum` (pve-access-control `src/PVE/CLI/pveum.pm`) runs the API handlers as
//! `root@pam` with the positional arguments as the path/parameters below and every other
//! parameter as `--<name> <value>`. This stand-in sends the same parameters to the simulator's
//! public API with the `root@pam!sim` token (from the state file, never argv):
//!
//! | command | API |
//! |---|---|
//! | `role add <roleid>` | `POST /access/roles` |
//! | `role modify <roleid>` | `PUT /access/roles/{roleid}` |
//! | `role list` | `GET /access/roles` |
//! | `user add <userid>` | `POST /access/users` |
//! | `user token add <userid> <tokenid>` | `POST /access/users/{userid}/token/{tokenid}` |
//! | `user token list <userid>` | `GET /access/users/{userid}/token` |
//! | `user token remove <userid> <tokenid>` | `DELETE /access/users/{userid}/token/{tokenid}` |
//! | `acl modify <path>` | `PUT /access/acl` |
//! | `acl list` | `GET /access/acl` |
//!
//! `--output-format json` prints the answer's data as compact JSON, `json-pretty` pretty (the
//! real `text` tables are not drawn: `text` prints pretty JSON too). Errors go to stderr as the
//! PVE CLI prints them (`<message>`, or `400 Parameter verification failed.` and one
//! `<param>: <text>` line each) with exit status 255.

use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::percent::percent_encode;
use crate::sim_pct::{Sim, connect};

const FAILED: u8 = 255;

/// The stand-in `pveum` with `args` (without the program name).
pub fn pveum_main(args: &[String]) -> ExitCode {
    crate::sim_pct::block_on_cli("felhom-sim-pveum", "", run(args))
}

/// One API call a command line stands for.
#[derive(Debug, PartialEq, Eq)]
struct ApiCall {
    method: reqwest::Method,
    path: String,
    form: Vec<(String, String)>,
    output: String,
}

async fn run(args: &[String]) -> anyhow::Result<u8> {
    let [flag, state_path, command @ ..] = args else {
        bail!("usage: felhom-sim-pveum --sim-state <state.json> <command> [ARGS] [OPTIONS]");
    };
    if flag != "--sim-state" {
        bail!("the first argument must be --sim-state <state.json>, got {flag}");
    }
    let call = api_call(command)?;
    let sim = connect(state_path)?;
    let (status, body) = send(&sim, &call).await?;
    if !(200..300).contains(&status) {
        match body.get("errors").and_then(Value::as_object) {
            Some(errors) => {
                eprintln!("400 Parameter verification failed.");
                for (param, text) in errors {
                    eprintln!("{param}: {}", text.as_str().unwrap_or_default());
                }
            }
            None => eprintln!(
                "{}",
                body.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("request failed")
            ),
        }
        return Ok(FAILED);
    }
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    if !data.is_null() {
        let text = if call.output == "json" {
            serde_json::to_string(&data)?
        } else {
            serde_json::to_string_pretty(&data)?
        };
        println!("{text}");
    }
    Ok(0)
}

fn api_call(command: &[String]) -> anyhow::Result<ApiCall> {
    let words: Vec<&str> = command.iter().map(String::as_str).collect();
    let positional = words.iter().take_while(|w| !w.starts_with('-')).count();
    let (head, options) = words.split_at(positional);
    let enc = |s: &str| percent_encode(s);
    let (method, path, mut form) = match head {
        ["role", "add", roleid] => (
            reqwest::Method::POST,
            "/access/roles".to_owned(),
            vec![("roleid".to_owned(), (*roleid).to_owned())],
        ),
        ["role", "modify", roleid] => (
            reqwest::Method::PUT,
            format!("/access/roles/{}", enc(roleid)),
            vec![],
        ),
        ["role", "list"] => (reqwest::Method::GET, "/access/roles".to_owned(), vec![]),
        ["user", "add", userid] => (
            reqwest::Method::POST,
            "/access/users".to_owned(),
            vec![("userid".to_owned(), (*userid).to_owned())],
        ),
        ["user", "token", "add", userid, tokenid] => (
            reqwest::Method::POST,
            format!("/access/users/{}/token/{}", enc(userid), enc(tokenid)),
            vec![],
        ),
        ["user", "token", "list", userid] => (
            reqwest::Method::GET,
            format!("/access/users/{}/token", enc(userid)),
            vec![],
        ),
        ["user", "token", "remove", userid, tokenid] => (
            reqwest::Method::DELETE,
            format!("/access/users/{}/token/{}", enc(userid), enc(tokenid)),
            vec![],
        ),
        ["acl", "modify", path] => (
            reqwest::Method::PUT,
            "/access/acl".to_owned(),
            vec![("path".to_owned(), (*path).to_owned())],
        ),
        ["acl", "list"] => (reqwest::Method::GET, "/access/acl".to_owned(), vec![]),
        _ => bail!(
            "400 unknown command 'pveum {}' (the stand-in knows role add|modify|list, user add, \
             user token add|list|remove, acl modify|list)",
            head.join(" ")
        ),
    };
    let mut output = "text".to_owned();
    let mut it = options.iter();
    while let Some(opt) = it.next() {
        let Some(name) = opt.strip_prefix("--").or_else(|| opt.strip_prefix('-')) else {
            bail!("400 too many arguments: unexpected '{opt}'");
        };
        let Some(value) = it.next() else {
            bail!("400 missing value for option '{name}'");
        };
        if name == "output-format" {
            output = (*value).to_owned();
        } else {
            form.push((name.to_owned(), (*value).to_owned()));
        }
    }
    Ok(ApiCall {
        method,
        path,
        form,
        output,
    })
}

async fn send(sim: &Sim, call: &ApiCall) -> anyhow::Result<(u16, Value)> {
    let url = format!("{}/api2/json{}", sim.url, call.path);
    let mut req = sim
        .client
        .request(call.method.clone(), &url)
        .header("Authorization", format!("PVEAPIToken={}", sim.token));
    if !call.form.is_empty() {
        req = if call.method == reqwest::Method::GET || call.method == reqwest::Method::DELETE {
            req.query(&call.form)
        } else {
            req.form(&call.form)
        };
    }
    let resp = req.send().await.context("Cannot reach the simulator")?;
    let status = resp.status().as_u16();
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
    let mut body: Value = resp.json().await.unwrap_or(Value::Null);
    // PVE puts a failure's text in the status line; the CLI prints the die message.
    if status >= 300
        && body.get("message").is_none()
        && let Some(r) = reason
    {
        body["message"] = Value::String(r);
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn a_token_add_maps_to_the_token_endpoint_with_its_options() {
        let c = api_call(&args(
            "user token add felhom-agent@pve agent --privsep 1 --output-format json",
        ))
        .unwrap();
        assert_eq!(c.method, reqwest::Method::POST);
        assert_eq!(c.path, "/access/users/felhom-agent%40pve/token/agent");
        assert_eq!(c.form, vec![("privsep".to_owned(), "1".to_owned())]);
        assert_eq!(c.output, "json");
    }

    #[test]
    fn an_acl_modify_carries_the_path_and_subjects() {
        let c = api_call(&args(
            "acl modify / --roles FelhomAgent --tokens felhom-agent@pve!agent",
        ))
        .unwrap();
        assert_eq!(c.path, "/access/acl");
        assert_eq!(c.form[0], ("path".to_owned(), "/".to_owned()));
        assert_eq!(
            c.form[2],
            ("tokens".to_owned(), "felhom-agent@pve!agent".to_owned())
        );
    }

    #[test]
    fn an_unknown_command_is_refused_by_name() {
        let e = api_call(&args("pool add p")).unwrap_err();
        assert!(
            e.to_string().contains("unknown command 'pveum pool add p'"),
            "{e}"
        );
    }
}
