//! `wijkradar demo`: the whole chain on a real municipality in a temporary
//! directory: development PKI and keys, the aggregator on sled, three
//! simulated partners running the real agent path over mutual TLS, and an
//! analyst's protected wijk table.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use wijkradar_domain::hierarchy::Dwellings;
use wijkradar_domain::{AreaCode, GemeenteCode, Hierarchy, WijkCode};
use wijkradar_pki::Role;
use wijkradar_proto::v1 as pb;
use wijkradar_pseudonym::PartnerKey;
use wijkradar_server::dev::DevSetup;
use wijkradar_sim::PARTNERS;

use crate::agent::{current_month, load_postcode_table, print_summary, submit_export};
use crate::connection::Connection;
use crate::query::{fetch_table, names};
use crate::render;

const ANALYST: &str = "gemeente-almere";

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
    println!("Wijkradar demo: {name} ({gemeente}), 24 maanden, drie gesimuleerde partners");
    println!(
        "Gebiedsindeling 2023 en woningvoorraad 2024: Bron: CBS. Adressen en signalen zijn verzonnen.\n"
    );

    // 1. Certificates, keys and the aggregator.
    let mut clients: Vec<(&str, &str, Role)> = PARTNERS
        .iter()
        .map(|p| (p.name, p.organisation, Role::Partner))
        .collect();
    clients.push((ANALYST, "Gemeente Almere", Role::Analyst));
    let setup = DevSetup::create(&dir, &clients)?;
    let server = wijkradar_server::start(&setup.config).await?;
    println!(
        "1. Aggregator gestart op {} (mutual TLS, sled-opslag in {})",
        server.addr,
        setup.config.data_dir.display()
    );

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
    let signals = wijkradar_sim::signals(&municipality, from, to, &rising, 8, args.seed);
    let table_path = dir.join("pc6hnr_gwb.csv");
    std::fs::write(
        &table_path,
        wijkradar_sim::postcode_table_csv(&municipality),
    )?;
    println!(
        "2. {} huishoudens op verzonnen adressen in de echte wijken en buurten, {} signalen van {from} t/m {to}",
        municipality.households.len(),
        signals.len()
    );
    for note in &municipality.notes {
        println!("   ({note})");
    }

    // 3. Each partner runs the agent on its own export.
    println!("3. De partners pseudonimiseren hun export en versturen die:");
    let table = load_postcode_table(&table_path)?;
    let key = PartnerKey::load(&setup.partner_key)?;
    for (i, partner) in PARTNERS.iter().enumerate() {
        let mut export =
            wijkradar_sim::export_csv(&municipality, partner, &signals, args.seed + i as u64);
        if i == 0 {
            // A real export has a few rows that cannot be used.
            export.push_str("9999ZZ;1;;huurachterstand;2024-01\n1234;5;;huurachterstand;2024-01\n");
        }
        let path = dir.join(format!("export-{}.csv", partner.name));
        std::fs::write(&path, export)?;
        let channel = Connection::dev(&setup, server.addr, partner.name)
            .connect()
            .await?;
        println!("  {} ({})", partner.organisation, partner.types.join(", "));
        let summary = submit_export(channel, &path, &table, &key, 5000, None, partner.name).await?;
        print_summary(&summary);
        if let Some(report) = &summary.reject_report {
            // The demo's folder is removed at the end: show the report here.
            for line in std::fs::read_to_string(report)?.lines().take(6) {
                println!("    | {line}");
            }
        }
    }

    // 4. The analyst's view.
    let analyst = Connection::dev(&setup, server.addr, ANALYST);
    let mut client = analyst.query_client().await?;
    let (catalogue, answer) = fetch_table(
        &mut client,
        &gemeente.to_string(),
        pb::AreaLevel::Wijk,
        vec!["huurachterstand".into()],
        Some(from.to_string()),
        Some(to.to_string()),
    )
    .await?;
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
        println!(
            "  grpcurl -cacert $WIJKRADAR_CA -cert $WIJKRADAR_CERT -key $WIJKRADAR_KEY {} list",
            server.addr
        );
        println!(
            "De serverconfiguratie staat in {}. Stoppen met Ctrl-C.",
            config.display()
        );
        tokio::signal::ctrl_c().await?;
    } else {
        println!("Wat nu?");
        println!("  {exe} demo --keep       houdt de aggregator draaiend om zelf te bevragen");
        println!("  {exe} query table --help");
        println!("  README.md beschrijft een echte server, partner en analist.");
    }
    server.shutdown().await?;
    Ok(())
}
