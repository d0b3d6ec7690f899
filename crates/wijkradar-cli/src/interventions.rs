//! `wijkradar intervention`: register an intervention, change it, list
//! them, and read whether it works.

use clap::{Args, Subcommand};
use wijkradar_proto::v1::{self as pb, intervention_service_client::InterventionServiceClient};

use crate::connection::Connection;
use crate::query::status_error;

#[derive(Debug, Subcommand)]
pub enum InterventionCommand {
    /// Register a new intervention; prints the smallest effect it can detect.
    Register {
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        connection: Connection,
    },
    /// Store a new version of an intervention.
    Update {
        #[arg(long)]
        id: u32,
        /// The version you changed (see `list`); refused if it is no
        /// longer the latest.
        #[arg(long)]
        expected_version: u32,
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        connection: Connection,
    },
    /// The interventions of a gemeente, latest versions.
    List {
        #[arg(long, default_value = "GM0034")]
        gemeente: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Did it work? Estimate, interval, checks and a chart, in Dutch.
    Report {
        #[arg(long, default_value = "GM0034")]
        gemeente: String,
        #[arg(long)]
        id: u32,
        /// Placebo draws (default 1,000).
        #[arg(long, default_value_t = 0)]
        placebos: u32,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[arg(long, default_value = "GM0034")]
    pub gemeente: String,
    #[arg(long)]
    pub name: String,
    /// Treated wijk code; repeat for up to five.
    #[arg(long = "wijk", required = true)]
    pub wijken: Vec<String>,
    /// First month, YYYY-MM.
    #[arg(long)]
    pub start: String,
    /// Signal type or derived indicator; repeat for more.
    #[arg(long = "measure", default_value = "betalingsachterstand")]
    pub measures: Vec<String>,
    /// Share of the wijken's households it expects to reach, in percent.
    #[arg(long, default_value_t = 20.0)]
    pub reach: f64,
    /// The goal in percent: negative to decrease (-20), positive to raise.
    #[arg(long, allow_negative_numbers = true)]
    pub goal: f64,
    /// Months after the start by which the goal should be reached.
    #[arg(long, default_value_t = 24)]
    pub horizon: u32,
}

impl PlanArgs {
    pub fn to_proto(&self) -> pb::InterventionPlan {
        pb::InterventionPlan {
            gemeente_code: self.gemeente.clone(),
            name: self.name.clone(),
            wijk_codes: self.wijken.clone(),
            start_month: self.start.clone(),
            measures: self.measures.clone(),
            expected_reach_percent: self.reach,
            goal: Some(pb::Goal {
                direction: if self.goal < 0.0 {
                    pb::GoalDirection::Decrease
                } else if self.goal > 0.0 {
                    pb::GoalDirection::Increase
                } else {
                    pb::GoalDirection::Unspecified
                } as i32,
                percent: self.goal.abs(),
                horizon_months: self.horizon,
            }),
        }
    }
}

pub async fn client(
    c: &Connection,
) -> anyhow::Result<InterventionServiceClient<tonic::transport::Channel>> {
    Ok(InterventionServiceClient::new(c.connect().await?))
}

pub async fn run(cmd: InterventionCommand) -> anyhow::Result<()> {
    match cmd {
        InterventionCommand::Register { plan, connection } => {
            let r = client(&connection)
                .await?
                .register_intervention(pb::RegisterInterventionRequest {
                    plan: Some(plan.to_proto()),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print!("{}", registered(r.intervention.as_ref(), &r.detectable));
        }
        InterventionCommand::Update {
            id,
            expected_version,
            plan,
            connection,
        } => {
            let r = client(&connection)
                .await?
                .update_intervention(pb::UpdateInterventionRequest {
                    id,
                    expected_version,
                    plan: Some(plan.to_proto()),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print!("{}", registered(r.intervention.as_ref(), &r.detectable));
        }
        InterventionCommand::List {
            gemeente,
            connection,
        } => {
            let r = client(&connection)
                .await?
                .list_interventions(pb::ListInterventionsRequest {
                    gemeente_code: gemeente,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if r.interventions.is_empty() {
                println!("Nog geen interventies geregistreerd.");
            }
            for i in &r.interventions {
                println!("{}", summary(i));
            }
        }
        InterventionCommand::Report {
            gemeente,
            id,
            placebos,
            connection,
        } => {
            let r = client(&connection)
                .await?
                .get_intervention_report(pb::GetInterventionReportRequest {
                    gemeente_code: gemeente,
                    id,
                    placebo_draws: placebos,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print!("{}", report(&r));
        }
    }
    Ok(())
}

/// One line per intervention: id, version, name, wijken, start, goal.
pub fn summary(i: &pb::Intervention) -> String {
    let Some(p) = i.plan.as_ref() else {
        return format!("{} (leeg)", i.id);
    };
    let goal = p.goal.unwrap_or_default();
    let sign = if goal.direction() == pb::GoalDirection::Decrease {
        "-"
    } else {
        "+"
    };
    format!(
        "#{} v{}  {}  wijken {}  start {}  doel {sign}{}% binnen {} maanden  ({})",
        i.id,
        i.version,
        p.name,
        p.wijk_codes.join(", "),
        p.start_month,
        goal.percent,
        goal.horizon_months,
        p.measures.join(", ")
    )
}

fn registered(i: Option<&pb::Intervention>, detectable: &[pb::Detectable]) -> String {
    let mut out = String::new();
    if let Some(i) = i {
        out.push_str(&format!("Opgeslagen: {}\n", summary(i)));
    }
    for d in detectable {
        out.push_str(&format!("{}: {}\n", d.measure, d.text));
    }
    out
}

/// The report as text: per measure the paragraphs and a chart.
pub fn report(r: &pb::GetInterventionReportResponse) -> String {
    let mut out = String::new();
    if let Some(i) = r.intervention.as_ref() {
        out.push_str(&format!(
            "{}\nCijfers t/m {}.\n",
            summary(i),
            r.through_month
        ));
    }
    for m in &r.measures {
        out.push_str(&format!("\n== {} ==\n", m.measure));
        for p in &m.text {
            out.push_str(&wrap(p, 90));
            out.push('\n');
        }
        if m.estimated {
            out.push('\n');
            out.push_str(&chart(m));
        }
    }
    out
}

fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        let n = word.chars().count();
        if line > 0 && line + 1 + n > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += n;
    }
    out
}

/// A text chart: one row per period, ● the treated wijken, ○ the estimated
/// course without the intervention, per 1,000 households.
pub fn chart(m: &pb::EffectReport) -> String {
    const WIDTH: usize = 50;
    let max = m
        .treated
        .iter()
        .chain(&m.counterfactual)
        .cloned()
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let col = |v: f64| {
        ((v / max) * (WIDTH - 1) as f64)
            .round()
            .clamp(0.0, (WIDTH - 1) as f64) as usize
    };
    let mut out = format!(
        "{:<9} ● behandelde wijken (◐ met een geschatte cel)   ○ zonder interventie (geschat), per 1.000 huishoudens\n",
        ""
    );
    let start = m.periods_before as usize;
    for (i, label) in m.periods.iter().enumerate() {
        if i == start {
            out.push_str(&format!("{:<9} {}\n", "start", "-".repeat(WIDTH)));
        }
        let (t, c) = (m.treated[i], m.counterfactual[i]);
        let mut row = vec![' '; WIDTH];
        row[col(c)] = '○';
        let imputed = m.treated_imputed.get(i).copied().unwrap_or(false);
        row[col(t)] = if imputed { '◐' } else { '●' };
        out.push_str(&format!(
            "{label:<9} {}  {:>6} {:>6}\n",
            row.into_iter().collect::<String>(),
            format!("{t:.1}").replace('.', ","),
            format!("{c:.1}").replace('.', ",")
        ));
    }
    out
}
