//! Floats written as Go writes them, for the places where Prometheus's
//! output is a contract: `count_values` labels and `$value` in templates
//! (`%v`), `humanize` (`%.4g`), and the API's alert values (`%e`).
//! Special values are `NaN`, `+Inf` and `-Inf` throughout.

fn special(v: f64) -> Option<String> {
    if v.is_nan() {
        Some("NaN".into())
    } else if v.is_infinite() {
        Some(if v > 0.0 { "+Inf" } else { "-Inf" }.into())
    } else {
        None
    }
}

/// `1.5e+06`: a mantissa and a signed exponent of at least two digits.
fn exponent_form(mantissa: &str, exp: i32) -> String {
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// Splits Rust's `{:e}` form into mantissa and exponent.
fn split(e: &str) -> (&str, i32) {
    let (mantissa, exp) = e.split_once('e').unwrap_or((e, "0"));
    (mantissa, exp.parse().unwrap_or(0))
}

/// `strconv.FormatFloat(v, 'f', -1, 64)`: the shortest digits that read
/// back, never an exponent (`count_values`).
pub fn f(v: f64) -> String {
    special(v).unwrap_or_else(|| format!("{v}"))
}

/// `%v` (`strconv.FormatFloat(v, 'g', -1, 64)`): the shortest digits that
/// read back, in exponent form when the exponent is below -4 or at least 6
/// (`18`, `1.234567e+06`).
pub fn v(v: f64) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let e = format!("{v:e}");
    let (mantissa, exp) = split(&e);
    if (-4..6).contains(&exp) {
        format!("{v}")
    } else {
        exponent_form(mantissa, exp)
    }
}

/// `%.4g`: four significant digits, trailing zeros dropped, exponent form
/// when the exponent is below -4 or at least 4 (`humanize`).
pub fn g4(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return v(x);
    }
    let e = format!("{x:.3e}");
    let (mantissa, exp) = split(&e);
    if (-4..4).contains(&exp) {
        let rounded: f64 = e.parse().unwrap_or(x);
        format!("{rounded}")
    } else {
        let trimmed = if mantissa.contains('.') {
            mantissa.trim_end_matches('0').trim_end_matches('.')
        } else {
            mantissa
        };
        exponent_form(trimmed, exp)
    }
}

/// `strconv.FormatFloat(v, 'e', -1, 64)`: always an exponent (`1e+00`,
/// `1.2345e+03`), as Prometheus's API writes alert values.
pub fn e(v: f64) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    let text = format!("{v:e}");
    let (mantissa, exp) = split(&text);
    exponent_form(mantissa, exp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_go_writes_them() {
        assert_eq!(f(1.0), "1");
        assert_eq!(f(0.1), "0.1");
        assert_eq!(f(1e21), "1000000000000000000000");
        assert_eq!(f(f64::INFINITY), "+Inf");
        assert_eq!(f(f64::NAN), "NaN");
        assert_eq!(v(0.1), "0.1");
        assert_eq!(v(123456.0), "123456");
        assert_eq!(v(1e6), "1e+06");
        assert_eq!(v(0.00001), "1e-05");
        assert_eq!(v(f64::NEG_INFINITY), "-Inf");
        assert_eq!(g4(1234.5), "1234");
        assert_eq!(g4(12345.0), "1.234e+04");
        assert_eq!(g4(12.5), "12.5");
        assert_eq!(e(1.0), "1e+00");
        assert_eq!(e(1234.5), "1.2345e+03");
        assert_eq!(e(0.05), "5e-02");
        assert_eq!(e(f64::INFINITY), "+Inf");
    }
}
