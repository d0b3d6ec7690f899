//! Reproduces the Proposition 99 estimates of the R package `synthdid`
//! (Arkhangelsky et al. 2021, Table 1) on the data of Abadie et al. (2010).

use wijkradar_effect::{Estimator, Panel, estimate};

/// California last, 1970–1988 before the tax, 1989–2000 after.
fn prop99() -> Panel {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/california_prop99.csv");
    let mut reader = csv::Reader::from_path(path).expect("the shipped data");
    let states: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .skip(1)
        .map(str::to_owned)
        .collect();
    let mut years = Vec::new();
    let mut columns: Vec<Vec<f64>> = vec![Vec::new(); states.len()];
    for record in reader.records() {
        let record = record.unwrap();
        years.push(record[0].parse::<u32>().unwrap());
        for (i, v) in record.iter().skip(1).enumerate() {
            columns[i].push(v.parse().unwrap());
        }
    }
    assert_eq!((years[0], years.len(), states.len()), (1970, 31, 39));
    let california = states.iter().position(|s| s == "California").unwrap();
    let treated = columns.remove(california);
    columns.push(treated);
    let t0 = years.iter().filter(|&&y| y < 1989).count();
    Panel::new(columns, 38, t0).unwrap()
}

#[test]
fn synthetic_did_matches_synthdid() {
    let e = estimate(&prop99(), Estimator::SyntheticDid);
    assert!((e.tau - -15.604).abs() < 0.005, "SDID {}", e.tau);
    assert!((e.omega.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!((e.lambda.iter().sum::<f64>() - 1.0).abs() < 1e-9);
}

#[test]
fn synthetic_control_matches_synthdid() {
    let e = estimate(&prop99(), Estimator::SyntheticControl);
    assert!((e.tau - -19.620).abs() < 0.005, "SC {}", e.tau);
}

#[test]
fn diff_in_diff_matches_synthdid() {
    let e = estimate(&prop99(), Estimator::DiffInDiff);
    assert!((e.tau - -27.349).abs() < 0.005, "DiD {}", e.tau);
}
