//! `felhom-agent escrow create|rotate|status|recover`: the PBS key escrow on the command line,
//! run by root on the host (PVE's live key is root's). See [`crate::capabilities::escrow`].
//!
//! The recovery code is printed to standard output once, by `create` and `rotate`, and read
//! from the terminal (echo off) by `recover`: never from arguments or the environment, and
//! never written to a log.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::app::config::BackupView as Config;
use crate::app::paths;
use crate::capabilities::escrow::lifecycle::{self, Created, EscrowError, Installed};
use crate::capabilities::escrow::recovery_code::CodeError;
use crate::capabilities::escrow::{
    EscrowPaths, KeyConfig, KeyFingerprint, RecoveryCode, key_config, paperkey,
};
use crate::core::error_chain;

#[derive(Debug, Subcommand)]
pub enum EscrowCommand {
    /// Wrap the storage's PBS client key under a new recovery code, write the escrow and show
    /// the code once.
    Create {
        #[command(flatten)]
        at: Where,
        /// Also print the PBS paperkey of the unprotected key (text and QR code) for a safe.
        /// Off by default: that sheet alone opens every offsite backup.
        #[arg(long)]
        paperkey: bool,
    },
    /// A new recovery code for the same key; the escrow is re-wrapped and replaced. This is
    /// not key rotation: existing backups stay under the same key.
    Rotate {
        #[command(flatten)]
        at: Where,
    },
    /// The escrow's and the live key's fingerprints and dates (never a secret).
    Status {
        #[command(flatten)]
        at: Where,
    },
    /// Open an escrow with its recovery code (asked on the terminal) and install the key as
    /// the storage's key file: the host-loss restore path.
    Recover {
        /// The escrow file (the wrapped copy kept off the lost box).
        #[arg(long)]
        blob: PathBuf,
        #[command(flatten)]
        at: Where,
        /// The key the escrow must hold (default: the tier's `encryption_key_fingerprint`).
        #[arg(long)]
        fingerprint: Option<KeyFingerprint>,
        /// Keep a different key already installed as `<file>.old` and install the recovered one.
        #[arg(long)]
        replace: bool,
    },
}

/// Which storage, and where its files are.
#[derive(Debug, Args)]
pub struct Where {
    /// PBS storage id (default: the configuration's encrypted pbs tier).
    #[arg(long)]
    storage: Option<String>,
    /// Proxmox VE's private directory (the key is `storage/<storage>.enc` in it).
    #[arg(long, default_value = paths::PVE_PRIV_DIR)]
    pve_priv_dir: PathBuf,
    /// Directory of the escrow files (`<storage>.json`).
    #[arg(long, default_value = paths::ESCROW_DIR)]
    escrow_dir: PathBuf,
}

/// Exit code of an escrow command: 0 done, 1 refused or failed, 2 usage.
pub fn run(config: &Config, command: EscrowCommand) -> u8 {
    match execute(config, command) {
        Ok(()) => 0,
        Err(Failure::Usage(text)) => {
            eprintln!("felhom-agent escrow: {text}");
            2
        }
        Err(Failure::Failed(text)) => {
            eprintln!("felhom-agent escrow: {text}");
            1
        }
    }
}

enum Failure {
    Usage(String),
    Failed(String),
}

impl From<EscrowError> for Failure {
    fn from(e: EscrowError) -> Self {
        Failure::Failed(error_chain(&e))
    }
}

fn execute(config: &Config, command: EscrowCommand) -> Result<(), Failure> {
    let now = chrono::Utc::now().timestamp();
    match command {
        EscrowCommand::Create { at, paperkey } => {
            let (storage, paths) = resolve(config, &at)?;
            lifecycle::create(&paths, &hint(config, &storage), now, &mut |c| {
                show_created(&storage, &paths, c, "created")
            })?;
            if paperkey {
                print_paperkey(&paths.live_key)?;
            }
            Ok(())
        }
        EscrowCommand::Rotate { at } => {
            let (storage, paths) = resolve(config, &at)?;
            let created = lifecycle::rotate(&paths, &hint(config, &storage), now, &mut |c| {
                show_created(&storage, &paths, c, "rotated")
            })?;
            println!(
                "The previous recovery code no longer opens the escrow on this box, but it still opens \
                 any copy of the old escrow file kept elsewhere: destroy those. This was not key \
                 rotation: every backup stays encrypted with the same key {}; if a code leaked \
                 together with an escrow copy, the key itself must be replaced.",
                fp_text(created.blob.fingerprint)
            );
            Ok(())
        }
        EscrowCommand::Status { at } => {
            let (storage, paths) = resolve(config, &at)?;
            status(config, &storage, &paths)
        }
        EscrowCommand::Recover {
            blob,
            at,
            fingerprint,
            replace,
        } => {
            let (storage, paths) = resolve(config, &at)?;
            let expected = fingerprint.or_else(|| pinned(config, &storage));
            recover(&blob, &storage, &paths.live_key, expected, replace, now)
        }
    }
}

/// The storage (named, or the configuration's one encrypted pbs tier) and its paths.
fn resolve(config: &Config, at: &Where) -> Result<(String, EscrowPaths), Failure> {
    let storage = match &at.storage {
        Some(s) => {
            crate::infra::pve::validate_storage_id(s)
                .map_err(|e| Failure::Usage(format!("--storage: {e}")))?;
            s.clone()
        }
        None => {
            let encrypted: Vec<&str> = config
                .backup
                .tiers
                .iter()
                .filter(|t| t.encrypted)
                .map(|t| t.storage.as_str())
                .collect();
            match encrypted.as_slice() {
                [one] => (*one).to_owned(),
                [] => {
                    return Err(Failure::Usage(
                        "the configuration has no encrypted pbs tier; name the storage with --storage"
                            .into(),
                    ));
                }
                several => {
                    return Err(Failure::Usage(format!(
                        "the configuration has several encrypted tiers ({}); name one with --storage",
                        several.join(", ")
                    )));
                }
            }
        }
    };
    let paths = EscrowPaths::for_storage(&storage, &at.pve_priv_dir, &at.escrow_dir);
    Ok((storage, paths))
}

fn pinned(config: &Config, storage: &str) -> Option<KeyFingerprint> {
    config
        .backup
        .tiers
        .iter()
        .find(|t| t.storage == storage)
        .and_then(|t| t.key_fingerprint)
}

/// The PBS `hint` of the wrapped copy (PBS shows it when asking for the passphrase).
fn hint(config: &Config, storage: &str) -> String {
    let host = config.node.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "this host".into())
    });
    format!("felhom recovery code (12 words) of storage {storage} on {host}")
}

fn fp_text(fp: Option<KeyFingerprint>) -> String {
    fp.map_or_else(|| "(no fingerprint recorded)".into(), |f| f.to_string())
}

/// Prints a new escrow and its recovery code (once), with the honest warning. A write error
/// is returned, so the escrow is then not written (a code nobody saw must not guard it).
pub(crate) fn show_created(
    storage: &str,
    paths: &EscrowPaths,
    created: &Created,
    verb: &str,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Escrow {verb} for the PBS client key of storage '{storage}'\n  key fingerprint: {}\n  escrow file:     {} (0600)\n",
        fp_text(created.blob.fingerprint),
        paths.blob.display(),
    )?;
    writeln!(
        out,
        "Hub upload: not done. This agent has no hub connection yet (it comes with the hub \
         protocol); copy the escrow file off this box and keep it with the host's records.\n"
    )?;
    writeln!(
        out,
        "RECOVERY CODE (shown once; felhom does not keep it anywhere):\n"
    )?;
    let words: Vec<&str> = created.code.words().collect();
    for (row, four) in words.chunks(4).enumerate() {
        let cells: Vec<String> = four
            .iter()
            .enumerate()
            .map(|(i, w)| format!("{:>2}. {w:<9}", row * 4 + i + 1))
            .collect();
        writeln!(out, "  {}", cells.join("  ").trim_end())?;
    }
    writeln!(
        out,
        "\nWrite these 12 words on paper, in order, and keep the paper safe and away from this box.\n\
         If this box AND this code are both lost, the offsite backups can never be restored, by\n\
         anyone, including felhom: that is the price of no one else being able to read them."
    )?;
    out.flush()
}

fn print_paperkey(live_key: &Path) -> Result<(), Failure> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(live_key)
            .map_err(|e| Failure::Failed(format!("cannot read {}: {e}", live_key.display())))?,
    );
    let cfg = KeyConfig::parse(&text)
        .map_err(|e| Failure::Failed(format!("{}: {e}", live_key.display())))?;
    println!(
        "\nPAPERKEY (the unprotected key itself: anyone holding this sheet can read every offsite\n\
         backup; keep it in a safe, never together with the recovery code):\n"
    );
    println!("{}", paperkey::sheet(&cfg));
    Ok(())
}

fn status(config: &Config, storage: &str, paths: &EscrowPaths) -> Result<(), Failure> {
    let s = lifecycle::status(paths);
    println!("storage:          {storage}");
    println!("escrow file:      {}", paths.blob.display());
    let escrowed = match &s.blob {
        Ok(Some(blob)) => {
            println!("  fingerprint:    {}", fp_text(blob.fingerprint));
            println!(
                "  key created:    {}",
                key_config::rfc3339::format(blob.created)
            );
            println!(
                "  wrapped:        {}",
                key_config::rfc3339::format(blob.modified)
            );
            if let Some(h) = &blob.hint {
                println!("  hint:           {h}");
            }
            if blob.kdf.is_none() {
                println!("  WARNING: this file is not wrapped (kdf is null): it is the key itself");
            }
            blob.fingerprint
        }
        Ok(None) => {
            println!("  none (make one with `felhom-agent escrow create`)");
            None
        }
        Err(e) => {
            println!("  unreadable: {}", error_chain(e));
            None
        }
    };
    println!("live key:         {}", paths.live_key.display());
    let live = match &s.live {
        Ok(Some(fp)) => {
            println!("  fingerprint:    {fp}");
            Some(*fp)
        }
        Ok(None) => {
            println!("  none");
            None
        }
        Err(e) => {
            println!("  unreadable: {}", error_chain(e));
            None
        }
    };
    if let Some(pin) = pinned(config, storage) {
        println!("pinned in config: {pin}");
    }
    match (escrowed, live) {
        (Some(e), Some(l)) if e == l => {
            println!("the escrow holds the live key");
            Ok(())
        }
        (Some(_), Some(_)) => Err(Failure::Failed(
            "the escrow holds another key than the live one; backups made with the live key are not covered"
                .into(),
        )),
        (None, Some(_)) => Err(Failure::Failed(
            "the live key has no escrow: losing this box would lose the offsite backups".into(),
        )),
        (Some(_), None) => {
            println!(
                "no live key here (a new box?): `felhom-agent escrow recover --blob {}` installs it",
                paths.blob.display()
            );
            Ok(())
        }
        (None, None) => Err(Failure::Failed("neither an escrow nor a live key".into())),
    }
}

fn recover(
    blob: &Path,
    storage: &str,
    live_key: &Path,
    expected: Option<KeyFingerprint>,
    replace: bool,
    now: i64,
) -> Result<(), Failure> {
    let code = read_code()?;
    match lifecycle::recover(blob, &code, live_key, expected, replace, now)? {
        Installed::New(fp) => {
            println!(
                "Installed the key of storage '{storage}' at {} (0600)\n  fingerprint: {fp}",
                live_key.display()
            );
        }
        Installed::AlreadyThere(fp) => {
            println!(
                "{} already holds this key ({fp}); nothing changed",
                live_key.display()
            );
        }
        Installed::Replaced { installed, kept_as } => {
            println!(
                "Installed the key of storage '{storage}' at {} (0600)\n  fingerprint: {installed}\n  the key that was there is kept as {}",
                live_key.display(),
                kept_as.display()
            );
        }
    }
    Ok(())
}

/// Asks for the recovery code on the terminal with echo off; a code that fails its word list
/// or checksum is asked again (three tries) before anything is decrypted.
fn read_code() -> Result<RecoveryCode, Failure> {
    let stdin = std::io::stdin();
    if !std::io::IsTerminal::is_terminal(&stdin) {
        return Err(Failure::Usage(
            "the recovery code is read from a terminal, and standard input is not one; run this \
             command in a terminal (it never takes the code from arguments or the environment)"
                .into(),
        ));
    }
    let mut last = None;
    for _ in 0..3 {
        let line = read_line_without_echo(&stdin)
            .map_err(|e| Failure::Failed(format!("cannot read the terminal: {e}")))?;
        match RecoveryCode::parse(&line) {
            Ok(code) => return Ok(code),
            Err(e @ CodeError::Random(_)) => return Err(Failure::Failed(e.to_string())),
            Err(e) => {
                eprintln!("{e}");
                last = Some(e);
            }
        }
    }
    Err(Failure::Failed(format!(
        "no valid recovery code after three tries ({})",
        last.map_or_else(String::new, |e| e.to_string())
    )))
}

fn read_line_without_echo(stdin: &std::io::Stdin) -> std::io::Result<zeroize::Zeroizing<String>> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let saved = tcgetattr(stdin).map_err(std::io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    // TCSANOW, not TCSAFLUSH: a code typed (or pasted) before the prompt is kept.
    tcsetattr(stdin, SetArg::TCSANOW, &quiet).map_err(std::io::Error::from)?;
    eprint!("Recovery code (12 words; not shown as you type): ");
    let _ = std::io::stderr().flush();
    let mut line = zeroize::Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line).and_then(|n| {
        if n == 0 {
            Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the terminal closed (end of input)",
            ))
        } else {
            Ok(n)
        }
    });
    let restored = tcsetattr(stdin, SetArg::TCSANOW, &saved).map_err(std::io::Error::from);
    read?;
    restored?;
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_names_the_storage_never_a_secret() {
        let config = Config {
            backup: crate::capabilities::backup::BackupSettings::default(),
            node: Some("pve1".into()),
        };
        let h = hint(&config, "felhom-pbs");
        assert_eq!(
            h,
            "felhom recovery code (12 words) of storage felhom-pbs on pve1"
        );
    }

    #[test]
    fn recover_of_a_missing_escrow_says_so() {
        let dir = PathBuf::from("/nonexistent-felhom-escrow");
        let e = lifecycle::recover(
            &dir.join("x.json"),
            &RecoveryCode::generate().unwrap(),
            &dir.join("x.enc"),
            None,
            false,
            0,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("no escrow at "), "{e}");
    }
}
