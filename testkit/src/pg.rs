//! PostgreSQL helpers for the sink tests: the servers `deploy/postgres.sh`
//! and `deploy/timescaledb.sh` start, plain queries, and the rows a
//! `timescaledb` sink wrote.

use super::tumbling::Expected;

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn url(var: &str, default: &str, start: &str) -> String {
    let url = std::env::var(var).unwrap_or_else(|_| default.into());
    let reachable = runtime().block_on(async {
        tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .is_ok()
    });
    assert!(
        reachable,
        "no server at {url}: start one with `{start}` (./deploy/test.sh does), or set {var}"
    );
    url
}

pub fn postgres() -> String {
    url(
        "TIDEMARK_POSTGRES",
        "postgresql://postgres@127.0.0.1:15432/postgres",
        "deploy/postgres.sh start 15432",
    )
}

pub fn timescaledb() -> String {
    url(
        "TIDEMARK_TIMESCALEDB",
        "postgresql://postgres:postgres@127.0.0.1:15440/postgres?sslmode=disable",
        "deploy/timescaledb.sh start 15440",
    )
}

/// Runs SQL; every value as text.
pub fn query(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    runtime().block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut out = Vec::new();
        for message in client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
        {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                out.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                );
            }
        }
        out
    })
}

pub fn one(url: &str, sql: &str) -> String {
    query(url, sql)[0][0].clone().unwrap_or_default()
}

/// A table name of the test's own, dropped (with its series table and
/// partitions) if an earlier run left it.
pub fn fresh_table(url: &str, name: &str) -> (String, String) {
    let (table, series) = (format!("{name}_samples"), format!("{name}_series"));
    query(
        url,
        &format!(
            "DROP VIEW IF EXISTS {table}_labeled; DROP TABLE IF EXISTS {table} CASCADE; DROP TABLE IF EXISTS {series};
             CREATE TABLE IF NOT EXISTS tidemark_schema (samples_table text PRIMARY KEY, version integer NOT NULL,
               layout text NOT NULL, partition_ms bigint, updated_at timestamptz NOT NULL DEFAULT now());
             DELETE FROM tidemark_schema WHERE samples_table = '{table}';"
        ),
    );
    (table, series)
}

pub fn sink(url: &str, table: &str, series: &str, extra: &str) -> String {
    format!(
        "    type: timescaledb\n    url: \"{url}\"\n    table: {table}\n    series_table: {series}\n    batch_size: 500\n{extra}"
    )
}

/// Every row, through the view that joins the labels.
pub fn rows(url: &str, table: &str) -> Expected {
    let mut out = Expected::new();
    for r in query(
        url,
        &format!(
            "SELECT metric, labels->>'host', (extract(epoch FROM time) * 1000)::bigint, value FROM {table}_labeled"
        ),
    ) {
        let key = (
            r[0].clone().unwrap(),
            r[1].clone().unwrap(),
            r[2].as_deref().unwrap().parse().unwrap(),
        );
        let value: f64 = r[3].as_deref().unwrap().parse().unwrap();
        assert!(out.insert(key.clone(), value).is_none(), "{key:?} twice");
    }
    out
}

pub fn count_or_zero(url: &str, table: &str) -> usize {
    runtime().block_on(async {
        let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await
        else {
            return 0;
        };
        tokio::spawn(connection);
        match client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
        {
            Ok(row) => row.get::<_, i64>(0) as usize,
            Err(_) => 0,
        }
    })
}
