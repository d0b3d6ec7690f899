//! `wijkradar query`: the analyst's view of the released figures.

use std::collections::HashMap;

use clap::{Args, Subcommand, ValueEnum};
use wijkradar_proto::v1::{self as pb, query_service_client::QueryServiceClient};

use crate::connection::Connection;
use crate::render;

#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Areas, signal types and months available for a gemeente.
    Catalogue {
        #[arg(long, default_value = "GM0034")]
        gemeente: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// A protected table: areas × signal types × months.
    Table(TableArgs),
    /// Early warning: the wijken and buurten where a problem is rising,
    /// ranked, with released values only.
    Alerts {
        #[arg(long, default_value = "GM0034")]
        gemeente: String,
        /// The month tested, YYYY-MM; default: the last month that has ended.
        #[arg(long)]
        month: Option<String>,
        /// Signal type(s); all types when left out.
        #[arg(long = "type")]
        types: Vec<String>,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Level {
    Buurt,
    Wijk,
    Gemeente,
}

#[derive(Debug, Args)]
pub struct TableArgs {
    #[arg(long, default_value = "GM0034")]
    pub gemeente: String,
    #[arg(long, value_enum, default_value = "wijk")]
    pub level: Level,
    /// Signal type(s); all types when left out.
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// First month, YYYY-MM; default: eleven months before --to (a year).
    #[arg(long)]
    pub from: Option<String>,
    /// Last month, YYYY-MM; default: the last month with data.
    #[arg(long)]
    pub to: Option<String>,
    /// Print CSV (for Excel) instead of a table.
    #[arg(long)]
    pub csv: bool,
    /// Show rates per 1,000 households instead of numbers of households.
    #[arg(long = "per-1000")]
    pub per_1000: bool,
    /// One column per month, quarter or year (distinct households in the
    /// period); quarters and years cover --from..--to whole. `last2`,
    /// `last3`, `last6`: per month, the distinct households over the 2, 3
    /// or 6 months ending with it (the windows alerts show).
    #[arg(long, value_enum, default_value = "month")]
    pub period: PeriodArg,
    /// Open data: differential privacy instead of suppression, for figures
    /// to publish (quarters or years, wijk or gemeente; the aggregator
    /// needs `[open_data]`). Each new table spends from a yearly budget.
    #[arg(long)]
    pub open_data: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// What table to fetch.
#[derive(Debug, Clone)]
pub struct TableAsk {
    pub level: pb::AreaLevel,
    pub types: Vec<String>,
    /// Default: eleven months before `to`.
    pub from: Option<String>,
    /// Default: the last month with data.
    pub to: Option<String>,
    pub period: pb::Period,
    pub open_data: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PeriodArg {
    Month,
    Quarter,
    Year,
    Last2,
    Last3,
    Last6,
}

impl From<PeriodArg> for pb::Period {
    fn from(p: PeriodArg) -> pb::Period {
        match p {
            PeriodArg::Month => pb::Period::Month,
            PeriodArg::Quarter => pb::Period::Quarter,
            PeriodArg::Year => pb::Period::Year,
            PeriodArg::Last2 => pb::Period::Last2Months,
            PeriodArg::Last3 => pb::Period::Last3Months,
            PeriodArg::Last6 => pb::Period::Last6Months,
        }
    }
}

pub fn level_to_proto(level: Level) -> pb::AreaLevel {
    match level {
        Level::Buurt => pb::AreaLevel::Buurt,
        Level::Wijk => pb::AreaLevel::Wijk,
        Level::Gemeente => pb::AreaLevel::Gemeente,
    }
}

pub(crate) fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "de aggregator weigert: {}",
        wijkradar_agent::client::describe_status(&status)
    )
}

async fn catalogue(
    client: &mut QueryServiceClient<tonic::transport::Channel>,
    gemeente: &str,
) -> anyhow::Result<pb::GetCatalogueResponse> {
    Ok(client
        .get_catalogue(pb::GetCatalogueRequest {
            gemeente_code: gemeente.to_owned(),
        })
        .await
        .map_err(status_error)?
        .into_inner())
}

/// The catalogue and a table, answered over one connection.
pub async fn fetch_table(
    client: &mut QueryServiceClient<tonic::transport::Channel>,
    gemeente: &str,
    ask: TableAsk,
) -> anyhow::Result<(pb::GetCatalogueResponse, pb::GetTableResponse)> {
    let TableAsk {
        level,
        types,
        from,
        to,
        period,
        open_data,
    } = ask;
    let catalogue = catalogue(client, gemeente).await?;
    if catalogue.last_month.is_empty() && (from.is_none() || to.is_none()) {
        anyhow::bail!("er zijn nog geen signalen opgeslagen; geef --from en --to op");
    }
    let to = to.unwrap_or_else(|| catalogue.last_month.clone());
    let from = match from {
        Some(f) => f,
        None => {
            let last: wijkradar_domain::Month =
                to.parse().map_err(|e| anyhow::anyhow!("--to: {e}"))?;
            last.plus(-11).to_string()
        }
    };
    let req = pb::GetTableRequest {
        gemeente_code: gemeente.to_owned(),
        level: level.into(),
        signal_types: types,
        from_month: from,
        to_month: to,
        period: period.into(),
        // Compact on the wire; the same cells once here.
        layout: pb::TableLayout::Columns.into(),
        open_data,
        ..Default::default()
    };
    let mut table = client
        .get_table(req)
        .await
        .map_err(status_error)?
        .into_inner();
    if let Some(columns) = table.columns.take() {
        table.cells = columns.cells();
    }
    Ok((catalogue, table))
}

/// The catalogue and the month's alerts, over one connection.
pub async fn fetch_alerts(
    client: &mut QueryServiceClient<tonic::transport::Channel>,
    gemeente: &str,
    month: Option<String>,
    types: Vec<String>,
) -> anyhow::Result<(pb::GetCatalogueResponse, pb::GetAlertsResponse)> {
    let catalogue = catalogue(client, gemeente).await?;
    let alerts = client
        .get_alerts(pb::GetAlertsRequest {
            gemeente_code: gemeente.to_owned(),
            month: month.unwrap_or_default(),
            signal_types: types,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok((catalogue, alerts))
}

pub fn names(catalogue: &pb::GetCatalogueResponse) -> (render::Names, HashMap<String, String>) {
    let names = catalogue
        .areas
        .iter()
        .map(|a| (a.code.clone(), a.name.clone()))
        .collect();
    let descriptions = catalogue
        .signal_types
        .iter()
        .map(|t| (t.name.clone(), t.description.clone()))
        .chain(
            wijkradar_domain::derived::Derived::ALL
                .iter()
                .map(|d| (d.name().to_owned(), d.description().to_owned())),
        )
        .collect();
    (names, descriptions)
}

pub async fn run(cmd: QueryCommand) -> anyhow::Result<()> {
    match cmd {
        QueryCommand::Catalogue {
            gemeente,
            connection,
        } => {
            let mut client = connection.query_client().await?;
            let c = catalogue(&mut client, &gemeente).await?;
            let count = |l: pb::AreaLevel| c.areas.iter().filter(|a| a.level == l as i32).count();
            println!(
                "Gebieden: {} wijken, {} buurten",
                count(pb::AreaLevel::Wijk),
                count(pb::AreaLevel::Buurt)
            );
            println!(
                "Maanden met gegevens: {} t/m {}",
                c.first_month, c.last_month
            );
            println!(
                "Drempel k = {} (cellen met minder huishoudens worden niet getoond)",
                c.k
            );
            println!("Signaaltypen:");
            for t in &c.signal_types {
                println!("  {:<28} {}", t.name, t.description);
            }
        }
        QueryCommand::Alerts {
            gemeente,
            month,
            types,
            connection,
        } => {
            let mut client = connection.query_client().await?;
            let (catalogue, alerts) = fetch_alerts(&mut client, &gemeente, month, types).await?;
            let (names, descriptions) = names(&catalogue);
            print!("{}", render::alerts(&alerts, &names, &descriptions));
        }
        QueryCommand::Table(args) => {
            let mut client = args.connection.query_client().await?;
            let ask = TableAsk {
                level: level_to_proto(args.level),
                types: args.types,
                from: args.from,
                to: args.to,
                period: args.period.into(),
                open_data: args.open_data,
            };
            let (catalogue, table) = fetch_table(&mut client, &args.gemeente, ask).await?;
            let (names, descriptions) = names(&catalogue);
            if args.csv {
                print!("{}", render::csv(&table, &names)?);
            } else {
                print!(
                    "{}",
                    render::table(
                        &table,
                        &names,
                        &descriptions,
                        6,
                        if args.per_1000 {
                            render::Measure::Per1000
                        } else {
                            render::Measure::Households
                        }
                    )
                );
                println!("Bron gebiedsindeling: CBS");
            }
        }
    }
    Ok(())
}
