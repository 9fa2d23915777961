//! What this evaluator supports, checked before anything runs.

use promql_parser::parser::{self, Expr};

/// Something in an expression this evaluator does not support (or that
/// does not parse), said in a sentence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// Parses an expression and checks that every part of it is supported.
pub fn parse(text: &str) -> Result<Expr, Unsupported> {
    let expr = parser::parse(text).map_err(|e| Unsupported(e.trim().to_owned()))?;
    check(&expr)?;
    Ok(expr)
}

/// Checks that every part of a parsed expression is supported.
pub fn check(expr: &Expr) -> Result<(), Unsupported> {
    let no = |what: &str| Err(Unsupported(what.to_owned()));
    match expr {
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                check(p)?;
            }
            check(&a.expr)
        }
        Expr::Unary(u) => check(&u.expr),
        Expr::Binary(b) => {
            if b.modifier
                .as_ref()
                .is_some_and(|m| m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some())
            {
                return no("fill modifiers of binary operators are not supported");
            }
            check(&b.lhs)?;
            check(&b.rhs)
        }
        Expr::Paren(p) => check(&p.expr),
        Expr::Subquery(_) => no(
            "subqueries are not supported; write the inner expression as a recording rule and \
             take the range over the recorded series",
        ),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::VectorSelector(vs) => {
            if vs.at.is_some() {
                return no("the @ modifier is not supported in event-time evaluation");
            }
            Ok(())
        }
        Expr::MatrixSelector(ms) => {
            if ms.vs.at.is_some() {
                return no("the @ modifier is not supported in event-time evaluation");
            }
            Ok(())
        }
        Expr::Call(call) => {
            if !crate::functions::SUPPORTED.contains(&call.func.name) {
                return no(&format!(
                    "function {}() is not supported (docs/promql.md lists what is)",
                    call.func.name
                ));
            }
            call.args.args.iter().try_for_each(|a| check(a))
        }
        Expr::Extension(_) => no("extension expressions are not supported"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_supported() {
        assert!(parse("rate(x[5m]) > 1").is_ok());
        for (text, says) in [
            ("max_over_time(rate(x[1m])[5m:])", "subqueries"),
            ("x @ 100", "@ modifier"),
            ("histogram_count(x)", "histogram_count"),
            ("rate(x[5m]", "unclosed"),
        ] {
            let e = parse(text).unwrap_err().0;
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
