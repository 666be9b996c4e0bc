//! Layered configuration: every flag of every subcommand can come from the command line, from
//! its `IDRECON_*` environment variable, or from a TOML file named by `--config FILE`
//! (`IDRECON_CONFIG`), with the precedence **flag > environment > file > default**.
//!
//! The mechanism is generic over any clap [`Command`], so flags added later get file support
//! without code here:
//!
//! 1. parse the command line with clap as usual (flags and environment variables);
//! 2. if a config file is named, read it as a flat TOML table whose keys are clap arg ids
//!    (the snake_case field names: `data_dir`, `fsync`, `snapshot_every`, …). A key that names no
//!    option of any subcommand is an error naming the key. Keys of other subcommands are
//!    ignored, so one file can serve `serve`, `check` and `export`;
//! 3. for every option of the running (sub)command whose value came from its default, or that
//!    has no value, and whose key is in the file, inject the file's value as an explicit
//!    `--flag=value` and parse again, so clap validates it exactly as it validates a flag. An
//!    invalid value is reported naming the file and the key.
//!
//! [`EffectiveConfig::to_toml`] renders the effective configuration, with where each value
//! came from, for `idrecon serve --print-config`.
//!
//! The tests are in `tests/it/config_cli.rs`: the mechanism on a small command of its own
//! (module `layering`), and idrecon's own flags through the real binary.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The id of the global `--config FILE` option (`IDRECON_CONFIG`).
pub const CONFIG_ARG: &str = "config";

/// Options that are actions, not settings, and so cannot be set from a file.
const NOT_CONFIGURABLE: &[&str] = &[CONFIG_ARG, "print_config", "help", "version"];

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A command-line or environment error from clap (also `--help` and `--version`, which are
    /// "errors" that print and exit 0: call [`clap::Error::exit`]).
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// The config file could not be read.
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("the config file {} is not valid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (with line and column).
        message: String,
    },
    /// The config file has a key that names no option.
    #[error("config file {}: unknown key `{key}` (known keys: {known})", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The unknown key.
        key: String,
        /// Every key the file may hold, comma-separated.
        known: String,
    },
    /// A value in the config file is not valid for its option.
    #[error("config file {}: invalid value for key `{key}`: {message}", path.display())]
    InvalidValue {
        /// The file.
        path: PathBuf,
        /// The key whose value is invalid.
        key: String,
        /// What is wrong (clap's message, or a type mismatch).
        message: String,
    },
}

/// Where a setting's effective value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The command line.
    Flag,
    /// The named environment variable.
    Env(String),
    /// The config file.
    File,
    /// The option's default.
    Default,
    /// Not set anywhere (an option without a default).
    Unset,
}

/// One option of the running command and its effective value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The config-file key (the clap arg id, snake_case).
    pub key: String,
    /// The value(s) as text, as clap received them; empty when unset.
    pub values: Vec<String>,
    /// Where the value came from.
    pub source: Source,
    /// A boolean switch (`--insecure-admin`): rendered as `true`/`false`.
    pub switch: bool,
    /// A secret (an arg with `hide_env_values`): its value is never rendered.
    pub secret: bool,
}

/// The effective configuration of one run: the settings of the running (sub)command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EffectiveConfig {
    /// The command path, e.g. `idrecon serve`.
    pub command: String,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
    /// Every configurable option of the running command, top-level options first.
    pub settings: Vec<Setting>,
}

/// The result of [`load`]: clap's matches with the file applied, and the effective configuration.
#[derive(Debug)]
pub struct Loaded {
    /// Matches to build the typed command line from (`FromArgMatches`).
    pub matches: ArgMatches,
    /// The effective configuration, for `--print-config`.
    pub effective: EffectiveConfig,
}

/// Parses `args` (the first item is the program name) with `command`, layering the config file
/// under flags and environment variables as the module docs describe.
///
/// # Errors
/// [`ConfigError::Cli`] for a command-line or environment error (or `--help`); the other
/// variants for an unreadable file, invalid TOML, an unknown key, or an invalid value (naming the
/// key).
pub fn load<I, T>(command: &Command, args: I) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let first = command.clone().try_get_matches_from(&args)?;
    let path = first
        .try_get_one::<PathBuf>(CONFIG_ARG)
        .ok()
        .flatten()
        .cloned();
    let Some(path) = path else {
        let effective = effective(command, &first, None, &BTreeSet::new());
        return Ok(Loaded {
            matches: first,
            effective,
        });
    };
    let table = read_table(&path)?;
    check_keys(command, &table, &path)?;

    let mut top = Vec::new();
    let mut leaf = Vec::new();
    let mut injected = BTreeSet::new();
    for (depth, (cmd, matches)) in active_chain(command, &first).into_iter().enumerate() {
        for arg in configurable_args(cmd) {
            let key = arg.get_id().as_str();
            let Some(value) = table.get(key) else {
                continue;
            };
            if !matches!(
                matches.value_source(key),
                None | Some(ValueSource::DefaultValue)
            ) {
                continue;
            }
            let tokens = tokens(arg, value).map_err(|message| ConfigError::InvalidValue {
                path: path.clone(),
                key: key.to_owned(),
                message,
            })?;
            if depth == 0 { &mut top } else { &mut leaf }.extend(tokens);
            injected.insert(key.to_owned());
        }
    }
    if injected.is_empty() {
        let effective = effective(command, &first, Some(&path), &injected);
        return Ok(Loaded {
            matches: first,
            effective,
        });
    }
    // Top-level options go before the subcommand, the subcommand's own at its end (before a
    // `--`, after which everything is positional).
    let mut again = Vec::with_capacity(args.len() + top.len() + leaf.len());
    let (program, rest) = args
        .split_first()
        .map_or((None, &[][..]), |(p, r)| (Some(p), r));
    again.extend(program.cloned());
    again.extend(top);
    let end = rest.iter().position(|a| a == "--").unwrap_or(rest.len());
    again.extend(rest[..end].iter().cloned());
    again.extend(leaf);
    again.extend(rest[end..].iter().cloned());
    let matches = command
        .clone()
        .try_get_matches_from(&again)
        .map_err(|error| blame_file(command, error, &path, &injected))?;
    let effective = effective(command, &matches, Some(&path), &injected);
    Ok(Loaded { matches, effective })
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|error| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: error.to_string().trim().replace('\n', " "),
        })
}

/// The options of `command` that a config file may set: named (`--flag`) options that are not
/// actions like `--help` or `--config` itself.
fn configurable_args(command: &Command) -> impl Iterator<Item = &clap::Arg> {
    command.get_arguments().filter(|arg| {
        !arg.is_positional()
            && arg.get_long().is_some()
            && !NOT_CONFIGURABLE.contains(&arg.get_id().as_str())
            && !matches!(
                arg.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
    })
}

/// Every key a config file may hold: the configurable options of `command` and of all its
/// subcommands, recursively.
fn known_keys(command: &Command, keys: &mut BTreeSet<String>) {
    keys.extend(configurable_args(command).map(|a| a.get_id().as_str().to_owned()));
    for sub in command.get_subcommands() {
        known_keys(sub, keys);
    }
}

fn check_keys(command: &Command, table: &toml::Table, path: &Path) -> Result<(), ConfigError> {
    let mut known = BTreeSet::new();
    known_keys(command, &mut known);
    match table.keys().find(|key| !known.contains(key.as_str())) {
        None => Ok(()),
        Some(key) => Err(ConfigError::UnknownKey {
            path: path.to_path_buf(),
            key: key.clone(),
            known: known.into_iter().collect::<Vec<_>>().join(", "),
        }),
    }
}

/// The running command and subcommands, each with its matches: `[(idrecon, m), (serve, m)]`.
fn active_chain<'a>(
    command: &'a Command,
    matches: &'a ArgMatches,
) -> Vec<(&'a Command, &'a ArgMatches)> {
    let mut chain = vec![(command, matches)];
    let (mut command, mut matches) = (command, matches);
    while let Some((name, sub_matches)) = matches.subcommand() {
        let Some(sub) = command.find_subcommand(name) else {
            break;
        };
        chain.push((sub, sub_matches));
        (command, matches) = (sub, sub_matches);
    }
    chain
}

/// The command-line tokens that set `arg` to the TOML `value`, or what is wrong with the value.
fn tokens(arg: &clap::Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let long = arg.get_long().unwrap_or_default();
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => {
            let set = matches!(arg.get_action(), ArgAction::SetTrue);
            match value {
                toml::Value::Boolean(b) if *b == set => Ok(vec![format!("--{long}").into()]),
                toml::Value::Boolean(_) => Ok(Vec::new()),
                _ => Err(format!(
                    "expected true or false, found {}",
                    value.type_str()
                )),
            }
        }
        ArgAction::Count => match value {
            toml::Value::Integer(n) if (0..=255).contains(n) => {
                Ok((0..*n).map(|_| format!("--{long}").into()).collect())
            }
            _ => Err("expected a count from 0 to 255".to_owned()),
        },
        ArgAction::Set | ArgAction::Append => {
            let items: Vec<&toml::Value> = match value {
                toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
                    items.iter().collect()
                }
                toml::Value::Array(_) => {
                    return Err("expected one value, found an array".to_owned());
                }
                single => vec![single],
            };
            items
                .into_iter()
                .map(|item| scalar_text(item).map(|text| format!("--{long}={text}").into()))
                .collect()
        }
        _ => Err("this option cannot be set from a config file".to_owned()),
    }
}

fn scalar_text(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => Err(format!(
            "expected a single value, found {}",
            value.type_str()
        )),
    }
}

/// Turns clap's error about an injected value into one that names the config file and key.
fn blame_file(
    command: &Command,
    error: clap::Error,
    path: &Path,
    injected: &BTreeSet<String>,
) -> ConfigError {
    let offending = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(text)) => text.clone(),
        _ => String::new(),
    };
    let mut all = Vec::new();
    let mut stack = vec![command];
    while let Some(cmd) = stack.pop() {
        all.extend(configurable_args(cmd));
        stack.extend(cmd.get_subcommands());
    }
    let key = all.into_iter().find_map(|arg| {
        let long = arg.get_long()?;
        let id = arg.get_id().as_str();
        let named = offending
            .split(|c: char| c.is_whitespace() || c == '=')
            .any(|word| word == format!("--{long}"));
        (named && injected.contains(id)).then(|| id.to_owned())
    });
    match key {
        Some(key) => ConfigError::InvalidValue {
            path: path.to_path_buf(),
            key,
            message: clap_message(&error),
        },
        None => ConfigError::Cli(error),
    }
}

/// clap's rendered message without the `error:` prefix and the `--help` hint, on one line.
fn clap_message(error: &clap::Error) -> String {
    let text = error.to_string();
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
        .map(|line| line.strip_prefix("error: ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join(" ")
}

fn effective(
    command: &Command,
    matches: &ArgMatches,
    file: Option<&Path>,
    injected: &BTreeSet<String>,
) -> EffectiveConfig {
    let chain = active_chain(command, matches);
    let name = chain
        .iter()
        .map(|(cmd, _)| cmd.get_name())
        .collect::<Vec<_>>()
        .join(" ");
    let mut settings = Vec::new();
    for (cmd, matches) in chain {
        for arg in configurable_args(cmd) {
            let key = arg.get_id().as_str();
            let source = if injected.contains(key) {
                Source::File
            } else {
                match matches.value_source(key) {
                    Some(ValueSource::CommandLine) => Source::Flag,
                    Some(ValueSource::EnvVariable) => Source::Env(
                        arg.get_env()
                            .map(|e| e.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    ),
                    Some(ValueSource::DefaultValue) => Source::Default,
                    _ => Source::Unset,
                }
            };
            let values = matches
                .get_raw(key)
                .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            settings.push(Setting {
                key: key.to_owned(),
                values,
                source,
                switch: matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse),
                secret: arg.is_hide_env_values_set(),
            });
        }
    }
    EffectiveConfig {
        command: name,
        file: file.map(Path::to_path_buf),
        settings,
    }
}

impl EffectiveConfig {
    /// Renders the configuration as a TOML document that a config file could hold: one
    /// `key = value` line per setting with its source as a comment (`# default`, `# flag`,
    /// `# env IDRECON_FSYNC`, `# config file`). Unset options and secrets are comments, so a
    /// secret never reaches the output.
    pub fn to_toml(&self) -> String {
        let mut out = format!(
            "# effective configuration of `{}` (precedence: flag > environment > config file > default)\n",
            self.command
        );
        if let Some(file) = &self.file {
            let _ = writeln!(out, "# config file: {}", file.display());
        }
        for setting in &self.settings {
            let source = match &setting.source {
                Source::Flag => "flag".to_owned(),
                Source::Env(name) => format!("env {name}"),
                Source::File => "config file".to_owned(),
                Source::Default => "default".to_owned(),
                Source::Unset => "unset".to_owned(),
            };
            if setting.values.is_empty() {
                let _ = writeln!(out, "# {} is not set", setting.key);
                continue;
            }
            if setting.secret {
                let _ = writeln!(out, "# {} = (hidden)  # {source}", setting.key);
                continue;
            }
            let mut table = toml::Table::new();
            table.insert(setting.key.clone(), setting.toml_value());
            let line = toml::to_string(&table).unwrap_or_default();
            let _ = writeln!(out, "{}  # {source}", line.trim_end());
        }
        out
    }
}

impl Setting {
    /// The value as TOML: a boolean for switches, an integer for integer-looking text, an array
    /// for several values, otherwise a string. Any of these reads back to the same setting,
    /// because the file's values reach clap as text.
    fn toml_value(&self) -> toml::Value {
        let scalar = |text: &str| {
            if self.switch
                && let Ok(b) = text.parse::<bool>()
            {
                return toml::Value::Boolean(b);
            }
            match text.parse::<i64>() {
                Ok(n) if n.to_string() == text => toml::Value::Integer(n),
                _ => toml::Value::String(text.to_owned()),
            }
        };
        match self.values.as_slice() {
            [one] => scalar(one),
            many => toml::Value::Array(many.iter().map(|v| scalar(v)).collect()),
        }
    }
}
