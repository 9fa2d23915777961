//! What an expression reads from storage over a span of evaluation times:
//! the query API asks an archive for exactly that before it evaluates.

use promql_parser::parser::Expr;
use tidemark_engine::history::Wanted;

use crate::eval::offset_ms;

/// Every selector of `expr` with the samples it reads when `expr` is
/// evaluated at times in `[start, end]`: an instant selector reads its
/// lookback (`lookback` milliseconds) behind each time, a range selector
/// its range, both moved back by their `offset`. Subqueries and `@` are
/// refused by [`crate::check`] before this is asked.
pub fn reads(expr: &Expr, start: i64, end: i64, lookback: i64) -> Vec<Wanted> {
    let mut out = Vec::new();
    walk(expr, start, end, lookback, &mut out);
    out
}

fn walk(expr: &Expr, start: i64, end: i64, lookback: i64, out: &mut Vec<Wanted>) {
    match expr {
        Expr::VectorSelector(vs) => {
            let offset = offset_ms(&vs.offset);
            out.push(Wanted {
                selector: vs.clone(),
                start: start - offset - lookback,
                end: end - offset,
            });
        }
        Expr::MatrixSelector(ms) => {
            let offset = offset_ms(&ms.vs.offset);
            out.push(Wanted {
                selector: ms.vs.clone(),
                start: start - offset - ms.range.as_millis() as i64,
                end: end - offset,
            });
        }
        Expr::Aggregate(a) => {
            walk(&a.expr, start, end, lookback, out);
            if let Some(param) = &a.param {
                walk(param, start, end, lookback, out);
            }
        }
        Expr::Unary(u) => walk(&u.expr, start, end, lookback, out),
        Expr::Binary(b) => {
            walk(&b.lhs, start, end, lookback, out);
            walk(&b.rhs, start, end, lookback, out);
        }
        Expr::Paren(p) => walk(&p.expr, start, end, lookback, out),
        Expr::Subquery(s) => walk(&s.expr, start, end, lookback, out),
        Expr::Call(c) => {
            for arg in &c.args.args {
                walk(arg, start, end, lookback, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(text: &str, start: i64, end: i64) -> Vec<(String, i64, i64)> {
        reads(&crate::parse(text).unwrap(), start, end, 300_000)
            .into_iter()
            .map(|w| (w.selector.to_string(), w.start, w.end))
            .collect()
    }

    #[test]
    fn each_selector_reads_its_lookback_or_range_moved_by_its_offset() {
        assert_eq!(
            spans(
                "sum(rate(a{x=\"1\"}[5m] offset 1h)) / on() group_left b + topk(2, c)",
                3_600_000 * 3,
                3_600_000 * 4
            ),
            [
                (
                    "a{x=\"1\"} offset 1h".to_owned(),
                    3_600_000 * 2 - 300_000,
                    3_600_000 * 3
                ),
                ("b".to_owned(), 3_600_000 * 3 - 300_000, 3_600_000 * 4),
                ("c".to_owned(), 3_600_000 * 3 - 300_000, 3_600_000 * 4),
            ]
        );
        assert_eq!(
            spans("vector(1) + scalar(-d offset -1m)", 0, 0),
            [("d offset -1m".to_owned(), 60_000 - 300_000, 60_000)]
        );
        assert!(spans("1 + 2", 0, 10).is_empty());
    }
}
