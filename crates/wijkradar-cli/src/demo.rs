//! `wijkradar demo`: the whole chain on a real municipality in a temporary
//! directory: development PKI and keys, the aggregator on redb, three
//! simulated partners running the real agent path over mutual TLS, and an
//! analyst's protected wijk table.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use wijkradar_agent::PartnerConfig;
use wijkradar_dev::DevSetup;
use wijkradar_domain::hierarchy::Dwellings;
use wijkradar_domain::{AreaCode, GemeenteCode, Hierarchy, WijkCode};
use wijkradar_proto::v1 as pb;
use wijkradar_pseudonym::PartnerKey;
use wijkradar_server::access::Role;
use wijkradar_sim::{Layout, PARTNERS};

use crate::agent::{current_month, load_postcode_table, run_export, summary_text};
use crate::connection::Connection;
use crate::query::{fetch_alerts, fetch_table, names};
use crate::render;
use wijkradar_agent::flow::Partner;

const ANALYST: &str = "gemeente-almere";
const PRIVACY_OFFICER: &str = "fg";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the aggregator running after the demo, to try queries yourself.
    #[arg(long)]
    pub keep: bool,
    /// Work in this directory instead of a temporary one (must not exist).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seed of the simulation.
    #[arg(long, default_value_t = 2024)]
    pub seed: u64,
    /// Where the dashboard listens (HTTPS); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub dashboard: String,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let _temp;
    let dir = match args.dir {
        Some(d) => {
            std::fs::create_dir(&d).with_context(|| format!("--dir {}", d.display()))?;
            d
        }
        None => {
            _temp = tempfile::Builder::new()
                .prefix("wijkradar-demo-")
                .tempdir()?;
            _temp.path().to_owned()
        }
    };
    let gemeente: GemeenteCode = "GM0034".parse().expect("valid code");
    let hierarchy = Hierarchy::netherlands_2023();
    let name = hierarchy
        .name(AreaCode::Gemeente(gemeente))
        .unwrap_or("?")
        .to_owned();
    println!("Wijkradar demo: {name} ({gemeente}), 36 maanden, drie gesimuleerde partners");
    println!(
        "Gebiedsindeling 2023 en woningvoorraad 2024: Bron: CBS. Adressen en signalen zijn verzonnen.\n"
    );

    // 1. Certificates, keys and the aggregator.
    let mut clients: Vec<(&str, &str, Role)> = PARTNERS
        .iter()
        .map(|p| (p.name, p.organisation, Role::Partner))
        .collect();
    clients.push((ANALYST, "Gemeente Almere", Role::Analyst));
    clients.push((PRIVACY_OFFICER, "Gemeente Almere", Role::PrivacyOfficer));
    let setup = DevSetup::create(&dir, &clients)?.with_dashboard(&args.dashboard, ANALYST);
    let server = wijkradar_server::start(&setup.config).await?;
    println!(
        "1. Aggregator gestart op {} (mutual TLS, redb-opslag in {})",
        server.addr,
        setup.config.data_dir.display()
    );
    if let Some(d) = &server.dashboard {
        println!(
            "   Dashboard op https://localhost:{} (HTTPS)",
            d.addr.port()
        );
    }

    // 2. The synthetic municipality and the partners' exports.
    let dwellings = Dwellings::kwb_2024();
    let municipality =
        wijkradar_sim::municipality(&hierarchy, &dwellings, gemeente, 1.0, args.seed);
    let to = current_month().plus(-1);
    let from = to.plus(-23);
    let mut wijk_sizes: Vec<(WijkCode, usize)> = hierarchy
        .wijken_of(gemeente)
        .map(|w| {
            (
                w,
                municipality
                    .households
                    .iter()
                    .filter(|h| h.buurt.wijk() == w)
                    .count(),
            )
        })
        .collect();
    wijk_sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let rising: Vec<WijkCode> = wijk_sizes.iter().take(2).map(|w| w.0).collect();
    // An intervention in the next largest wijk, a year ago: 30% fewer
    // payment arrears from its start.
    let effect = wijkradar_sim::Effect {
        wijk: wijk_sizes[2].0,
        from: to.plus(-11),
        factor: 0.7,
    };
    // Three years of signals: early warning needs two years of history.
    let signals = wijkradar_sim::signals(
        &municipality,
        to.plus(-35),
        to,
        &rising,
        8,
        Some(effect),
        args.seed,
    );
    let table_path = dir.join("pc6hnr_gwb.csv");
    std::fs::write(
        &table_path,
        wijkradar_sim::postcode_table_csv(&municipality),
    )?;
    println!(
        "2. {} huishoudens op verzonnen adressen in de echte wijken en buurten, {} signalen van {} t/m {to}",
        municipality.households.len(),
        signals.len(),
        to.plus(-35)
    );
    for note in &municipality.notes {
        println!("   ({note})");
    }

    // 3. Each partner runs the agent on its own export, configured as its
    // kind's example in deploy/partners/.
    println!("3. De partners pseudonimiseren hun export en versturen die (via hun outbox):");
    let table = load_postcode_table(&table_path)?;
    let key = PartnerKey::load(&setup.partner_key)?;
    for (i, sim) in PARTNERS.iter().enumerate() {
        let mut export =
            wijkradar_sim::export_csv(&municipality, sim, &signals, args.seed + i as u64);
        // A real export has a few rows that cannot be used: an address
        // outside the postcode table, a broken postcode, an impossible
        // date, a BSN that fails the eleven-test.
        let h = &municipality.households[0];
        let (pc, n) = (std::str::from_utf8(&h.postcode)?, h.number);
        let bad = match sim.layout {
            Layout::Woningcorporatie => "HC-99999;9999ZZ;1;;01-01-2024;3;1.200,00\r\nHC-99998;1234;5;;01-01-2024;4;900,00\r\n".to_owned(),
            Layout::Energieleverancier => format!("889999,{pc},{n},,2025-02-30,ACHTERSTAND\r\n"),
            Layout::Leerplicht => format!("123456789;{pc};{n};;01-02-2025;Ongeoorloofd;X\n"),
        };
        export.extend_from_slice(bad.as_bytes());
        let path = dir.join(format!("export-{}.csv", sim.name));
        std::fs::write(&path, export)?;
        let config = demo_config(sim, &dir, &setup, server.addr, &table_path)?;
        println!("  {} ({})", sim.organisation, sim.types.join(", "));
        let partner = Partner {
            config,
            key: PartnerKey::load(&setup.partner_key)?,
            previous_key: None,
            pc6: load_postcode_table(&table_path)?,
        };
        let outcome = run_export(&partner, &path).await?;
        print!("{}", summary_text(&outcome));
        if let Some(report) = &outcome.reject_report {
            // The demo's folder is removed at the end: show the report here.
            for line in std::fs::read_to_string(report)?.lines().take(6) {
                println!("    | {line}");
            }
        }
    }
    drop((table, key));

    // 4. The analyst's view.
    let analyst = Connection::dev(&setup, server.addr, ANALYST);
    let mut client = analyst.query_client().await?;
    let ask = crate::query::TableAsk {
        level: pb::AreaLevel::Wijk,
        types: vec!["huurachterstand".into()],
        from: Some(from.to_string()),
        to: Some(to.to_string()),
        period: pb::Period::Month,
        open_data: false,
    };
    let (catalogue, answer) = fetch_table(&mut client, &gemeente.to_string(), ask).await?;
    let (area_names, descriptions) = names(&catalogue);
    println!("\n4. Wat de gemeente ziet (als analist, over mutual TLS):\n");
    print!(
        "{}",
        render::table(
            &answer,
            &area_names,
            &descriptions,
            6,
            render::Measure::Households
        )
    );
    let rising_names: Vec<String> = rising
        .iter()
        .map(|w| {
            format!(
                "{} ({w})",
                hierarchy.name(AreaCode::Wijk(*w)).unwrap_or("?")
            )
        })
        .collect();
    println!(
        "In {} is een stijging ingebouwd over de laatste 8 maanden: ziet u die terug?",
        rising_names.join(" en ")
    );

    // 5. Early warning for the last month.
    let (_, alerts) = fetch_alerts(&mut client, &gemeente.to_string(), None, Vec::new()).await?;
    println!("\n5. Vroegsignalering over de laatste maand (alleen vrijgegeven cellen):\n");
    print!("{}", render::alerts(&alerts, &area_names, &descriptions));

    // 6. Did an intervention work? Registered as an analyst would, then
    // judged on the released figures.
    let treated_name = format!(
        "{} ({})",
        hierarchy.name(AreaCode::Wijk(effect.wijk)).unwrap_or("?"),
        effect.wijk
    );
    println!(
        "\n6. Werkt een aanpak? In {treated_name} is vanaf {} een aanpak van schulden ingebouwd: 30% minder betalingsachterstanden.\n",
        effect.from
    );
    let plan = crate::interventions::PlanArgs {
        gemeente: gemeente.to_string(),
        name: "Schuldhulp aan huis".into(),
        wijken: vec![effect.wijk.to_string()],
        start: effect.from.to_string(),
        measures: vec!["betalingsachterstand".into()],
        reach: 30.0,
        goal: -20.0,
        horizon: 24,
    };
    let mut interventions = crate::interventions::client(&analyst).await?;
    let registered = interventions
        .register_intervention(pb::RegisterInterventionRequest {
            plan: Some(plan.to_proto()),
        })
        .await
        .map_err(crate::query::status_error)?
        .into_inner();
    for d in &registered.detectable {
        println!("Bij registratie: {}", d.text);
    }
    let id = registered.intervention.as_ref().map_or(1, |i| i.id);
    let report = interventions
        .get_intervention_report(pb::GetInterventionReportRequest {
            gemeente_code: gemeente.to_string(),
            id,
            placebo_draws: 0,
        })
        .await
        .map_err(crate::query::status_error)?
        .into_inner();
    print!("{}", crate::interventions::report(&report));

    // 7. Governance: another municipality's figures are refused; the
    // privacy officer verifies the audit log.
    println!("\n7. Wie mag wat, en het auditlog:\n");
    let refused = client
        .get_table(pb::GetTableRequest {
            gemeente_code: "GM0995".into(),
            level: pb::AreaLevel::Wijk.into(),
            ..Default::default()
        })
        .await
        .expect_err("Almere's analyst may not see Lelystad");
    println!(
        "De analist van Almere vraagt Lelystad op: geweigerd ({:?}: {}).",
        refused.code(),
        refused.message()
    );
    let officer = Connection::dev(&setup, server.addr, PRIVACY_OFFICER);
    let log = crate::governance::fetch_audit(&officer).await?;
    let report = wijkradar_audit::verify(&log, None);
    let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
    for e in &report.parsed {
        let kind = match e.event {
            wijkradar_audit::Event::Start { .. } => "start",
            wijkradar_audit::Event::Batch { .. } => "leveringen",
            wijkradar_audit::Event::Call { .. } => "opvragingen",
            wijkradar_audit::Event::Release { .. } => "publicaties",
            wijkradar_audit::Event::Purge { .. } => "bewaartermijn",
        };
        *kinds.entry(kind).or_default() += 1;
    }
    println!(
        "De functionaris gegevensbescherming haalt het auditlog op: {} regels ({}), keten {}.",
        report.entries,
        kinds
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        if report.is_intact() {
            "intact"
        } else {
            "NIET intact"
        }
    );
    let text = wijkradar_audit::export_text(&report.parsed);
    let lines: Vec<&str> = text.lines().collect();
    for line in lines
        .iter()
        .take(1)
        .chain(lines.iter().skip(lines.len().saturating_sub(3)))
    {
        println!("    | {line}");
    }
    println!("Klaar in {:.1} s.\n", started.elapsed().as_secs_f64());

    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "wijkradar".into());
    if args.keep {
        let config = setup.write_config(&server.addr.to_string())?;
        println!("Wat nu? De aggregator blijft draaien. In een tweede terminal:");
        println!("  export WIJKRADAR_SERVER=https://{}", server.addr);
        println!(
            "  export WIJKRADAR_CA={} WIJKRADAR_CERT={} WIJKRADAR_KEY={}",
            analyst.ca.display(),
            analyst.cert.display(),
            analyst.key.display()
        );
        println!("  {exe} query catalogue");
        println!("  {exe} query table --level buurt --type schoolverzuim");
        println!("  {exe} query table --type huurachterstand --per-1000");
        println!("  {exe} query table --level gemeente --csv > almere.csv");
        println!("  {exe} query alerts");
        println!("  {exe} intervention list");
        println!("  {exe} intervention report --id {id}");
        println!(
            "  grpcurl -cacert $WIJKRADAR_CA -cert $WIJKRADAR_CERT -key $WIJKRADAR_KEY {} list",
            server.addr
        );
        if let Some(d) = &server.dashboard
            && let Some(url) = &d.login_url
        {
            println!("\nHet dashboard, in uw browser (deze inloglink werkt één keer):");
            println!("  {url}");
            println!(
                "  De browser kent het ontwikkelcertificaat niet: vertrouw {} of klik de waarschuwing weg.",
                setup.pki_dir.join("ca.pem").display()
            );
        }
        println!(
            "De serverconfiguratie staat in {}. Stoppen met Ctrl-C.",
            config.display()
        );
        tokio::signal::ctrl_c().await?;
    } else {
        println!("Wat nu?");
        println!(
            "  {exe} demo --keep       houdt de aggregator en het dashboard draaiend om zelf te bevragen"
        );
        println!("  {exe} query table --help");
        println!("  README.md beschrijft een echte server, partner en analist.");
    }
    server.shutdown().await?;
    Ok(())
}

/// A simulated partner's configuration: its kind's example from
/// deploy/partners/, with the demo's own files and aggregator.
fn demo_config(
    sim: &wijkradar_sim::Partner,
    dir: &std::path::Path,
    setup: &DevSetup,
    addr: std::net::SocketAddr,
    table: &std::path::Path,
) -> anyhow::Result<PartnerConfig> {
    let path = dir.join(format!("{}.toml", sim.name));
    let mut config = PartnerConfig::parse(sim.config, &path)
        .with_context(|| format!("the example configuration of {}", sim.name))?;
    config.partner.name = sim.organisation.to_owned();
    config.agent.pseudonym_key = setup.partner_key.clone();
    config.agent.postcode_table = table.to_owned();
    config.agent.outbox = dir.join(format!("outbox-{}", sim.name));
    config.agent.reject_dir = None;
    let files = setup.client(sim.name);
    config.aggregator.url = format!("https://{addr}");
    config.aggregator.server_name = "localhost".into();
    config.aggregator.ca = setup.pki_dir.join("ca.pem");
    config.aggregator.cert = files.cert;
    config.aggregator.key = files.key;
    Ok(config)
}
