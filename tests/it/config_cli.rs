//! Configuration through the real binary: precedence flag > environment > config file > default
//! as `serve --print-config` shows it, unknown keys and invalid values named in the error, a
//! config file driving a served instance, and `serve` refusing a non-loopback address without
//! an admin token. Only loopback traffic: the non-loopback cases never get as far as binding.
//! The module `layering` tests the generic mechanism under it on a command of its own.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// The binary with every inherited `IDRECON_*` variable removed, so the test's environment
/// cannot leak into the precedence checks.
fn idrecon() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_idrecon"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("IDRECON_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "warn");
    command
}

fn output(command: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("binary runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The `key = value  # source` line of `key` in a `--print-config` output.
fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in\n{printed}"))
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "idrecon.toml",
        "fsync = \"always\"\nsnapshot_every = 5\nsegment_bytes = 1000\nresponse_key = \"both\"\n",
    );
    // Through --config and through IDRECON_CONFIG.
    for via_env in [false, true] {
        let mut command = idrecon();
        command
            .args(["serve", "--print-config", "--segment-bytes", "3000"])
            .env("IDRECON_SNAPSHOT_EVERY", "7")
            .env("IDRECON_SEGMENT_BYTES", "2000");
        if via_env {
            command.env("IDRECON_CONFIG", &config);
        } else {
            command.args(["--config", &config]);
        }
        let (code, printed, stderr) = output(&mut command);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(
            line(&printed, "segment_bytes"),
            "segment_bytes = 3000  # flag"
        );
        assert_eq!(
            line(&printed, "snapshot_every"),
            "snapshot_every = 7  # env IDRECON_SNAPSHOT_EVERY"
        );
        assert_eq!(line(&printed, "fsync"), "fsync = \"always\"  # config file");
        assert_eq!(
            line(&printed, "response_key"),
            "response_key = \"both\"  # config file"
        );
        assert_eq!(
            line(&printed, "request_timeout_ms"),
            "request_timeout_ms = 10000  # default"
        );
        assert!(
            printed.contains(&format!("# config file: {config}")),
            "{printed}"
        );
    }
}

#[test]
fn print_config_output_is_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let (code, first, stderr) = output(idrecon().args([
        "serve",
        "--print-config",
        "--fsync",
        "never",
        "--max-body-bytes",
        "4096",
        "--insecure-admin",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let table: toml::Table = first.parse().expect("valid TOML");
    assert_eq!(table["fsync"].as_str(), Some("never"));
    assert_eq!(table["max_body_bytes"].as_integer(), Some(4096));
    assert_eq!(table["insecure_admin"].as_bool(), Some(true));

    let config = write(dir.path(), "printed.toml", &first);
    let (code, second, stderr) =
        output(idrecon().args(["serve", "--print-config", "--config", &config]));
    assert_eq!(code, 0, "{stderr}");
    let again: toml::Table = second.parse().expect("valid TOML");
    assert_eq!(again, table);
    assert_eq!(line(&second, "fsync"), "fsync = \"never\"  # config file");
}

#[test]
fn keys_of_other_subcommands_are_accepted_and_unknown_keys_refused() {
    let dir = tempfile::tempdir().unwrap();
    // `url` belongs to `feed`: one file can serve every subcommand.
    let shared = write(
        dir.path(),
        "shared.toml",
        "url = \"http://127.0.0.1:1\"\nfsync = \"never\"\n",
    );
    let (code, printed, stderr) =
        output(idrecon().args(["serve", "--print-config", "--config", &shared]));
    assert_eq!(code, 0, "{stderr}");
    assert!(!printed.contains("url"), "{printed}");

    let typo = write(
        dir.path(),
        "typo.toml",
        "fsync = \"never\"\nsnapshot_evry = 10\n",
    );
    let (code, _, stderr) = output(idrecon().args(["serve", "--print-config", "--config", &typo]));
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown key `snapshot_evry`"), "{stderr}");
    assert!(stderr.contains("typo.toml"), "{stderr}");
    assert!(
        stderr.contains("snapshot_every"),
        "the known keys are listed: {stderr}"
    );
}

#[test]
fn invalid_values_fail_at_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (text, key) in [
        ("fsync = \"sometimes\"", "fsync"),
        ("snapshot_every = \"lots\"", "snapshot_every"),
        ("snapshot_every = -1", "snapshot_every"),
        ("listen = 3000", "listen"),
        ("response_key = [\"both\"]", "response_key"),
        ("insecure_admin = \"yes\"", "insecure_admin"),
        ("admin_token = \"\"", "admin_token"),
    ] {
        let config = write(dir.path(), "bad.toml", text);
        // Not --print-config: the real start-up path must refuse before touching the data dir.
        let (code, _, stderr) = output(idrecon().args([
            "serve",
            "--config",
            &config,
            "--data-dir",
            data.to_str().unwrap(),
        ]));
        assert_eq!(code, 2, "{text}: {stderr}");
        assert!(stderr.contains(&format!("key `{key}`")), "{text}: {stderr}");
        assert!(!data.exists(), "{text}");
    }
    let broken = write(dir.path(), "broken.toml", "fsync = \"always\n");
    let (code, _, stderr) = output(idrecon().args(["serve", "--config", &broken]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("broken.toml") && stderr.contains("TOML"),
        "{stderr}"
    );
    let (code, _, stderr) = output(idrecon().args(["serve", "--config", "/nonexistent/x.toml"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/x.toml"), "{stderr}");
}

/// Waits for `child` to exit within `limit`; kills it and fails the test otherwise.
fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            return status.code().unwrap_or(-1);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("idrecon did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn non_loopback_listen_needs_an_admin_token_or_insecure_admin() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let listen_file = write(dir.path(), "listen.toml", "listen = \"0.0.0.0:0\"\n");
    for args in [
        vec!["--listen", "0.0.0.0:0"],
        vec!["--listen", "[::]:0"],
        vec!["--config", listen_file.as_str()],
    ] {
        let mut child = idrecon()
            .arg("serve")
            .args(&args)
            .args(["--data-dir", data.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary runs");
        let code = wait_exit(&mut child, Duration::from_secs(20));
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stderr.contains("non-loopback"), "{stderr}");
        assert!(stderr.contains("--admin-token") && stderr.contains("--insecure-admin"));
        assert!(!data.exists(), "refused before opening the data directory");
    }

    // Accepted with an admin token or --insecure-admin (shown without serving).
    for extra in [
        vec!["--insecure-admin"],
        vec!["--admin-token", "n0t-in-the-output"],
    ] {
        let (code, printed, stderr) = output(
            idrecon()
                .args(["serve", "--print-config", "--listen", "0.0.0.0:0"])
                .args(&extra),
        );
        assert_eq!(code, 0, "{extra:?}: {stderr}");
        assert_eq!(line(&printed, "listen"), "listen = \"0.0.0.0:0\"  # flag");
        assert!(!printed.contains("n0t-in-the-output"), "{printed}");
    }
    let (code, printed, stderr) = output(
        idrecon()
            .args(["serve", "--print-config", "--listen", "0.0.0.0:0"])
            .env("IDRECON_ADMIN_TOKEN", "n0t-in-the-output"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(printed.contains("# admin_token = (hidden)  # env IDRECON_ADMIN_TOKEN"));
    assert!(!printed.contains("n0t-in-the-output"));
    let (code, _, stderr) =
        output(idrecon().args(["serve", "--print-config", "--admin-token", " "]));
    assert_eq!(code, 2);
    assert!(stderr.contains("admin-token"), "{stderr}");
}

/// A free loopback port (a race with other processes is possible but harmless here: the
/// server would then fail to bind and the test fail loudly).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_served_instance_uses_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-config");
    let port = free_port();
    let config = write(
        dir.path(),
        "idrecon.toml",
        &format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\nresponse_key = \"both\"\n\
             admin_token = \"c0nfig-t0ken\"\nfsync = \"always\"\n",
            data.to_str().unwrap()
        ),
    );
    let mut child = idrecon()
        .args(["serve", "--config", &config])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary runs");
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if client.get(format!("{url}/healthz")).send().await.is_ok() {
            break;
        }
        if started.elapsed() > Duration::from_secs(20) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not come up on {url}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer: serde_json::Value = client
        .post(format!("{url}/identify"))
        .json(&json!({"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["contact"]["primaryContactId"], 1);
    assert_eq!(answer["contact"]["primaryContatctId"], 1);
    let status = client
        .get(format!("{url}/contacts"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    let status = client
        .get(format!("{url}/contacts"))
        .bearer_auth("c0nfig-t0ken")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);

    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    assert_eq!(wait_exit(&mut child, Duration::from_secs(30)), 0);
    assert!(data.join("wal").is_dir(), "data_dir came from the file");
}

/// Runs `idrecon serve ARGS` to its exit (at most 30 s): the exit code and stderr.
fn serve_exit(args: &[&str]) -> (i32, String) {
    let mut child = idrecon()
        .arg("serve")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let code = wait_exit(&mut child, Duration::from_secs(30));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (code, stderr)
}

#[test]
fn a_port_in_use_fails_before_the_data_directory_is_opened() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, stderr) = serve_exit(&["--listen", &address, "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&address) && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(
        !data.exists(),
        "the address is bound before recovery opens (or creates) the data directory"
    );
}

#[test]
fn a_bare_port_is_refused_with_the_address_to_use() {
    let (code, stderr) = serve_exit(&["--listen", "3000", "--print-config"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("use 127.0.0.1:3000 (or 0.0.0.0:3000)"),
        "{stderr}"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "idrecon.toml", "listen = 3000\n");
    let (code, _, stderr) =
        output(idrecon().args(["serve", "--print-config", "--config", &config]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("key `listen`") && stderr.contains("use 127.0.0.1:3000 (or 0.0.0.0:3000)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn listen_accepts_a_host_name() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = idrecon()
        .args(["serve", "--listen", "localhost:0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("serving")
                && let Some((_, address)) = line.split_once("address=")
            {
                let _ = tx.send(address.trim().to_owned());
            }
        }
    });
    let address = rx.recv_timeout(Duration::from_secs(60));
    let Ok(address) = address else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("serve --listen localhost:0 did not report an address");
    };
    let ip: std::net::SocketAddr = address.parse().expect("a socket address");
    assert!(ip.ip().is_loopback(), "{address}");
    let health = reqwest::get(format!("http://{address}/healthz")).await;
    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    assert_eq!(wait_exit(&mut child, Duration::from_secs(30)), 0);
    assert_eq!(health.expect("healthz answered").status(), 200);
}

#[test]
fn an_unusable_data_directory_prints_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let data = file.join("data");
    let cause = std::fs::create_dir_all(&data).unwrap_err().to_string();
    let (code, stderr) = serve_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(data.to_str().unwrap()), "{stderr}");
    assert_eq!(
        stderr.matches(&cause).count(),
        1,
        "{cause:?} once in {stderr}"
    );
}

/// The layering mechanism itself (`idrecon::cli::config::load`), on a small command of its own
/// rather than idrecon's: file values fill defaults but never override flags, unknown keys and
/// invalid values are named, global options work on either side of the subcommand, and values
/// are injected before a `--`.
mod layering {
    use std::path::PathBuf;

    use clap::{Arg, ArgAction, Command};
    use idrecon::cli::config::{CONFIG_ARG, load};

    fn command() -> Command {
        Command::new("app")
            .arg(
                Arg::new(CONFIG_ARG)
                    .long("config")
                    .global(true)
                    .value_parser(clap::value_parser!(PathBuf)),
            )
            .arg(
                Arg::new("verbose")
                    .long("verbose")
                    .action(ArgAction::SetTrue),
            )
            .arg(
                Arg::new("log_format")
                    .long("log-format")
                    .global(true)
                    .value_parser(["text", "json"])
                    .default_value("text"),
            )
            .subcommand(
                Command::new("run")
                    .arg(
                        Arg::new("level")
                            .long("level")
                            .value_parser(["low", "high"])
                            .default_value("low"),
                    )
                    .arg(
                        Arg::new("count")
                            .long("count")
                            .value_parser(clap::value_parser!(u32))
                            .default_value("1"),
                    )
                    .arg(Arg::new("file")),
            )
            .subcommand(Command::new("other").arg(Arg::new("speed").long("speed")))
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn file_fills_defaults_but_not_flags() {
        let f = file("level = \"high\"\ncount = 7\nverbose = true\nspeed = \"x\"\n");
        let path = f.path().to_str().unwrap();
        let loaded = load(
            &command(),
            ["app", "run", "--config", path, "--count", "3", "pos"],
        )
        .unwrap();
        let (_, m) = loaded.matches.subcommand().unwrap();
        assert_eq!(m.get_one::<String>("level").unwrap(), "high");
        assert_eq!(*m.get_one::<u32>("count").unwrap(), 3);
        assert_eq!(m.get_one::<String>("file").unwrap(), "pos");
        assert!(loaded.matches.get_flag("verbose"));
        let text = loaded.effective.to_toml();
        assert!(text.contains("level = \"high\"  # config file"), "{text}");
        assert!(text.contains("count = 3  # flag"), "{text}");
        assert!(text.contains("verbose = true  # config file"), "{text}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let f = file("levle = \"high\"\n");
        let path = f.path().to_str().unwrap();
        let error = load(&command(), ["app", "run", "--config", path]).unwrap_err();
        assert!(error.to_string().contains("unknown key `levle`"), "{error}");

        let f = file("level = \"medium\"\n");
        let path = f.path().to_str().unwrap();
        let error = load(&command(), ["app", "run", "--config", path]).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("key `level`") && text.contains("medium"),
            "{text}"
        );

        let f = file("count = [1, 2]\n");
        let path = f.path().to_str().unwrap();
        let error = load(&command(), ["app", "run", "--config", path]).unwrap_err();
        assert!(error.to_string().contains("key `count`"), "{error}");

        let f = file("verbose = \"yes\"\n");
        let path = f.path().to_str().unwrap();
        let error = load(&command(), ["app", "run", "--config", path]).unwrap_err();
        assert!(error.to_string().contains("key `verbose`"), "{error}");
    }

    #[test]
    fn global_options_work_before_or_after_the_subcommand() {
        let f = file("log_format = \"json\"\n");
        let path = f.path().to_str().unwrap();
        // From the file when no flag sets it.
        let loaded = load(&command(), ["app", "run", "--config", path]).unwrap();
        let (_, m) = loaded.matches.subcommand().unwrap();
        assert_eq!(m.get_one::<String>("log_format").unwrap(), "json");
        // A flag wins wherever it stands.
        for args in [
            ["app", "--log-format", "text", "run", "--config", path],
            ["app", "run", "--log-format", "text", "--config", path],
        ] {
            let loaded = load(&command(), args).unwrap();
            let (_, m) = loaded.matches.subcommand().unwrap();
            assert_eq!(
                m.get_one::<String>("log_format").unwrap(),
                "text",
                "{args:?}"
            );
            assert_eq!(
                loaded.matches.get_one::<String>("log_format").unwrap(),
                "text"
            );
        }
        let f = file("log_format = \"xml\"\n");
        let path = f.path().to_str().unwrap();
        let error = load(&command(), ["app", "run", "--config", path]).unwrap_err();
        assert!(error.to_string().contains("key `log_format`"), "{error}");
    }

    #[test]
    fn values_are_injected_before_a_double_dash() {
        let f = file("count = 9\n");
        let path = f.path().to_str().unwrap();
        let loaded = load(&command(), ["app", "run", "--config", path, "--", "--pos"]).unwrap();
        let (_, m) = loaded.matches.subcommand().unwrap();
        assert_eq!(*m.get_one::<u32>("count").unwrap(), 9);
        assert_eq!(m.get_one::<String>("file").unwrap(), "--pos");
    }
}
