//! The felhomctl command line: `list`, `describe`, `call`, and one subcommand per shortcut
//! (built from [`SHORTCUTS`](super::SHORTCUTS), so a new shortcut needs no CLI code).

use crate::core::error_chain;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::backup::{self, Action};
use super::token::TokenAction;
use super::{CtlError, EXIT_CODES_HELP, Exit, RequestSource, SHORTCUTS, Session, shortcut, token};
use crate::app::paths;

/// Environment variable naming the default socket.
pub const SOCKET_ENV: &str = "FELHOMCTL_SOCKET";

/// The clap command (public so tests can check the help text and the shortcut table).
pub fn command() -> Command {
    let mut cmd = Command::new("felhomctl")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Operator CLI for felhom-agent and felhom-helper: gRPC over their Unix sockets, driven by server reflection")
        .after_help(format!(
            "Socket: --socket PATH, else --helper ({}), else ${SOCKET_ENV}, else {}.\n\n{EXIT_CODES_HELP}",
            paths::HELPER_SOCKET,
            paths::AGENT_SOCKET
        ))
        .subcommand_required(true)
        .arg(
            Arg::new("socket")
                .long("socket")
                .global(true)
                .value_name("PATH")
                .value_parser(clap::value_parser!(PathBuf))
                .help(format!("Server socket (default ${SOCKET_ENV} or {})", paths::AGENT_SOCKET)),
        )
        .arg(
            Arg::new("helper")
                .long("helper")
                .global(true)
                .action(ArgAction::SetTrue)
                .conflicts_with("socket")
                .help(format!("Talk to felhom-helper on {}", paths::HELPER_SOCKET)),
        )
        .subcommand(
            Command::new("list")
                .about("List services, or the methods of SERVICE")
                .arg(Arg::new("service").value_name("SERVICE")),
        )
        .subcommand(
            Command::new("describe")
                .about("Show a service, method, message or enum as proto text")
                .arg(Arg::new("symbol").value_name("SYMBOL").required(true)),
        )
        .subcommand(
            Command::new("call")
                .about("Call a method; print each response as JSON")
                .long_about(
                    "Call a method; print each response as pretty JSON as it arrives.\n\n\
                     METHOD is pkg.Service/Method or pkg.Service.Method. The request is JSON \
                     (proto3 JSON mapping; unknown fields are errors), @FILE to read it from a \
                     file, or - for stdin; without it an empty request is sent. Client-streaming \
                     methods take several JSON objects one after another.",
                )
                .arg(Arg::new("method").value_name("METHOD").required(true))
                .arg(
                    Arg::new("request")
                        .value_name("JSON|@FILE|-")
                        .allow_hyphen_values(true),
                ),
        );
    let mut token = Command::new("token")
        .about("Mint, rotate or revoke a guest's local API bearer token")
        .after_help("mint and rotate print the token alone on stdout; it is shown only this once.")
        .subcommand_required(true);
    for action in TokenAction::ALL {
        token = token.subcommand(
            Command::new(action.name()).about(action.about()).arg(
                Arg::new("vmid")
                    .long("vmid")
                    .value_name("N")
                    .required(true)
                    .value_parser(clap::value_parser!(u32).range(100..=999_999_999))
                    .help("The guest's VMID"),
            ),
        );
    }
    cmd = cmd.subcommand(token);
    for group in backup_commands() {
        cmd = cmd.subcommand(group);
    }
    for s in SHORTCUTS.iter().filter(|s| !s.name.contains(' ')) {
        let mut sub = shortcut_command(s.name, s);
        for child in SHORTCUTS {
            if let Some(word) = child
                .name
                .strip_prefix(s.name)
                .and_then(|rest| rest.strip_prefix(' '))
            {
                sub = sub.subcommand(shortcut_command(word, child));
            }
        }
        cmd = cmd.subcommand(sub);
    }
    cmd
}

/// The subcommand `name` running shortcut `s`.
fn shortcut_command(name: &'static str, s: &super::Shortcut) -> Command {
    Command::new(name)
        .about(s.about)
        .after_help(match s.verdict {
            Some(field) => format!(
                "Calls {} and prints a table. Exits with 1 when the response's `{field}` is false.",
                s.method
            ),
            None => format!("Calls {} and prints a table.", s.method),
        })
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print the response as JSON instead of a table"),
        )
}

/// `--vmid N`, required or optional.
fn vmid_arg(required: bool) -> Arg {
    Arg::new("vmid")
        .long("vmid")
        .value_name("N")
        .required(required)
        .value_parser(clap::value_parser!(u32).range(100..=999_999_999))
        .help("The guest's VMID")
}

fn flag(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .action(ArgAction::SetTrue)
        .help(help)
}

fn json_flag() -> Arg {
    flag("json", "Print the response as JSON instead of text")
}

fn wait_flag(what: &'static str) -> Arg {
    flag("wait", what)
}

fn tier_arg(help: &'static str) -> Arg {
    Arg::new("tier").long("tier").value_name("NAME").help(help)
}

const STATUS_EXIT_HELP: &str = "Exits with 1 when the newest job failed (for a restore-test: failed \
     its test; for a verify: did not verify the snapshot ok).";

/// `backup`, `restore-test` and `verify` with their subcommands.
fn backup_commands() -> [Command; 3] {
    let backup = Command::new("backup")
        .about("Back guests up now, list their backups, show backup status and due-ness")
        .subcommand_required(true)
        .subcommand(
            Command::new("now")
                .about("Back a guest up now (crash-consistent; joins a backup under way)")
                .after_help(
                    "Without --wait, prints the job id once the agent accepted the job. With \
                     --wait, exits with 0 when the backup ended done, 1 when it failed.",
                )
                .arg(vmid_arg(true))
                .arg(tier_arg(
                    "Only this tier (default: the due tiers, or every tier of the guest)",
                ))
                .arg(wait_flag("Wait until the backup has ended"))
                .arg(json_flag()),
        )
        .subcommand(
            Command::new("list")
                .about("List backups on every tier, newest first")
                .arg(vmid_arg(false).help("Only this guest (default: every guest with a policy)"))
                .arg(json_flag()),
        )
        .subcommand(
            Command::new("status")
                .about("Show a guest's newest backup job with each tier's run")
                .after_help(STATUS_EXIT_HELP)
                .arg(vmid_arg(true))
                .arg(json_flag()),
        )
        .subcommand(
            Command::new("due")
                .about("Whether a guest's backup is due, and why")
                .arg(vmid_arg(true))
                .arg(json_flag()),
        );
    let restore_test = Command::new("restore-test")
        .about("Restore a guest's newest backup into a scratch guest and check it starts")
        .subcommand_required(true)
        .subcommand(
            Command::new("run")
                .about("Run a restore-test of a guest now (joins one under way)")
                .after_help("With --wait, exits with 0 when the test passed, 1 when it failed.")
                .arg(vmid_arg(true))
                .arg(wait_flag("Wait until the test has ended"))
                .arg(json_flag()),
        )
        .subcommand(
            Command::new("status")
                .about("Show a guest's newest restore-test")
                .after_help(STATUS_EXIT_HELP)
                .arg(vmid_arg(true))
                .arg(json_flag()),
        );
    let verify = Command::new("verify")
        .about("Verify a guest's newest snapshot on a PBS tier")
        .subcommand_required(true)
        .subcommand(
            Command::new("run")
                .about("Ask PBS to verify a guest's newest snapshot now")
                .after_help(
                    "With --wait, exits with 0 when the snapshot verified ok, 1 when it did not \
                     or the verify could not run.",
                )
                .arg(vmid_arg(true))
                .arg(tier_arg("PBS tier (default: the guest's first PBS tier)"))
                .arg(wait_flag("Wait until the verify has ended"))
                .arg(json_flag()),
        )
        .subcommand(
            Command::new("status")
                .about("Show a guest's newest verify")
                .after_help(STATUS_EXIT_HELP)
                .arg(vmid_arg(true))
                .arg(json_flag()),
        );
    [backup, restore_test, verify]
}

/// The backup action `group sub` asks for.
fn backup_action(group: &str, sub: &str, args: &ArgMatches) -> Action {
    let vmid = || {
        *args
            .get_one::<u32>("vmid")
            .expect("clap enforces --vmid where it is required")
    };
    let tier = || args.get_one::<String>("tier").cloned();
    match (group, sub) {
        ("backup", "now") => Action::BackupNow {
            vmid: vmid(),
            tier: tier(),
        },
        ("backup", "list") => Action::BackupList {
            vmid: args.get_one::<u32>("vmid").copied(),
        },
        ("backup", "status") => Action::BackupStatus { vmid: vmid() },
        ("backup", "due") => Action::BackupDue { vmid: vmid() },
        ("restore-test", "run") => Action::RestoreTestRun { vmid: vmid() },
        ("restore-test", "status") => Action::RestoreTestStatus { vmid: vmid() },
        ("verify", "run") => Action::VerifyRun {
            vmid: vmid(),
            tier: tier(),
        },
        ("verify", "status") => Action::VerifyStatus { vmid: vmid() },
        (group, sub) => {
            unreachable!("clap only accepts the subcommands built above: {group} {sub}")
        }
    }
}

/// Entry point of the `felhomctl` binary.
pub fn main() -> ExitCode {
    let matches = command().get_matches();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("felhomctl: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Failed as u8);
        }
    };
    let exit = match runtime.block_on(run(&matches)) {
        Ok(exit) => exit,
        // `felhomctl list | head`: the reader went away; nothing left to tell anyone.
        Err(CtlError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Ok,
        Err(e) => {
            eprintln!("felhomctl: {}", error_chain(&e));
            e.exit()
        }
    };
    ExitCode::from(exit as u8)
}

fn socket(matches: &ArgMatches) -> PathBuf {
    if let Some(path) = matches.get_one::<PathBuf>("socket") {
        return path.clone();
    }
    if matches.get_flag("helper") {
        return PathBuf::from(paths::HELPER_SOCKET);
    }
    match std::env::var_os(SOCKET_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(paths::AGENT_SOCKET),
    }
}

async fn run(matches: &ArgMatches) -> Result<Exit, CtlError> {
    let socket = socket(matches);
    let Some((name, sub)) = matches.subcommand() else {
        unreachable!("clap enforces subcommand_required")
    };
    let mut out = std::io::stdout().lock();
    match name {
        "list" => {
            let mut session = Session::connect(&socket).await?;
            let service = sub.get_one::<String>("service").map(String::as_str);
            for line in session.list(service).await? {
                writeln!(out, "{line}").map_err(CtlError::Output)?;
            }
            Ok(Exit::Ok)
        }
        "describe" => {
            let mut session = Session::connect(&socket).await?;
            let symbol = sub
                .get_one::<String>("symbol")
                .expect("clap enforces the required SYMBOL");
            let text = session.describe(symbol).await?;
            out.write_all(text.as_bytes()).map_err(CtlError::Output)?;
            Ok(Exit::Ok)
        }
        "call" => {
            let method = sub
                .get_one::<String>("method")
                .expect("clap enforces the required METHOD");
            let request =
                RequestSource::from_arg(sub.get_one::<String>("request").map(String::as_str));
            let mut session = Session::connect(&socket).await?;
            session
                .call(method, &request, |response| {
                    let text = serde_json::to_string_pretty(response)
                        .expect("a serde_json::Value always serialises");
                    writeln!(out, "{text}")
                        .and_then(|()| out.flush())
                        .map_err(CtlError::Output)
                })
                .await?;
            Ok(Exit::Ok)
        }
        "token" => {
            let Some((action, args)) = sub.subcommand() else {
                unreachable!("clap enforces subcommand_required")
            };
            let action = TokenAction::find(action)
                .unwrap_or_else(|| unreachable!("clap only accepts the actions built above"));
            let vmid = *args
                .get_one::<u32>("vmid")
                .expect("clap enforces the required --vmid");
            let output = token::run(&socket, action, vmid).await?;
            writeln!(out, "{}", output.line).map_err(CtlError::Output)?;
            Ok(if output.ok { Exit::Ok } else { Exit::NotOk })
        }
        "backup" | "restore-test" | "verify" => {
            let Some((action, args)) = sub.subcommand() else {
                unreachable!("clap enforces subcommand_required")
            };
            let action = backup_action(name, action, args);
            let options = backup::Options {
                json: args.get_flag("json"),
                wait: args.try_get_one::<bool>("wait").ok().flatten() == Some(&true),
                terminal: std::io::stdout().is_terminal(),
            };
            backup::run(&socket, &action, options, &mut out).await
        }
        other => {
            // `audit verify`: the nested subcommand names the shortcut and holds its flags.
            let (name, sub) = match sub.subcommand() {
                Some((child, child_matches)) => (format!("{other} {child}"), child_matches),
                None => (other.to_owned(), sub),
            };
            let shortcut = shortcut::find(&name)
                .unwrap_or_else(|| unreachable!("clap only accepts the subcommands built above"));
            let output = shortcut::run(&socket, shortcut).await?;
            if sub.get_flag("json") {
                let text = serde_json::to_string_pretty(&output.json)
                    .expect("a serde_json::Value always serialises");
                writeln!(out, "{text}").map_err(CtlError::Output)?;
            } else {
                out.write_all(output.table().as_bytes())
                    .map_err(CtlError::Output)?;
            }
            Ok(if output.ok { Exit::Ok } else { Exit::NotOk })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_is_well_formed() {
        command().debug_assert();
    }

    fn action(args: &[&str]) -> Action {
        let matches = command()
            .try_get_matches_from(std::iter::once("felhomctl").chain(args.iter().copied()))
            .expect("valid arguments");
        let (group, sub) = matches.subcommand().expect("a subcommand");
        let (name, args) = sub.subcommand().expect("a nested subcommand");
        backup_action(group, name, args)
    }

    #[test]
    fn backup_subcommands_map_to_their_actions() {
        assert_eq!(
            action(&[
                "backup", "now", "--vmid", "101", "--tier", "offsite", "--wait"
            ]),
            Action::BackupNow {
                vmid: 101,
                tier: Some("offsite".into())
            }
        );
        assert_eq!(
            action(&["backup", "list"]),
            Action::BackupList { vmid: None }
        );
        assert_eq!(
            action(&["restore-test", "run", "--vmid", "101"]),
            Action::RestoreTestRun { vmid: 101 }
        );
        assert_eq!(
            action(&["verify", "status", "--vmid", "101", "--json"]),
            Action::VerifyStatus { vmid: 101 }
        );
    }

    #[test]
    fn status_commands_need_a_vmid_and_take_no_wait() {
        let err = command()
            .try_get_matches_from(["felhomctl", "backup", "status"])
            .expect_err("--vmid is required");
        assert!(err.to_string().contains("--vmid <N>"), "{err}");
        command()
            .try_get_matches_from(["felhomctl", "backup", "status", "--vmid", "101", "--wait"])
            .expect_err("status has no --wait");
    }

    #[test]
    fn shortcuts_do_not_shadow_builtin_subcommands() {
        for s in SHORTCUTS {
            assert!(
                !["list", "describe", "call", "help"].contains(&s.name),
                "shortcut {} shadows a subcommand",
                s.name
            );
        }
    }
}
