//! The partner agent as a data officer runs it: `wijkradar agent` with an
//! example configuration from deploy/partners/, against a real aggregator
//! process (`wijkradar serve`) over mutual TLS, both killed mid-run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn wijkradar() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wijkradar"));
    cmd.env_remove("RUST_BACKTRACE").env_remove("WIJKRADAR_LOG");
    cmd
}

/// A partner's and an aggregator's files in one directory.
struct Site {
    dir: tempfile::TempDir,
}

/// The officer's commands, as the tests run them.
const RUN_EXPORT: [&str; 6] = [
    "agent",
    "run",
    "--config",
    "partner.toml",
    "--export",
    "export.csv",
];
const STATUS: [&str; 4] = ["agent", "status", "--config", "partner.toml"];

/// Households in the export: all in buurt BU00340101 of Almere, postcode 1316XA.
const HOUSEHOLDS: u32 = 3000;

impl Site {
    fn new() -> Site {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
        };
        site.ok(&["pki", "init", "--dir", "pki"]);
        site.ok(&["keys", "generate", "--out", "server.key"]);
        site.ok(&["keys", "root", "--out", "root.key"]);
        site.ok(&[
            "keys", "export", "--root", "root.key", "--domain", "GM0034", "--epoch", "2026",
        ]);
        // The example access configuration grants `pki init`'s certificates;
        // the export's fixed month is kept whatever today is.
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/access.example.toml"),
            site.path("access.toml"),
        )
        .unwrap();
        std::fs::write(
            site.path("server.toml"),
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\naccess = \"access.toml\"\n[retention]\ndefault_months = 1200\n[tls]\nclient_ca = \"pki/ca.pem\"\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\n[keys]\nserver_key = \"server.key\"\n",
        )
        .unwrap();
        let mut table = String::from("PC6,Huisnummer,Buurt2023,Wijk2023,Gem2023\n");
        // The tenancy system's export: Windows-1252, `;`, Dutch dates; a
        // tenant one month behind is in it but is no signal.
        let mut export = b"Huurcontract;Postcode;Huisnummer;Toevoeging;Peildatum;Achterstand maanden;Achterstand bedrag (\x80)\r\n".to_vec();
        for n in 1..=HOUSEHOLDS {
            table.push_str(&format!("1316XA,{n},00340101,003401,0034\n"));
            export.extend_from_slice(
                format!("HC-{n};1316 xa;{n};;15-03-2025;3;1.200,00\r\n").as_bytes(),
            );
            if n % 10 == 0 {
                export.extend_from_slice(
                    format!("HC-{n};1316XA;{n};;15-03-2025;1;400,00\r\n").as_bytes(),
                );
            }
        }
        std::fs::write(site.path("pc6.csv"), table).unwrap();
        std::fs::write(site.path("export.csv"), export).unwrap();
        site.configure("https://127.0.0.1:1");
        site
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The housing corporation's example configuration from deploy/, with
    /// this site's files and aggregator.
    fn configure(&self, url: &str) {
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/partners/woningcorporatie.toml"),
        )
        .unwrap();
        let head = &example[..example.find("\n[agent]").unwrap()];
        let config = format!(
            "{head}\n[agent]\npseudonym_key = \"GM0034.2026.key\"\npostcode_table = \"pc6.csv\"\noutbox = \"outbox\"\nbatch_size = 2\n\n[aggregator]\nurl = \"{url}\"\nserver_name = \"localhost\"\nca = \"pki/ca.pem\"\ncert = \"pki/woningcorporatie.pem\"\nkey = \"pki/woningcorporatie.key\"\n"
        );
        std::fs::write(self.path("partner.toml"), config).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        wijkradar()
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail; its error output.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        wijkradar()
            .current_dir(self.dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Signals still in the outbox, from `wijkradar agent status`.
    fn pending(&self) -> u64 {
        let out = self.ok(&STATUS);
        let first = out.lines().next().unwrap();
        let n = first
            .split(": ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap();
        n.replace('.', "").parse().unwrap()
    }
}

/// `wijkradar serve` as a child process, with its log lines; killed when
/// dropped, so a failing test leaves no server behind.
struct Server {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Server {
    fn start(site: &Site) -> Server {
        let mut child = wijkradar()
            .current_dir(site.dir.path())
            .env("WIJKRADAR_LOG", "info")
            .args(["serve", "--config", "server.toml"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            addr: String::new(),
            lines,
            log: Vec::new(),
        };
        let line = server.wait_for(|l| l.contains("luistert op"));
        server.addr = line
            .split("luistert op ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap()
            .to_owned();
        server
    }

    fn wait_for(&mut self, want: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .expect("the server logs on");
            self.log.push(line.clone());
            if want(&line) {
                return line;
            }
        }
    }

    fn wait_for_acks(&mut self, n: usize) {
        for _ in 0..n {
            self.wait_for(|l| l.contains("batch acknowledged"));
        }
    }

    /// SIGKILL: no shutdown, as a crash or a pulled plug.
    fn kill(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.log.extend(self.lines.try_iter());
        std::mem::take(&mut self.log)
    }

    /// Ctrl-C: a clean stop that closes the store.
    fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(self.child.wait().unwrap().success());
        self.log.extend(self.lines.iter());
        std::mem::take(&mut self.log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_outbox_survives_a_killed_aggregator_and_a_killed_agent_and_counts_end_exact() {
    let site = Site::new();

    // 1. The aggregator dies (SIGKILL) while the agent is sending.
    let server = Server::start(&site);
    site.configure(&format!("https://{}", server.addr));
    let mut server = server;
    let agent = site.spawn(&RUN_EXPORT);
    server.wait_for_acks(50);
    let mut log = server.kill();
    let out = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the agent noticed");
    assert!(
        stderr.contains("stay in the outbox") && stderr.contains("wijkradar agent send"),
        "{stderr}"
    );
    let after_server_crash = site.pending();
    assert!(
        (1..u64::from(HOUSEHOLDS)).contains(&after_server_crash),
        "some sent, the rest kept: {after_server_crash}"
    );

    // 2. The aggregator is back; the agent is killed (SIGKILL) mid-send.
    let mut server = Server::start(&site);
    site.configure(&format!("https://{}", server.addr));
    let mut agent = site.spawn(&["agent", "send", "--config", "partner.toml"]);
    server.wait_for_acks(50);
    agent.kill().unwrap();
    agent.wait().unwrap();
    // Acknowledged batches may still be in the outbox: the agent forgets
    // them durably only at its next flush, which a SIGKILL can beat.
    let after_agent_kill = site.pending();
    assert!(
        after_agent_kill <= after_server_crash,
        "{after_agent_kill} <= {after_server_crash}"
    );

    // 3. The officer runs the same export again: it is not imported twice,
    // and what was left is sent.
    let out = site.ok(&RUN_EXPORT);
    assert!(out.contains("eerder ingelezen"), "{out}");
    assert!(out.contains("nog in de outbox: 0"), "{out}");
    // Batches the aggregator stored during the killed run were sent again
    // and answered "already stored", unless the outbox had forgotten them.
    let already: u64 = out
        .split(" al eerder ontvangen")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        already > 0 || after_agent_kill < after_server_crash,
        "the killed run's acknowledged batches were stored: {out}"
    );
    assert_eq!(site.pending(), 0);
    let status = site.ok(&STATUS);
    assert!(
        status.contains("export.csv (3.300 regels, 3.000 signalen, sleutel GM0034.2026."),
        "{status}"
    );
    log.extend(server.stop());

    // 4. The aggregator's counts are exactly as if nothing had happened.
    let key = wijkradar_pseudonym::ServerKey::load(&site.path("server.key")).unwrap();
    let store = wijkradar_store::Store::open(&site.path("data"), key.id().as_str()).unwrap();
    assert_eq!(store.signal_count().unwrap(), u64::from(HOUSEHOLDS));
    let counts = store
        .buurt_counts(
            &"huurachterstand".parse().unwrap(),
            "2025-03".parse().unwrap(),
            "GM0034".parse().unwrap(),
        )
        .unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].1.households, u64::from(HOUSEHOLDS));
    let keys = store.pseudonym_keys().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].0.as_str().starts_with("GM0034.2026."));

    // Nothing of an address reached the aggregator's log.
    let log = log.join("\n");
    assert!(log.contains("batch acknowledged"));
    for needle in ["1316XA", "1316 xa", "1316xa", "HC-"] {
        assert!(!log.contains(needle), "{needle} in the server log");
    }
}

#[test]
fn a_dry_run_shows_what_would_go_out_and_keeps_and_sends_nothing() {
    let site = Site::new();
    // No aggregator runs: a dry run sends nothing (it asks the aggregator
    // what it accepts, here in vain, and goes on).
    let out = site.ok(&[&RUN_EXPORT[..], &["--dry-run"]].concat());
    assert!(out.contains("niets verstuurd"), "{out}");
    assert!(
        out.contains("signalen: 3.000, zonder signaal: 300"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.contains("BU00340101")
            && l.contains("huurachterstand")
            && l.contains("3.000")),
        "{out}"
    );
    let sample: Vec<&str> = out.lines().filter(|l| l.contains("pseudonym: ")).collect();
    assert_eq!(sample.len(), 3, "{out}");
    for line in &sample {
        let hex = line
            .split("pseudonym: ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        assert_eq!(hex.len(), 64, "{line}");
        assert!(line.contains("buurt_code: BU00340101") && line.contains("month: 2025-03"));
    }
    assert!(
        !out.contains("1316"),
        "no postcode in what the officer is shown to go out"
    );
    assert_eq!(site.pending(), 0);
    let status = site.ok(&STATUS);
    assert!(!status.contains("Ingelezen exports"), "{status}");
}

#[test]
fn malformed_exports_give_a_clear_message_and_nothing_is_kept_or_sent() {
    let site = Site::new();
    let header = "Huurcontract;Postcode;Huisnummer;Toevoeging;Peildatum;Achterstand maanden\r\n";
    let row = "HC-1;1316XA;1;;15-03-2025;3\r\n";
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "wrong delimiter",
            format!("{header}{row}").replace(';', ",").into_bytes(),
            "the delimiter is set to `;` but the header looks separated by `,`",
        ),
        (
            "missing column",
            format!("{header}{row}")
                .replace("Peildatum", "Datum")
                .into_bytes(),
            "no column `Peildatum` (export.columns.date)",
        ),
        ("empty file", Vec::new(), "the export is empty"),
        ("UTF-16", b"\xFF\xFEH\0u\0".to_vec(), "the export is UTF-16"),
    ];
    for (name, bytes, message) in cases {
        std::fs::write(site.path("bad.csv"), bytes).unwrap();
        let stderr = site.fails(&[
            "agent",
            "run",
            "--config",
            "partner.toml",
            "--export",
            "bad.csv",
        ]);
        assert!(stderr.contains(message), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }

    // Bad encoding: the same export declared UTF-8 while it is Windows-1252,
    // with a good row before the bad one: nothing of it is kept.
    let config = std::fs::read_to_string(site.path("partner.toml")).unwrap();
    std::fs::write(
        site.path("utf8.toml"),
        config.replace("encoding = \"windows-1252\"", "encoding = \"utf-8\""),
    )
    .unwrap();
    let mut bytes = format!("{header}{row}").into_bytes();
    bytes.extend_from_slice(b"HC-2;1316XA;2;;15-03-2025;3;Pr\xEBsident\r\n");
    std::fs::write(site.path("latin1.csv"), bytes).unwrap();
    let stderr = site.fails(&[
        "agent",
        "run",
        "--config",
        "utf8.toml",
        "--export",
        "latin1.csv",
    ]);
    assert!(
        stderr.contains("line 3: not valid UTF-8") && stderr.contains("windows-1252"),
        "{stderr}"
    );

    // A 2 GB line (a sparse file): stopped after a megabyte, named by line.
    let file = std::fs::File::create(site.path("huge.csv")).unwrap();
    std::io::Write::write_all(&mut &file, format!("{header}{row}HC-2;").as_bytes()).unwrap();
    file.set_len(2 << 30).unwrap();
    let started = std::time::Instant::now();
    let stderr = site.fails(&[
        "agent",
        "run",
        "--config",
        "partner.toml",
        "--export",
        "huge.csv",
    ]);
    assert!(
        stderr.contains("line 3 is longer than 1048576 bytes"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it did not read 2 GB first"
    );

    // None of these left anything in the outbox, or an import record.
    assert_eq!(site.pending(), 0);
    let status = site.ok(&STATUS);
    assert!(!status.contains("Ingelezen exports"), "{status}");
}

/// The aggregator keeps 12 months. Rows of an older month are rejected at
/// the partner once the agent knows that (`GetIngestPolicy`), and listed in
/// the reject report with the reason. Batches that were already in the
/// outbox when the aggregator could not be asked are refused for good:
/// they are set aside, the rest is sent, `agent status` says why, and
/// `agent discard` removes them with a trail at the partner.
#[test]
fn rows_past_retention_are_rejected_at_the_partner_and_refused_batches_are_set_aside() {
    let site = Site::new();
    std::fs::write(
        site.path("server.toml"),
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\naccess = \"access.toml\"\n[retention]\ndefault_months = 12\n[tls]\nclient_ca = \"pki/ca.pem\"\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\n[keys]\nserver_key = \"server.key\"\n",
    )
    .unwrap();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let last = wijkradar_domain::Month::from_unix_seconds(secs as i64).plus(-1);
    let recent = format!("15-{:02}-{}", last.month(), last.year());
    let old = "15-03-2024";
    // Four old rows, then four recent ones: batches of two.
    let export = |first: u32| {
        let mut text = String::from(
            "Huurcontract;Postcode;Huisnummer;Toevoeging;Peildatum;Achterstand maanden\r\n",
        );
        for n in first..first + 8 {
            let date = if n < first + 4 { old } else { recent.as_str() };
            text.push_str(&format!("HC-{n};1316XA;{n};;{date};3\r\n"));
        }
        text
    };
    std::fs::write(site.path("export.csv"), export(1)).unwrap();
    // The aggregator cannot be asked: every row goes into the outbox.
    let out = site.run(&RUN_EXPORT);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("beleid van de aggregator"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(site.pending(), 8);

    let server = Server::start(&site);
    site.configure(&format!("https://{}", server.addr));
    let out = site.ok(&["agent", "send", "--config", "partner.toml"]);
    assert!(out.contains("apart gezet: 2 batches"), "{out}");
    assert!(out.contains("verstuurd: 4 signalen"), "{out}");
    assert_eq!(site.pending(), 0);
    let status = site.ok(&STATUS);
    assert!(status.contains("Apart gezet"), "{status}");
    assert!(status.contains("batch.signals[0].month"), "{status}");
    assert!(status.contains("retention"), "{status}");
    assert!(status.contains("2024-03"), "{status}");
    // Sending again sends nothing of them.
    let out = site.ok(&["agent", "send", "--config", "partner.toml"]);
    assert!(!out.contains("apart gezet"), "{out}");

    let out = site.ok(&["agent", "discard", "--config", "partner.toml", "--all"]);
    assert!(out.contains("weggegooid"), "{out}");
    let trail = std::fs::read_to_string(site.path("outbox.weggegooid.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{trail}");
    for l in &lines {
        assert_eq!(l["signals"], 2);
        assert_eq!(l["months"][0], "2024-03");
        assert!(l["reason"].as_str().unwrap().contains("retention"), "{l}");
        assert!(!l["by"].as_str().unwrap().is_empty());
    }
    assert!(!trail.contains("1316"), "no address in the trail");
    let status = site.ok(&STATUS);
    assert!(!status.contains("Apart gezet"), "{status}");
    assert!(
        site.fails(&[
            "agent",
            "discard",
            "--config",
            "partner.toml",
            "--batch",
            "0"
        ])
        .contains("no batch number 0")
    );

    // Now the agent asks first: old rows are rejected at the partner.
    std::fs::write(site.path("export2.csv"), export(101)).unwrap();
    let out = site.ok(&[
        "agent",
        "run",
        "--config",
        "partner.toml",
        "--export",
        "export2.csv",
    ]);
    assert!(out.contains("afgewezen: 4"), "{out}");
    assert!(out.contains("buiten de bewaartermijn"), "{out}");
    assert!(out.contains("verstuurd: 4 signalen"), "{out}");
    assert!(!out.contains("apart gezet"), "{out}");
    let report = std::fs::read_to_string(site.path("export2.afgewezen.csv")).unwrap();
    assert_eq!(report.matches("bewaartermijn").count(), 4, "{report}");
    server.stop();
}
