//! Numbers, periods and text as a Dutch reader expects them: a decimal
//! comma, a point between thousands, Dutch month names.

/// Dutch month names, January first.
pub(crate) const MONTHS: [&str; 12] = [
    "januari",
    "februari",
    "maart",
    "april",
    "mei",
    "juni",
    "juli",
    "augustus",
    "september",
    "oktober",
    "november",
    "december",
];

/// A whole number with a point between thousands: `12.345`.
pub(crate) fn whole(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    out
}

/// One decimal, with a comma: `23,4`; thousands with a point.
pub(crate) fn decimal(x: f64) -> String {
    let tenths = (x * 10.0).round() as i64;
    let sign = if tenths < 0 { "-" } else { "" };
    let tenths = tenths.unsigned_abs();
    format!("{sign}{},{}", whole(tenths / 10), tenths % 10)
}

/// A period label of the API (`2026-03`, `2026-Q3`, `2026`) in words:
/// `maart 2026`, `3e kwartaal 2026`, `2026`.
pub(crate) fn period(label: &str) -> String {
    match label.split_once('-') {
        Some((year, q)) if q.starts_with('Q') => format!("{}e kwartaal {year}", &q[1..]),
        Some((year, m)) => match m.parse::<usize>() {
            Ok(m @ 1..=12) => format!("{} {year}", MONTHS[m - 1]),
            _ => label.to_owned(),
        },
        None => label.to_owned(),
    }
}

/// The months an alert counts together, from `first` to `last` (both
/// `YYYY-MM`): `juli 2026` for one month, `feb t/m jul 2026` or
/// `nov 2025 t/m jan 2026` for a window.
pub(crate) fn window(first: &str, last: &str) -> String {
    if first == last {
        return period(last);
    }
    let parts = |label: &str| -> Option<(String, usize)> {
        let (year, m) = label.split_once('-')?;
        let m: usize = m.parse().ok().filter(|m| (1..=12).contains(m))?;
        Some((year.to_owned(), m))
    };
    match (parts(first), parts(last)) {
        (Some((y1, m1)), Some((y2, m2))) if y1 == y2 => {
            format!("{} t/m {} {y2}", SHORT_MONTHS[m1 - 1], SHORT_MONTHS[m2 - 1])
        }
        (Some((y1, m1)), Some((y2, m2))) => format!(
            "{} {y1} t/m {} {y2}",
            SHORT_MONTHS[m1 - 1],
            SHORT_MONTHS[m2 - 1]
        ),
        _ => format!("{first} t/m {last}"),
    }
}

/// Dutch short month names.
const SHORT_MONTHS: [&str; 12] = [
    "jan", "feb", "mrt", "apr", "mei", "jun", "jul", "aug", "sep", "okt", "nov", "dec",
];

/// A short period label for a chart's axis: `mrt '26`, `K3 '26`, `2026`.
pub(crate) fn short_period(label: &str) -> String {
    match label.split_once('-') {
        Some((year, q)) if q.starts_with('Q') => format!("K{} '{}", &q[1..], &year[2..]),
        Some((year, m)) => match m.parse::<usize>() {
            Ok(m @ 1..=12) => format!("{} '{}", SHORT_MONTHS[m - 1], &year[2..]),
            _ => label.to_owned(),
        },
        None => label.to_owned(),
    }
}

/// Escapes text for HTML and SVG (elements and quoted attributes).
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A CSV cell a spreadsheet will not run as a formula: text starting
/// with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`.
pub(crate) fn csv_safe(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dutch_numbers_and_periods() {
        assert_eq!(whole(7), "7");
        assert_eq!(whole(1234), "1.234");
        assert_eq!(whole(1_234_567), "1.234.567");
        assert_eq!(decimal(23.44), "23,4");
        assert_eq!(decimal(1234.56), "1.234,6");
        assert_eq!(decimal(0.04), "0,0");
        assert_eq!(period("2026-03"), "maart 2026");
        assert_eq!(period("2026-Q3"), "3e kwartaal 2026");
        assert_eq!(period("2026"), "2026");
        assert_eq!(short_period("2026-10"), "okt '26");
        assert_eq!(short_period("2026-03"), "mrt '26");
        assert_eq!(short_period("2025-Q1"), "K1 '25");
    }

    #[test]
    fn text_is_escaped_and_formulas_are_defused() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(csv_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(csv_safe("-1"), "'-1");
        assert_eq!(csv_safe("Filmwijk"), "Filmwijk");
    }
}
