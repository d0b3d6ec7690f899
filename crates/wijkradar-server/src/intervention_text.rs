//! An intervention report in plain Dutch, after the Dutch effect ladder
//! (Movisie): a good result is "eerste aanwijzingen" for this approach in
//! these wijken, never "bewezen".

use wijkradar_domain::intervention::Plan;
use wijkradar_proto::v1 as pb;

use crate::dashboard::format::decimal;

/// A signed percentage: `+3,2%`, `-12,0%`.
fn signed(x: f64) -> String {
    let s = decimal(x);
    if x >= 0.05 {
        format!("+{s}%")
    } else {
        format!("{s}%")
    }
}

fn change(before: f64, after: f64) -> String {
    if before > 0.0 {
        signed((after / before - 1.0) * 100.0)
    } else {
        "onbekend".into()
    }
}

fn list(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} en {last}", init.join(", ")),
    }
}

/// The paragraphs of one measure's report.
pub(crate) fn paragraphs(
    plan: &Plan,
    wijken: &[String],
    measure: &str,
    r: &pb::EffectReport,
    k: u32,
) -> Vec<String> {
    let per = if r.period() == pb::ReportPeriod::Quarter {
        "kwartaal"
    } else {
        "maand"
    };
    let mut out = Vec::new();
    out.push(format!(
        "{}: in {} ging het van gemiddeld {} naar {} per 1.000 huishoudens per {per} ({}). In de vergelijkingswijken ging het van {} naar {} ({}).",
        measure,
        list(wijken),
        decimal(r.treated_rate_before),
        decimal(r.treated_rate_after),
        change(r.treated_rate_before, r.treated_rate_after),
        decimal(r.comparison_rate_before),
        decimal(r.comparison_rate_after),
        change(r.comparison_rate_before, r.comparison_rate_after),
    ));
    let households = |x: f64| {
        let n = decimal(x.abs());
        if x < 0.0 {
            format!("{n} minder")
        } else {
            format!("{n} meer")
        }
    };
    out.push(format!(
        "Geschat effect: {} ten opzichte van wat zonder de interventie verwacht werd (90%-interval {} tot {}). Dat zijn ongeveer {} huishoudens per {per} (interval {} tot {}).",
        signed(r.effect_percent),
        signed(r.effect_percent_low),
        signed(r.effect_percent_high),
        households(r.effect_households_per_period),
        households(r.effect_households_low),
        households(r.effect_households_high),
    ));
    let toward_goal = r.effect_percent * plan.goal.change > 0.0;
    // Clear only when the interval leaves 0 out and the placebos agree.
    let clear = r.effect_percent_low * r.effect_percent_high > 0.0 && r.p_value < 0.10;
    out.push(if clear && toward_goal {
        format!(
            "Dit zijn eerste aanwijzingen dat de aanpak in deze wijken werkt (p = {}). Bewezen is het daarmee niet: het is één vergelijking, in deze wijken, met beschermde cijfers.",
            p_value(r.p_value)
        )
    } else if clear {
        format!(
            "De cijfers wijzen de andere kant op dan het doel (p = {}). Kijk eerst of er in deze wijken iets anders veranderde.",
            p_value(r.p_value)
        )
    } else if (r.placebos as usize) < wijkradar_effect::design::CLAIM_PLACEBOS {
        format!(
            "Met {} proefwijken kan de p-waarde niet onder {} komen: deze vergelijking kan een effect begrenzen (het interval), maar niet aantonen (p = {}).",
            r.placebos,
            p_value(1.0 / (f64::from(r.placebos) + 1.0)),
            p_value(r.p_value)
        )
    } else {
        format!(
            "De cijfers laten nog geen effect zien dat te onderscheiden is van toeval (p = {}). Dat betekent niet dat de aanpak niet werkt.",
            p_value(r.p_value)
        )
    });
    let goal = format!(
        "{}{}% binnen {} maanden",
        if plan.goal.change < 0.0 { "-" } else { "+" },
        decimal(plan.goal.change.abs() * 100.0),
        plan.goal.horizon_months
    );
    out.push(match r.progress() {
        pb::Progress::OnCourse => format!("Voortgang naar het doel ({goal}): op koers."),
        pb::Progress::NotOnCourse => format!(
            "Voortgang naar het doel ({goal}): niet op koers. Ook de gunstige kant van het interval blijft achter bij wat nu gehaald zou moeten zijn."
        ),
        _ => format!("Voortgang naar het doel ({goal}): te vroeg om te zeggen."),
    });
    let Some(d) = r.diagnostics.as_ref() else {
        return out;
    };
    let mut checks = format!(
        "Controles: synthetische controle {}, verschil-in-verschillen {}, Poisson-model {}.",
        signed(r.synthetic_control_percent),
        signed(r.diff_in_diff_percent),
        signed(r.poisson_percent)
    );
    if let Some(f) = d.false_start_percent {
        checks.push_str(&format!(
            " Een proefstart 12 maanden eerder geeft {} (hoort dicht bij 0 te liggen).",
            signed(f)
        ));
    }
    checks.push_str(&format!(
        " Vergeleken met {} wijken, waarvan er ongeveer {} meetellen (grootste gewicht {}%).",
        d.donors_used,
        decimal(d.effective_donors),
        decimal(d.largest_weight * 100.0)
    ));
    if d.neighbours_left_out > 0 {
        checks.push_str(&format!(
            " {} buurwijken zijn niet meegenomen.",
            d.neighbours_left_out
        ));
    }
    out.push(checks);
    if d.suppressed_treated > 0.0 || d.suppressed_donors > 0.0 {
        out.push(format!(
            "Cellen onder {k} worden niet vrijgegeven. Van de behandelde wijken was {}% van de cellen zo klein; van de vergelijkingswijken {}%. Die cellen zijn geschat uit een model per wijk en periode, onder {k}.",
            decimal(d.suppressed_treated * 100.0),
            decimal(d.suppressed_donors * 100.0),
        ));
    }
    if d.donors_left_out > 0 {
        out.push(format!(
            "{} wijken met meer dan de helft van hun cellen onder {k} zijn niet als vergelijking gebruikt.",
            d.donors_left_out
        ));
    }
    if d.placebos_fitting_better > 0.9 {
        out.push("Voorzichtig: de wijken lijken vóór de start slecht op hun vergelijking (slechter dan 9 op de 10 proefwijken).".into());
    }
    if d.chosen_after_spike {
        out.push("Let op: de wijken zijn gekozen direct na een piek. Een deel van een daling kan vanzelf komen (regressie naar het gemiddelde).".into());
    }
    out
}

fn p_value(p: f64) -> String {
    if p < 0.01 {
        "< 0,01".into()
    } else {
        format!("{:.2}", p).replace('.', ",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wijkradar_domain::intervention::Goal;

    fn plan() -> Plan {
        Plan {
            gemeente: "GM0034".parse().unwrap(),
            name: "Schuldhulp aan huis".into(),
            wijken: vec!["WK003401".parse().unwrap()],
            start: "2026-01".parse().unwrap(),
            measures: vec!["huurachterstand".into()],
            reach: 0.5,
            goal: Goal {
                change: -0.2,
                horizon_months: 24,
            },
        }
    }

    fn report(placebos: u32, p_value: f64) -> pb::EffectReport {
        pb::EffectReport {
            estimated: true,
            effect_percent: -8.0,
            effect_percent_low: -20.0,
            effect_percent_high: 4.0,
            placebos,
            p_value,
            ..Default::default()
        }
    }

    #[test]
    fn too_few_placebos_to_show_an_effect_are_said_so() {
        let text = |placebos| {
            paragraphs(
                &plan(),
                &["Stad".into()],
                "huurachterstand",
                &report(placebos, 0.43),
                10,
            )
            .join(" ")
        };
        let few = text(6);
        assert!(
            few.contains("Met 6 proefwijken kan de p-waarde niet onder 0,14 komen"),
            "{few}"
        );
        assert!(!few.contains("toeval"), "{few}");
        let many = text(40);
        assert!(many.contains("te onderscheiden is van toeval"), "{many}");
        assert!(!many.contains("proefwijken kan"), "{many}");
    }
}
