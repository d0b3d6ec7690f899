//! Early warning through the API (issue 6, point 4): a wijk whose signals
//! rise is found and ranked first; an alert shows only the released value
//! of a released cell, the same value the table gives; bad requests get a
//! precise error; partners cannot ask.

use tonic::Code;
use wijkradar_domain::{Hierarchy, Month};
use wijkradar_proto::v1 as pb;
use wijkradar_tests::{ANALYST, PARTNER_A, TestServer, current_month};

use crate::{cells, table_request};

/// Sends 30 months of huurachterstand in Almere's first six wijken, the
/// third of which doubles in the last three months (with energy arrears
/// for the extra households); returns that wijk and the last month.
pub(crate) async fn send_a_rising_wijk(server: &TestServer) -> (wijkradar_domain::WijkCode, Month) {
    let hierarchy = Hierarchy::netherlands_2023();
    let almere = "GM0034".parse().unwrap();
    let wijken: Vec<_> = hierarchy.wijken_of(almere).take(6).collect();
    let rising = wijken[2];
    let last = current_month().plus(-1);
    let months: Vec<Month> = last.plus(-29).through(last).collect();
    // About 12 households a month per buurt, a little wiggle; the rising
    // wijk (the third) doubles in the last three months.
    let rent = |m: usize, w: usize, b: usize| {
        let n = 10 + (m * 7 + b * 3 + w) % 5;
        if w == 2 && m >= 27 { 2 * n } else { n }
    };
    let mut signals = signals_of(
        "huurachterstand",
        &hierarchy,
        "GM0034",
        6,
        &months,
        |m, w, b| 0..rent(m, w, b),
    );
    // The rise's extra households have energy arrears too: several
    // problems at once, where there were none.
    signals.extend(signals_of(
        "energieachterstand",
        &hierarchy,
        "GM0034",
        6,
        &months,
        |m, w, b| {
            let n = rent(m, w, b);
            if w == 2 && m >= 27 { n / 2..n } else { 0..0 }
        },
    ));
    send_as_partner_a(server, signals).await;
    (rising, last)
}

#[tokio::test]
async fn a_rising_wijk_is_alerted_with_its_released_value_only() {
    let server = TestServer::start().await;
    let (rising, last) = send_a_rising_wijk(&server).await;
    let mut q = server.query(ANALYST).await;
    let answer = almere_rent_alerts(&mut q).await;
    assert_eq!(answer.month, last.to_string());
    assert!(answer.series_tested > 6, "{answer:?}");
    let first = answer.alerts.first().expect("the rising wijk is alerted");
    assert_eq!(first.area_code, rising.to_string(), "{answer:?}");
    assert_eq!(first.level, pb::AreaLevel::Wijk as i32);
    assert_eq!(first.method, "pooled_windows");
    assert!(first.q_value < 0.05);
    // No other wijk rose.
    for a in &answer.alerts {
        if a.level == pb::AreaLevel::Wijk as i32 {
            assert_eq!(a.area_code, rising.to_string(), "{a:?}");
        }
    }
    // Every alert is a released cell of its window, with the table's value.
    for a in &answer.alerts {
        assert_eq!(
            window_value(&mut q, a).await,
            Some(a.released_value),
            "{a:?}"
        );
    }

    // The derived indicator: households with several problems rose there.
    let derived = q
        .get_alerts(pb::GetAlertsRequest {
            gemeente_code: "GM0034".into(),
            month: String::new(),
            signal_types: vec!["meerdere_signaaltypen_6m".into()],
        })
        .await
        .unwrap()
        .into_inner();
    // Only in the rising wijk or its buurten (whether the wijk's own cell
    // is released is up to the audit: the other wijken have none).
    assert!(!derived.alerts.is_empty(), "{derived:?}");
    let wijk_digits = &rising.to_string()[2..];
    for a in &derived.alerts {
        assert_eq!(a.signal_type, "meerdere_signaaltypen_6m");
        assert!(a.area_code[2..].starts_with(wijk_digits), "{a:?}");
        assert!(a.released_value >= u64::from(derived.k), "{a:?}");
    }
    // The derived indicator is a table too, released by the same rules:
    // the alert's value is the table's, asked again it is the same, and
    // before the rise there were no such households.
    for _ in 0..2 {
        let table = cells(
            &q.get_table(table_request(
                pb::AreaLevel::Buurt,
                &["meerdere_signaaltypen_6m"],
                &last.plus(-5).to_string(),
                &last.to_string(),
            ))
            .await
            .unwrap()
            .into_inner(),
        );
        for a in &derived.alerts {
            let key = (a.area_code.clone(), a.signal_type.clone(), a.month.clone());
            assert_eq!(table.get(&key), Some(&Some(a.released_value)), "{a:?}");
        }
        let before = (
            derived.alerts[0].area_code.clone(),
            "meerdere_signaaltypen_6m".to_owned(),
            last.plus(-5).to_string(),
        );
        assert_eq!(table.get(&before), Some(&None), "0 households: suppressed");
    }

    // A month that has not ended, and an unknown type: every field named.
    let err = q
        .get_alerts(pb::GetAlertsRequest {
            gemeente_code: "GM0034".into(),
            month: current_month().to_string(),
            signal_types: vec!["opnieuw_gesignaleerd_6m".into(), "nope".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let text = wijkradar_agent::client::describe_status(&err);
    assert!(
        text.contains("month: has not ended yet") && text.contains("signal_types[1]"),
        "{text}"
    );
    // A partner may not ask.
    let mut as_partner =
        pb::query_service_client::QueryServiceClient::new(server.channel(PARTNER_A).await);
    let err = as_partner
        .get_alerts(pb::GetAlertsRequest {
            gemeente_code: "GM0034".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

/// The value GetTable gives the cell an alert shows: its area, measure and
/// window ending with its month.
async fn window_value(
    q: &mut pb::query_service_client::QueryServiceClient<tonic::transport::Channel>,
    a: &pb::Alert,
) -> Option<u64> {
    let period = match a.window_months {
        1 => pb::Period::Month,
        2 => pb::Period::Last2Months,
        3 => pb::Period::Last3Months,
        6 => pb::Period::Last6Months,
        n => panic!("a window of {n} months"),
    };
    let mut request = table_request(a.level(), &[&a.signal_type], &a.month, &a.month);
    request.period = period.into();
    let answer = q.get_table(request).await.unwrap().into_inner();
    let label = if a.window_months == 1 {
        a.month.clone()
    } else {
        format!("{}..{}", a.window_first_month, a.month)
    };
    let table = cells(&answer);
    assert_eq!(table.len(), answer.cells.len(), "one cell per area");
    *table
        .get(&(a.area_code.clone(), a.signal_type.clone(), label))
        .expect("the alert's cell")
}

/// A wijk whose rent arrears go from about 1 household a month to 5 for
/// six months: every month's cell stays below k = 10 (5 + D = 9), but the
/// six months together are 30 households against about 6. The alert names
/// the wijk with the released value of a window, the same value GetTable
/// gives for that window, and the window's release was audited with its
/// months.
#[tokio::test]
async fn a_rise_of_small_monthly_counts_is_shown_on_its_window() {
    let server = TestServer::start().await;
    let hierarchy = Hierarchy::netherlands_2023();
    let last = current_month().plus(-1);
    let months: Vec<Month> = last.plus(-29).through(last).collect();
    // Only each wijk's first buurt, so the wijk's month is that buurt's.
    let signals = signals_of(
        "huurachterstand",
        &hierarchy,
        "GM0034",
        12,
        &months,
        |m, w, b| match b {
            0 if w == 2 && m >= 24 => 0..5,
            0 => 0..(m * 7 + w) % 3,
            _ => 0..0,
        },
    );
    send_as_partner_a(&server, signals).await;
    let rising = third_wijk(&hierarchy);
    let mut q = server.query(ANALYST).await;
    let answer = almere_rent_alerts(&mut q).await;
    let alert = answer
        .alerts
        .iter()
        .find(|a| a.area_code == rising.to_string())
        .unwrap_or_else(|| panic!("the rising wijk is alerted: {answer:?}"));
    assert!(alert.window_months > 1, "{alert:?}");
    let first = last.plus(1 - alert.window_months as i32);
    assert_eq!(alert.window_first_month, first.to_string());
    // About 1 a month expected, 5 a month seen (±D).
    let w = f64::from(alert.window_months);
    assert!((0.5 * w..2.0 * w).contains(&alert.expected), "{alert:?}");
    assert!(alert.released_value as f64 >= 5.0 * w - 4.0, "{alert:?}");
    assert!(
        alert.threshold < alert.released_value as f64 + 4.0,
        "{alert:?}"
    );
    assert_eq!(
        window_value(&mut q, alert).await,
        Some(alert.released_value)
    );
    // No month of the window is released for the wijk.
    let table = cells(
        &q.get_table(table_request(
            pb::AreaLevel::Wijk,
            &["huurachterstand"],
            &first.to_string(),
            &last.to_string(),
        ))
        .await
        .unwrap()
        .into_inner(),
    );
    for m in first.through(last) {
        let key = (rising.to_string(), "huurachterstand".into(), m.to_string());
        assert_eq!(table.get(&key), Some(&None), "{m} is suppressed");
    }
    // The window was released once and audited with each of its months.
    let label = format!("{first}..{last}");
    let releases = crate::releases::released_with(&server, "huurachterstand");
    let with = releases
        .get(&(label.clone(), 1))
        .unwrap_or_else(|| panic!("{label} v1 in {releases:?}"));
    let months: Vec<String> = first.through(last).map(|m| format!("{m} v1")).collect();
    assert_eq!(with, &months);

    // Asked again, the month's answer is the same (read from the run's
    // cache). After late signals in the wijk it is computed anew: the
    // window's new version counts them.
    assert_eq!(almere_rent_alerts(&mut q).await, answer);
    let buurt = hierarchy.buurten_of_wijk(rising).next().unwrap();
    let late: Vec<pb::Signal> = (0..12u64)
        .map(|i| pb::Signal {
            pseudonym: crate::pseudonym(77, i),
            buurt_code: buurt.to_string(),
            signal_type: "huurachterstand".into(),
            month: last.to_string(),
            severity: None,
            household_pseudonym: Vec::new(),
            previous_epoch_pseudonym: Vec::new(),
        })
        .collect();
    send_as_partner_a(&server, late).await;
    let again = almere_rent_alerts(&mut q).await;
    let renewed = again
        .alerts
        .iter()
        .find(|a| a.area_code == rising.to_string())
        .expect("still alerted");
    assert!(
        renewed.release_version > alert.release_version,
        "{renewed:?}"
    );
    assert!(
        renewed.released_value > alert.released_value,
        "{renewed:?} after {alert:?}"
    );
}

/// Sends `signals` as partner A, in batches of 5,000.
async fn send_as_partner_a(server: &TestServer, signals: Vec<pb::Signal>) {
    wijkradar_agent::submit(
        server.channel(PARTNER_A).await,
        signals,
        crate::KEY_ID,
        5000,
        |_| {},
    )
    .await
    .unwrap();
}

/// Almere's third wijk, the one the tests make rise.
fn third_wijk(hierarchy: &Hierarchy) -> wijkradar_domain::WijkCode {
    hierarchy
        .wijken_of("GM0034".parse().unwrap())
        .nth(2)
        .unwrap()
}

/// Almere's alerts of rent arrears for the last ended month.
async fn almere_rent_alerts(
    q: &mut pb::query_service_client::QueryServiceClient<tonic::transport::Channel>,
) -> pb::GetAlertsResponse {
    q.get_alerts(pb::GetAlertsRequest {
        gemeente_code: "GM0034".into(),
        month: String::new(),
        signal_types: vec!["huurachterstand".into()],
    })
    .await
    .unwrap()
    .into_inner()
}

/// Signals of one type in the buurten of gemeente `g`'s first `wijken`
/// wijken over `months`: the households `households(month index, wijk
/// index, buurt index)` each, pseudonyms unique per gemeente, month, buurt
/// and household (the same household in two calls is the same pseudonym).
fn signals_of(
    signal_type: &str,
    hierarchy: &Hierarchy,
    g: &str,
    wijken: usize,
    months: &[Month],
    households: impl Fn(usize, usize, usize) -> std::ops::Range<usize>,
) -> Vec<pb::Signal> {
    let gemeente = g.parse().unwrap();
    let tag: u64 = g[2..].parse().unwrap();
    let mut signals = Vec::new();
    for (m, month) in months.iter().enumerate() {
        for (w, wijk) in hierarchy.wijken_of(gemeente).take(wijken).enumerate() {
            for (b, buurt) in hierarchy.buurten_of_wijk(wijk).enumerate() {
                for i in households(m, w, b) {
                    let mut pseudonym = vec![0u8; 32];
                    pseudonym[..8].copy_from_slice(&tag.to_be_bytes());
                    pseudonym[8..16].copy_from_slice(&(m as u64).to_be_bytes());
                    pseudonym[16..24].copy_from_slice(&((w * 100 + b) as u64).to_be_bytes());
                    pseudonym[24..].copy_from_slice(&(i as u64).to_be_bytes());
                    signals.push(pb::Signal {
                        pseudonym,
                        buurt_code: buurt.to_string(),
                        signal_type: signal_type.into(),
                        month: month.to_string(),
                        severity: None,
                        household_pseudonym: Vec::new(),
                        previous_epoch_pseudonym: Vec::new(),
                    });
                }
            }
        }
    }
    signals
}

/// The pooled curve is fitted over every gemeente the store holds, but only
/// over those whose history of the type covers the months tested against:
/// a gemeente whose housing partner joined later, with ten times the
/// signals, would otherwise read as a steep national rise and lift every
/// expected value, hiding Almere's rising wijk. Its energy supplier sent
/// from the start, so the gemeente's history as such is as long as
/// Almere's.
#[tokio::test]
async fn a_gemeente_that_joined_later_does_not_bend_the_curve() {
    use wijkradar_server::access::Role;
    let organisations = [
        (PARTNER_A, "Corporatie A", Role::Partner),
        (ANALYST, "Gemeente", Role::Analyst),
    ];
    let server = TestServer::start_for(
        &organisations,
        |oins| {
            Some(format!(
                "[[organisation]]\nname = \"{PARTNER_A}\"\noin = \"{}\"\nsubject_common_name = \"{PARTNER_A}\"\npartner = {{ signal_types = [\"huurachterstand\", \"energieachterstand\"], municipalities = [\"GM0034\", \"GM0995\"] }}\n\n\
                 [[organisation]]\nname = \"{ANALYST}\"\noin = \"{}\"\nsubject_common_name = \"{ANALYST}\"\nanalyst = {{ municipalities = [\"GM0034\"] }}\n",
                oins[0], oins[1]
            ))
        },
        |_| {},
    )
    .await;
    let hierarchy = Hierarchy::netherlands_2023();
    let last = current_month().plus(-1);
    let months: Vec<Month> = last.plus(-29).through(last).collect();
    // Almere: 6 wijken of about 12 households a month per buurt; wijk 3
    // doubles in the last three months.
    let mut signals = signals_of(
        "huurachterstand",
        &hierarchy,
        "GM0034",
        6,
        &months,
        |m, w, b| {
            let n = 10 + (m * 7 + b * 3 + w) % 5;
            0..if w == 2 && m >= 27 { 2 * n } else { n }
        },
    );
    // Lelystad: rent arrears only the last 20 months, 120 households a
    // month per buurt; energy arrears all along, a few.
    signals.extend(signals_of(
        "huurachterstand",
        &hierarchy,
        "GM0995",
        4,
        &months[10..],
        |m, w, b| 0..120 + (m + w + b) % 3,
    ));
    signals.extend(signals_of(
        "energieachterstand",
        &hierarchy,
        "GM0995",
        4,
        &months,
        |_, _, b| 0..1 + b % 2,
    ));
    send_as_partner_a(&server, signals).await;
    let rising = third_wijk(&hierarchy);
    let answer = almere_rent_alerts(&mut server.query(ANALYST).await).await;
    let first = answer.alerts.first().expect("the rising wijk is alerted");
    assert_eq!(first.area_code, rising.to_string(), "{answer:?}");
    assert_eq!(first.method, "pooled_windows");
}
