//! The command line: subcommands, and every setting as a flag with its
//! `NEXUS_…` variable (declared in [`crate::config::settings`]).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{BadSetting, DomainSettings, ServerSettings, StoreSettings};
use crate::{audit, bench, db, retention};

#[derive(Parser)]
#[command(
    name = "nexus",
    version,
    about = "Nexus: phone-verification backend on an event-sourced ledger"
)]
pub struct Cli {
    /// The configuration file (TOML): upstreams, payment gateway, SMTP (see
    /// docs/nexus.example.toml); none: `serve` is the embedded default.
    #[arg(long, global = true, env = "NEXUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter (`tracing` env-filter syntax).
    #[arg(
        long,
        global = true,
        env = "NEXUS_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log: String,
    #[command(flatten)]
    pub store: StoreSettings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the HTTP server (embedded default: sled under ./data, simulated upstreams).
    Serve {
        #[command(flatten)]
        domain: DomainSettings,
        #[command(flatten)]
        server: ServerSettings,
    },
    /// Measure the log on this machine.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
    /// Walk the log's hash chain and report the first broken position.
    Verify,
    /// The finance audit: verify, balance, export (on a stopped server).
    Audit {
        #[command(subcommand)]
        what: audit::AuditCommand,
    },
    /// The retention sweeps: status, run, verify (on a stopped server).
    Retention {
        #[command(subcommand)]
        what: retention::RetentionCommand,
        #[command(flatten)]
        domain: DomainSettings,
    },
    /// The PostgreSQL backend: init (schema and grants), migrate (copy the
    /// embedded log into it), verify (its hash chain).
    Db {
        #[command(subcommand)]
        what: db::DbCommand,
    },
    /// Drop a projection (every projection without a name) and rebuild it from the log.
    Replay {
        /// accounts, wallets, orders, catalog or retention.
        name: Option<String>,
    },
}

/// The command line and the environment. A refused setting is an error
/// naming its variable (never the value); help, version and usage errors
/// are clap's (printed, and the process exits).
pub fn parse() -> anyhow::Result<Cli> {
    // Before any thread starts: the environment is changed here.
    for name in empty_settings(&Cli::command(), |name| std::env::var_os(name)) {
        std::env::remove_var(name);
    }
    parse_from(std::env::args_os()).map_err(|e| match e.downcast::<clap::Error>() {
        Ok(usage) => usage.exit(),
        Err(refused) => refused,
    })
}

/// [`parse`] without touching the process: a usage error comes back as a
/// `clap::Error` inside the `anyhow::Error`.
fn parse_from(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> anyhow::Result<Cli> {
    let matches = Cli::command()
        .try_get_matches_from(args)
        .map_err(refused_setting)?;
    if let Some(("serve", serve)) = matches.subcommand() {
        anyhow::ensure!(
            serve.value_source("admin_token") != Some(ValueSource::CommandLine),
            "the admin token is read from NEXUS_ADMIN_TOKEN only: a command line is visible to every user of the machine"
        );
    }
    if let Some(("db", db)) = matches.subcommand() {
        let (_, what) = db.subcommand().expect("a db subcommand is required");
        for (id, variable) in [
            ("database_url", "NEXUS_DATABASE_URL"),
            ("owner_url", "NEXUS_DATABASE_OWNER_URL"),
        ] {
            anyhow::ensure!(
                what.value_source(id) != Some(ValueSource::CommandLine),
                "database addresses are read from {variable} only: they hold a password, and a command line is visible to every user of the machine"
            );
        }
    }
    Ok(Cli::from_arg_matches(&matches)?)
}

/// A value refused by a setting's parser becomes its own message (clap's
/// would quote the value); any other error stays clap's.
fn refused_setting(e: clap::Error) -> anyhow::Error {
    match std::error::Error::source(&e).and_then(|s| s.downcast_ref::<BadSetting>()) {
        Some(bad) => anyhow::anyhow!("{bad}"),
        None => anyhow::Error::new(e),
    }
}

/// Every `NEXUS_…` variable the command and its subcommands declare.
fn declared_variables(command: &clap::Command) -> Vec<String> {
    let mut names: Vec<String> = command
        .get_arguments()
        .filter_map(clap::Arg::get_env)
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    for sub in command.get_subcommands() {
        names.extend(declared_variables(sub));
    }
    names.sort();
    names.dedup();
    names
}

/// The declared variables that are set but empty: they count as unset (clap
/// would take the empty text as the value).
fn empty_settings(
    command: &clap::Command,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Vec<String> {
    declared_variables(command)
        .into_iter()
        .filter(|name| lookup(name).is_some_and(|value| value.is_empty()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::ffi::OsStr;

    use super::*;

    /// The README's "Settings (environment)" table: variable → its default
    /// cell.
    fn readme_settings() -> BTreeMap<String, String> {
        let readme = include_str!("../../README.md");
        let (_, section) = readme
            .split_once("## Settings (environment)")
            .expect("the README has a settings section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let mut settings = BTreeMap::new();
        for row in section.lines().filter(|l| l.starts_with("| `NEXUS_")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            for name in cells[1].split(',') {
                settings.insert(
                    name.trim().trim_matches('`').to_owned(),
                    cells[2].to_owned(),
                );
            }
        }
        settings
    }

    /// Variable → its declared default, over the whole command line.
    fn declared_defaults(command: &clap::Command) -> BTreeMap<String, Option<String>> {
        let mut declared = BTreeMap::new();
        for arg in command.get_arguments() {
            if let Some(name) = arg.get_env() {
                let default = arg
                    .get_default_values()
                    .first()
                    .map(|d| d.to_string_lossy().into_owned());
                declared.insert(name.to_string_lossy().into_owned(), default);
            }
        }
        for sub in command.get_subcommands() {
            declared.extend(declared_defaults(sub));
        }
        declared
    }

    /// The `--help` of every command and subcommand, one after the other.
    fn every_help() -> String {
        fn paths(command: &clap::Command, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
            out.push(prefix.clone());
            for sub in command.get_subcommands() {
                let mut path = prefix.clone();
                path.push(sub.get_name().to_owned());
                paths(sub, path, out);
            }
        }
        let mut all = Vec::new();
        paths(&Cli::command(), vec!["nexus".to_owned()], &mut all);
        all.into_iter()
            .filter_map(|mut args| {
                args.push("--help".to_owned());
                let shown = parse_from(args).err()?;
                Some(shown.downcast::<clap::Error>().ok()?.to_string())
            })
            .collect()
    }

    #[test]
    fn the_readme_table_and_the_help_list_the_same_variables() {
        let readme = readme_settings();
        let help = every_help();
        for name in readme.keys() {
            assert!(
                help.contains(&format!("[env: {name}")),
                "{name} in no command's --help"
            );
        }
        let declared = declared_defaults(&Cli::command());
        assert_eq!(
            declared.keys().collect::<Vec<_>>(),
            readme.keys().collect::<Vec<_>>(),
            "the declared variables and the README's table differ"
        );
        assert_eq!(declared_variables(&Cli::command()).len(), declared.len());
    }

    /// Every `.rs` file of this crate, with its text.
    fn sources() -> Vec<(PathBuf, String)> {
        let mut files = Vec::new();
        let mut dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension() == Some(OsStr::new("rs")) {
                    let text = std::fs::read_to_string(&path).unwrap();
                    files.push((path, text));
                }
            }
        }
        files
    }

    #[test]
    fn every_variable_in_the_code_is_declared_and_in_the_readme() {
        let readme = readme_settings();
        let declared = declared_variables(&Cli::command());
        let mut found = 0;
        for (path, text) in sources() {
            // An argument's `env`, not the `api_key_env` of a TOML text.
            let attributes = text.match_indices("env = \"").filter(|(at, _)| {
                !text[..*at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            });
            for (at, pattern) in attributes {
                let name = text[at + pattern.len()..].split('"').next().unwrap();
                assert!(
                    readme.contains_key(name),
                    "{name} of {path:?} not in the README"
                );
                assert!(declared.iter().any(|d| d == name), "{name} of {path:?}");
                found += 1;
            }
            // Read through clap only, so that --help lists it.
            for read in ["env::var(\"NEXUS_", "env::var_os(\"NEXUS_"] {
                assert!(!text.contains(read), "{path:?} reads a variable directly");
            }
        }
        assert_eq!(found, declared.len());
    }

    #[test]
    fn the_readme_shows_the_declared_defaults() {
        let readme = readme_settings();
        for (name, default) in declared_defaults(&Cli::command()) {
            let cell = &readme[&name];
            // A cell that is one quoted value is the default; any other
            // cell describes what happens without one.
            let quoted = cell
                .strip_prefix('`')
                .and_then(|c| c.strip_suffix('`'))
                .filter(|c| !c.contains('`'));
            assert_eq!(default.as_deref(), quoted, "{name}: README default {cell}");
        }
    }

    #[test]
    fn a_bad_value_names_its_variable_never_the_value() {
        let command = Cli::command();
        let serve = command.find_subcommand("serve").unwrap();
        let mut refused = 0;
        for arg in command.get_arguments().chain(serve.get_arguments()) {
            let (Some(name), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let flag = format!("--{long}");
            let Err(e) = parse_from(["nexus", "serve", &flag, "not-a-value-7f3a"]) else {
                continue;
            };
            let message = format!("{e:#}");
            assert!(
                message.contains(name.to_str().unwrap()),
                "{flag}: {message}"
            );
            assert!(!message.contains("7f3a"), "{flag}: {message}");
            refused += 1;
        }
        // The numbers, switches, the address and the admin token.
        assert!(refused >= 15, "{refused}");
        let e = parse_from(["nexus", "serve", "--cache-mib", "lots"])
            .err()
            .unwrap();
        assert_eq!(format!("{e:#}"), "NEXUS_CACHE_MIB must be a whole number");
        let e = parse_from(["nexus", "serve", "--cookie-secure", "yes"])
            .err()
            .unwrap();
        assert_eq!(
            format!("{e:#}"),
            "NEXUS_COOKIE_SECURE must be true/on/1 or false/off/0"
        );
    }

    #[test]
    fn the_admin_token_never_comes_from_the_command_line() {
        let token = "a-long-enough-admin-token-9d2e";
        let e = parse_from(["nexus", "serve", "--admin-token", token])
            .err()
            .unwrap();
        let message = format!("{e:#}");
        assert!(message.contains("NEXUS_ADMIN_TOKEN only"), "{message}");
        assert!(!message.contains(token), "{message}");
    }

    #[test]
    fn secret_values_are_hidden_from_help() {
        let command = Cli::command();
        let serve = command.find_subcommand("serve").unwrap();
        for name in ["NEXUS_ADMIN_TOKEN", "NEXUS_SMTP_URL"] {
            let arg = serve
                .get_arguments()
                .find(|a| a.get_env() == Some(OsStr::new(name)))
                .unwrap();
            assert!(arg.is_hide_env_values_set(), "{name}");
        }
    }

    #[test]
    fn flags_go_before_or_after_the_command() {
        for args in [
            vec!["nexus", "--data-dir", "/srv/a", "verify"],
            vec!["nexus", "verify", "--data-dir", "/srv/a"],
        ] {
            let cli = parse_from(args).unwrap();
            assert_eq!(cli.store.data_dir, PathBuf::from("/srv/a"));
        }
        let cli = parse_from([
            "nexus",
            "--config",
            "nexus.toml",
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("nexus.toml")));
        let Command::Serve { server, .. } = cli.command else {
            panic!("serve")
        };
        assert_eq!(server.listen, "127.0.0.1:0".parse().unwrap());
        let cli = parse_from(["nexus", "retention", "run", "--bcrypt-cost", "13"]).unwrap();
        let Command::Retention { domain, .. } = cli.command else {
            panic!("retention")
        };
        assert_eq!(domain.bcrypt_cost, 13);
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let empty = empty_settings(&Cli::command(), |name| match name {
            "NEXUS_LISTEN" | "NEXUS_UNKNOWN" => Some(OsString::new()),
            "NEXUS_CACHE_MIB" => Some("64".into()),
            _ => None,
        });
        assert_eq!(empty, vec!["NEXUS_LISTEN".to_owned()]);
    }
}
