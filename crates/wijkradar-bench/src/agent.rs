//! `wijkradar-bench agent`: the partner agent on a large export. Reading,
//! normalising, mapping and pseudonymising is timed against two baselines of
//! the same run: parsing the file alone, and HMAC-SHA256 alone over the same
//! normalised keys. Sending from the outbox is timed against submitting the
//! same signals straight from memory, which is the aggregator's ingest speed.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use indicatif::ProgressBar;
use prost::Message;
use wijkradar_agent::outbox::Import;
use wijkradar_agent::run::{prepare, send_pending};
use wijkradar_agent::{Outbox, PartnerConfig};
use wijkradar_dev::DevSetup;
use wijkradar_domain::hierarchy::Dwellings;
use wijkradar_domain::{GemeenteCode, Hierarchy};
use wijkradar_proto::v1 as pb;
use wijkradar_pseudonym::PartnerKey;
use wijkradar_server::access::Role;

use crate::current_month;
use wijkradar_agent::flow::load_postcode_table;

/// Writes the housing corporation's export (deploy/partners/woningcorporatie.toml
/// layout): `rows` rows over the synthetic households of Almere, a month per
/// pass over the households, one row in ten one month behind (no signal).
fn write_export(path: &Path, m: &wijkradar_sim::Municipality, rows: usize) -> anyhow::Result<()> {
    let mut out = String::with_capacity(rows * 48);
    out.push_str("Huurcontract;Postcode;Huisnummer;Toevoeging;Peildatum;Achterstand maanden;Achterstand bedrag\r\n");
    let n = m.households.len();
    let last = current_month().plus(-1);
    for row in 0..rows {
        let h = &m.households[row % n];
        let month = last.plus(-((row / n) as i32));
        let pc = std::str::from_utf8(&h.postcode)?;
        let behind = if row % 10 == 0 { 1 } else { 2 + row % 4 };
        let _ = write!(
            out,
            "HC-{row};{} {};{};{};15-{:02}-{};{behind};1.234,56\r\n",
            &pc[..4],
            &pc[4..],
            h.number,
            h.addition,
            month.month(),
            month.year()
        );
    }
    std::fs::write(path, out).with_context(|| format!("{}", path.display()))
}

/// Parsing the file alone: every field of every record, nothing done with it.
fn parse_only(path: &Path) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let mut csv = csv::ReaderBuilder::new().delimiter(b';').from_path(path)?;
    let mut record = csv::ByteRecord::new();
    let mut bytes = 0u64;
    while csv.read_byte_record(&mut record)? {
        bytes += record.as_slice().len() as u64;
    }
    Ok((started.elapsed().as_secs_f64(), bytes))
}

/// HMAC-SHA256 alone over the normalised household keys of the export.
fn hmac_only(keys: &[String], key: &PartnerKey) -> f64 {
    let started = Instant::now();
    let mut x = 0u8;
    for k in keys {
        x ^= key.pseudonymise(k.as_bytes()).as_bytes()[0];
    }
    std::hint::black_box(x);
    started.elapsed().as_secs_f64()
}

/// An aggregator on a fresh store, and a partner's connection to it.
async fn fresh_server() -> anyhow::Result<(
    tempfile::TempDir,
    wijkradar_server::RunningServer,
    tonic::transport::Channel,
)> {
    let dir = tempfile::tempdir()?;
    let setup =
        DevSetup::create(dir.path(), &[("partner", "Bench", Role::Partner)])?.without_rate_limits();
    let server = wijkradar_server::start(&setup.config).await?;
    let channel = setup.client_at(server.addr, "partner").connect().await?;
    Ok((dir, server, channel))
}

pub async fn run(rows: usize, runs: usize, send: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hierarchy = Hierarchy::netherlands_2023();
    let almere: GemeenteCode = "GM0034".parse().expect("valid");
    let m = wijkradar_sim::municipality(&hierarchy, &Dwellings::kwb_2024(), almere, 1.0, 11);
    let export = dir.path().join("export.csv");
    write_export(&export, &m, rows)?;
    let table_path = dir.path().join("pc6.csv");
    std::fs::write(&table_path, wijkradar_sim::postcode_table_csv(&m))?;
    let pc6 = load_postcode_table(&table_path)?;
    let key = PartnerKey::generate(&dir.path().join("partner.key"))?;
    let config = PartnerConfig::parse(
        wijkradar_sim::PARTNERS[0].config,
        &dir.path().join("partner.toml"),
    )?;
    let rules = config.rules(&pc6, &key, current_month());
    let keys: Vec<String> = (0..rows)
        .map(|row| {
            let h = &m.households[row % m.households.len()];
            wijkradar_agent::normalise::household_key(&h.postcode, h.number, h.addition)
        })
        .collect();
    let size = std::fs::metadata(&export)?.len();
    println!(
        "Agent benchmark: an export of {rows} rows ({:.1} MB, Windows-1252, `;`, Dutch dates) over {} synthetic households of Almere, postcode table of {} addresses; {runs} runs",
        size as f64 / 1e6,
        m.households.len(),
        pc6.len()
    );
    let mut best = (f64::MAX, f64::MAX, f64::MAX);
    let mut prepared = None;
    for run in 1..=runs {
        let (parse, _) = parse_only(&export)?;
        let hmac = hmac_only(&keys, &key);
        let started = Instant::now();
        let p = prepare(&export, &rules, 5000, |_| {})?;
        let agent = started.elapsed().as_secs_f64();
        println!(
            "  run {run}: agent (read, normalise, map, pseudonymise, batch) {agent:.2} s = {:.0} rows/s; parse alone {parse:.2} s, HMAC alone {hmac:.2} s; agent / (parse + HMAC) = {:.2}",
            rows as f64 / agent,
            agent / (parse + hmac)
        );
        best = (best.0.min(agent), best.1.min(parse), best.2.min(hmac));
        prepared = Some(p);
    }
    let p = prepared.context("at least one run")?;
    println!(
        "Best: agent {:.2} s for {rows} rows ({:.0} rows/s; target: under 5 s), parse alone {:.2} s, HMAC alone {:.2} s; {} signals, {} rows without signal, {} rejected",
        best.0,
        rows as f64 / best.0,
        best.1,
        best.2,
        p.summary.signals(),
        p.summary.without_signal,
        p.summary.rejected()
    );
    if !send {
        return Ok(());
    }

    // Sending: from the outbox, and the same signals straight from memory.
    let signals = p.summary.signals();
    let outbox = Outbox::open(&dir.path().join("outbox"))?;
    let record = Import {
        at: 0,
        file_name: "export.csv".into(),
        rows: rows as u64,
        signals,
        batches: p.batches.len() as u64,
        key_id: key.id().to_string(),
    };
    outbox.import(&p.digest, &record, &p.batches)?;
    let from_memory: Vec<pb::Signal> = p
        .batches
        .iter()
        .map(|b| pb::Batch::decode(b.as_slice()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flat_map(|b| b.signals)
        .collect();
    let bar = ProgressBar::new(2 * signals);
    let outbox_seconds = {
        let (_server_dir, server, channel) = fresh_server().await?;
        let started = Instant::now();
        let report = send_pending(&outbox, channel, |n| bar.set_position(n)).await?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(report.signals == signals, "every signal was acknowledged");
        server.shutdown().await?;
        seconds
    };
    let memory_seconds = {
        let (_server_dir, server, channel) = fresh_server().await?;
        let started = Instant::now();
        wijkradar_agent::submit(channel, from_memory, key.id().as_str(), 5000, |n| {
            bar.set_position(signals + n as u64)
        })
        .await?;
        let seconds = started.elapsed().as_secs_f64();
        server.shutdown().await?;
        seconds
    };
    bar.finish_and_clear();
    println!(
        "Send: {signals} signals from the outbox in {outbox_seconds:.1} s ({:.0} signals/s), from memory in {memory_seconds:.1} s ({:.0} signals/s); outbox / memory = {:.2}",
        signals as f64 / outbox_seconds,
        signals as f64 / memory_seconds,
        outbox_seconds / memory_seconds
    );
    Ok(())
}
