//! The `wijkradar` binary as a user runs it: the demo of the README's first
//! command, and the operator's first steps.

use std::process::Command;

fn wijkradar() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wijkradar"));
    cmd.env_remove("RUST_BACKTRACE").env_remove("WIJKRADAR_LOG");
    cmd
}

#[test]
fn the_demo_runs_the_whole_chain_and_prints_a_protected_wijk_table() {
    let out = wijkradar()
        .args(["demo", "--dashboard", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for partner in [
        "Woningcorporatie De Vaart",
        "Energieleverancier Flevostroom",
        "Leerplicht Almere",
    ] {
        assert!(stdout.contains(partner), "{partner} missing:\n{stdout}");
    }
    for reason in [
        "adres staat niet in de postcodetabel",
        "BSN voldoet niet aan de elfproef",
        "datum ontbreekt of bestaat niet (verwacht jjjj-mm-dd)",
    ] {
        assert!(
            stdout.contains(reason),
            "the reject report is shown ({reason}):\n{stdout}"
        );
    }
    // Every partner's outbox is empty at the end.
    assert_eq!(stdout.matches("nog in de outbox: 0").count(), 3, "{stdout}");
    // The table: every wijk of Almere, numbers and suppressed cells.
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("WK0034")).collect();
    assert!(rows.len() > 60, "{} wijk rows:\n{stdout}", rows.len());
    assert!(
        rows.iter().any(|r| r.contains("<10")),
        "suppressed cells shown as <10"
    );
    let released: Vec<u64> = rows
        .iter()
        .flat_map(|r| r.split_whitespace())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        !released.is_empty() && released.iter().all(|&v| v >= 10),
        "released values are at least k: {released:?}"
    );
    // The intervention with its built-in fall: registered, and estimated
    // as a fall against the course without it.
    assert!(stdout.contains("Bij registratie: "), "{stdout}");
    assert!(stdout.contains("== betalingsachterstand =="), "{stdout}");
    assert!(stdout.contains("Geschat effect: -"), "{stdout}");
    assert!(
        stdout.contains("○ zonder interventie"),
        "the text chart:\n{stdout}"
    );
    assert!(
        stdout.contains("Wat nu?"),
        "tells the user what to try next"
    );
}

#[test]
fn an_operator_sets_up_and_the_server_refuses_a_k_below_five() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        wijkradar()
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["pki", "init", "--dir", "pki"]).status.success());
    for file in [
        "ca.pem",
        "server.pem",
        "woningcorporatie.pem",
        "gemeente.key",
    ] {
        assert!(dir.path().join("pki").join(file).exists(), "{file}");
    }
    assert!(
        run(&[
            "keys",
            "generate",
            "--kind",
            "server",
            "--out",
            "server.key"
        ])
        .status
        .success()
    );
    let config = "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[tls]\nclient_ca = \"pki/ca.pem\"\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\n[keys]\nserver_key = \"server.key\"\n[release]\nk = 4\n";
    std::fs::write(dir.path().join("server.toml"), config).unwrap();
    let out = run(&["serve", "--config", "server.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("k = 4 is below the minimum of 5") && stderr.contains("line 10"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("backtrace"),
        "a message, not a backtrace: {stderr}"
    );
}

/// A `wijkradar serve` of a fresh development setup with `clients`, running
/// until it is sent SIGTERM: its address, its log so far, and the rest.
#[cfg(unix)]
struct Served {
    _dir: tempfile::TempDir,
    setup: wijkradar_dev::DevSetup,
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
    addr: String,
    /// The log lines up to the one with the address.
    seen: String,
}

#[cfg(unix)]
fn serve(clients: &[(&str, &str, wijkradar_server::access::Role)]) -> Served {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let setup = wijkradar_dev::DevSetup::create(dir.path(), clients).unwrap();
    let config = setup.write_config("127.0.0.1:0").unwrap();
    let mut child = wijkradar()
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let mut addr = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if let Some(rest) = line.split("luistert op ").nth(1) {
            addr = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            break;
        }
    }
    assert!(!addr.is_empty(), "{seen}");
    Served {
        _dir: dir,
        setup,
        child,
        lines,
        addr,
        seen,
    }
}

#[cfg(unix)]
impl Served {
    /// `wijkradar` with `args`, connecting to this server as client `name`.
    fn run_as(&self, name: &str, args: &[&str]) -> std::process::Output {
        let files = self.setup.client(name);
        wijkradar()
            .args(args)
            .arg("--server")
            .arg(format!("https://{}", self.addr))
            .arg("--ca")
            .arg(self.setup.pki_dir.join("ca.pem"))
            .arg("--cert")
            .arg(&files.cert)
            .arg("--key")
            .arg(&files.key)
            .output()
            .unwrap()
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }
}

/// SIGTERM, what systemd, Docker and Kubernetes send, stops the server
/// gracefully, as Ctrl-C does: exit 0, with the store closed.
#[cfg(unix)]
#[test]
fn sigterm_stops_the_server_gracefully() {
    let Served {
        setup,
        mut child,
        lines,
        seen,
        _dir,
        ..
    } = serve(&[]);
    assert!(seen.contains("luistert op"), "{seen}");
    let started = std::time::Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status:?}: {rest:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // Not on a terminal, the log is JSON lines, without colour codes.
    let logged = seen
        .lines()
        .chain(rest.iter().map(String::as_str))
        .filter(|l| l.starts_with('{'))
        .count();
    assert!(logged > 0, "{seen}");
    for line in seen.lines().chain(rest.iter().map(String::as_str)) {
        assert!(!line.contains('\u{1b}'), "a colour code: {line}");
        if line.starts_with('{') {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(
                event["timestamp"].is_string() && event["level"].is_string(),
                "{line}"
            );
        }
    }
    let rest = rest.join("\n");
    assert!(
        rest.contains("SIGTERM ontvangen") && rest.contains("gestopt"),
        "{rest}"
    );
    // The store was closed cleanly: it opens again.
    let server_key = wijkradar_pseudonym::ServerKey::load(&setup.config.keys.server_key).unwrap();
    wijkradar_store::Store::open(&setup.config.data_dir, server_key.id().as_str()).unwrap();
}

/// SIGHUP reads the access file again: an organisation taken out of it is
/// refused from then on, without a restart; a file that does not load is
/// refused and the one in use stays. Both are in the audit log.
#[cfg(unix)]
#[test]
fn sighup_reloads_the_access_file() {
    use wijkradar_server::access::Role;
    let mut served = serve(&[("analist", "Gemeente", Role::Analyst)]);
    let catalogue =
        |served: &Served| served.run_as("analist", &["query", "catalogue", "--gemeente", "GM0034"]);
    let wait_for = |served: &mut Served, what: &str| {
        for line in served.lines.by_ref() {
            if line.unwrap().contains(what) {
                return;
            }
        }
        panic!("no line with {what}");
    };
    assert!(catalogue(&served).status.success(), "the analyst may ask");
    let access = served.setup.config.access.clone();

    // A file that does not load: refused, the old one stays.
    let good = std::fs::read_to_string(&access).unwrap();
    std::fs::write(&access, "[[organisation]]\nname = 5\n").unwrap();
    served.signal("-HUP");
    wait_for(&mut served, "NIET overgenomen");
    assert!(catalogue(&served).status.success(), "the file in use stays");

    // The analyst taken out: refused from now on.
    let without: String = good
        .split("[[organisation]]")
        .filter(|entry| !entry.contains("\"analist\""))
        .collect::<Vec<_>>()
        .join("[[organisation]]");
    std::fs::write(&access, without).unwrap();
    served.signal("-HUP");
    wait_for(&mut served, "opnieuw gelezen");
    let refused = catalogue(&served);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("not authorised"), "{message}");

    served.signal("-TERM");
    let rest: Vec<String> = served.lines.by_ref().map(|l| l.unwrap()).collect();
    assert!(served.child.wait().unwrap().success(), "{rest:?}");
    let log = std::fs::read_to_string(served.setup.config.data_dir.join("audit.log")).unwrap();
    assert_eq!(log.matches("ReloadAccess").count(), 2, "{log}");
}

/// `wijkradar healthcheck`, what a container or systemd health check runs:
/// exit 0 and SERVING while the server runs, a non-zero exit with a
/// message when nothing answers.
#[cfg(unix)]
#[test]
fn healthcheck_answers_serving_while_the_server_runs() {
    use wijkradar_server::access::Role;
    let mut served = serve(&[("beheer", "Beheer", Role::Operator)]);
    let check = |served: &Served, service: &str| {
        served.run_as("beheer", &["healthcheck", "--service", service])
    };
    let up = check(&served, "");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&up.stdout).trim(), "SERVING");
    assert!(
        check(&served, "wijkradar.v1.IngestService")
            .status
            .success()
    );
    assert!(!check(&served, "wijkradar.v1.Nothing").status.success());
    served.signal("-TERM");
    let _ = served.lines.by_ref().count();
    assert!(served.child.wait().unwrap().success());
    let down = check(&served, "");
    assert!(!down.status.success());
    assert!(!String::from_utf8_lossy(&down.stderr).is_empty());
}

/// The systemd unit of `deploy/systemd/` is valid and hardened:
/// `systemd-analyze verify` accepts it and `security` rates its exposure
/// at most 2 (of 10). Skipped where systemd-analyze is not installed.
#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/systemd/wijkradar.service"
    ))
    .unwrap();
    assert!(
        unit.contains(
            "ExecStart=/usr/local/bin/wijkradar serve --config /etc/wijkradar/server.toml"
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wijkradar.service");
    // verify wants the executable to exist: point it at this build.
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/wijkradar", env!("CARGO_BIN_EXE_wijkradar")),
    )
    .unwrap();
    let Ok(out) = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
    else {
        eprintln!("systemd-analyze not found: the unit check is skipped");
        return;
    };
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let level: f64 = text
        .split("Overall exposure level for wijkradar.service: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("an exposure level");
    assert!(level <= 2.0, "exposure {level}");
}

/// The container image definition (`deploy/container/Dockerfile`): three
/// stages with a dependency layer, a non-root runtime user, the data
/// directory a volume, the health check through `wijkradar healthcheck`,
/// and hadolint's rules. The image is not built here (no container engine
/// on the development machines); `.ci/run` installs hadolint and sets
/// WIJKRADAR_CONTAINER_LINT, so there a missing hadolint fails.
#[test]
fn the_container_image_definition_is_hardened_and_lints_clean() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/container/Dockerfile"
    );
    let file = std::fs::read_to_string(path).unwrap();
    let froms = file.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(froms, 4, "chef, planner, build, runtime");
    assert!(file.contains("cargo chef cook --release --locked"));
    let runtime = &file[file.rfind("\nFROM ").unwrap()..];
    assert!(runtime.contains(":nonroot") && runtime.contains("USER 65532:65532"));
    assert!(runtime.contains("VOLUME [\"/var/lib/wijkradar\"]"));
    assert!(runtime.contains("CMD [\"/usr/local/bin/wijkradar\", \"healthcheck\"]"));
    assert!(runtime.contains("CMD [\"serve\", \"--config\", \"/etc/wijkradar/server.toml\"]"));
    // The image's command takes this build's arguments.
    let help = wijkradar()
        .args(["healthcheck", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("WIJKRADAR_SERVER"));
    let required = std::env::var_os("WIJKRADAR_CONTAINER_LINT").is_some();
    match Command::new("hadolint").arg(path).output() {
        Ok(out) => assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if required => panic!("hadolint is required (WIJKRADAR_CONTAINER_LINT): {e}"),
        Err(_) => eprintln!("hadolint not found: the lint is skipped"),
    }
}

/// A data directory of an older on-disk format: `serve` refuses it and
/// says what to do; `admin upgrade` upgrades it, once.
#[test]
fn an_older_data_directory_is_refused_until_the_operator_upgrades_it() {
    let dir = tempfile::tempdir().unwrap();
    let setup = wijkradar_dev::DevSetup::create(dir.path(), &[]).unwrap();
    let config = setup.write_config("127.0.0.1:0").unwrap();
    let data = &setup.config.data_dir;
    let key = wijkradar_pseudonym::ServerKey::load(&setup.config.keys.server_key).unwrap();
    drop(wijkradar_store::Store::open(data, &key.id().to_string()).unwrap());
    wijkradar_store::mark_format(data, 2).unwrap();
    let out = wijkradar()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("wijkradar admin upgrade --data-dir"),
        "{stderr}"
    );
    let upgrade = |expect: &str| {
        let out = wijkradar()
            .args(["admin", "upgrade", "--data-dir"])
            .arg(data)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(expect), "{stdout}");
    };
    upgrade("van opslagformaat 2 naar 3");
    upgrade("al opslagformaat 3");
    wijkradar_store::Store::open(data, &key.id().to_string()).unwrap();
}

#[test]
fn an_evaluation_with_an_impossible_world_says_which_option_and_why() {
    for (args, expected) in [
        (
            &["eval", "--share", "1.5"][..],
            "--share: must be a share from 0 to 1, got 1.5",
        ),
        (
            &["eval", "alerts", "--share", "2"][..],
            "--share: must be a share from 0 to 1, got 2",
        ),
        (
            &["eval", "--rate", "0"][..],
            "--rate: must be a positive number",
        ),
        (
            &["eval", "alerts", "--clustering", "0"][..],
            "--clustering: must be a positive number",
        ),
    ] {
        let out = wijkradar().args(args).output().expect("runs");
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        // A message, not a panic.
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
