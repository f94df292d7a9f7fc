//! The `postgres` source: each refresh opens one connection (no TLS), runs the query with the
//! simple-query protocol (every column arrives as text, whatever its SQL type), and closes it;
//! connect and query together are bounded by `timeout`. Nothing here logs or returns the DSN
//! or the password: the source is described as `postgres host:port/dbname`. A `password_file`
//! is read at each attempt (so a rotated password is picked up), its trailing newline trimmed.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::{NoTls, SimpleQueryMessage, SimpleQueryRow};
use vla_pipeline::error_chain;

use super::TierError;
use super::config::PostgresConfig;
use super::table::RawRow;

/// A ready-to-query PostgreSQL source.
#[derive(Clone)]
pub(crate) struct PgSource {
    config: tokio_postgres::Config,
    /// The file holding the password, and its setting's YAML path (for errors).
    password_file: Option<(PathBuf, String)>,
    query: String,
    timeout: Duration,
    pub(crate) refresh_interval: Duration,
    /// `postgres host:port/dbname`, safe to log.
    pub(crate) description: String,
}

impl PgSource {
    /// Parses the DSN (no I/O); `at` is the YAML path of the `postgres` settings.
    pub(crate) fn new(c: &PostgresConfig, at: &str) -> Result<Self, TierError> {
        let mut config = tokio_postgres::Config::from_str(&c.dsn).map_err(|e| {
            TierError::Config(format!(
                "{at}.dsn: not a valid connection string: {}",
                error_chain(&e)
            ))
        })?;
        config.connect_timeout(c.timeout);
        let description = describe(&config);
        Ok(Self {
            config,
            password_file: c
                .password_file
                .as_ref()
                .map(|p| (p.clone(), format!("{at}.password_file"))),
            query: c.query.clone(),
            timeout: c.timeout,
            refresh_interval: c.refresh_interval,
            description,
        })
    }

    fn error(&self, message: String) -> TierError {
        TierError::Postgres {
            what: self.description.clone(),
            message,
        }
    }

    /// Connects, runs the query and reads its rows, all within `timeout`.
    pub(crate) async fn load(&self) -> Result<Vec<RawRow>, TierError> {
        match tokio::time::timeout(self.timeout, self.query_rows()).await {
            Ok(result) => result,
            Err(_) => Err(self.error(format!("timed out after {:?}", self.timeout))),
        }
    }

    /// The connection settings with the password from `password_file`, read now.
    async fn connect_config(
        &self,
    ) -> Result<std::borrow::Cow<'_, tokio_postgres::Config>, TierError> {
        let Some((path, setting)) = &self.password_file else {
            return Ok(std::borrow::Cow::Borrowed(&self.config));
        };
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || std::fs::read(path)).await
        };
        let read = read.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        // The error names the file, never its content.
        let text = read.map_err(|e| {
            self.error(format!(
                "cannot read the password file {} ({setting}): {e}",
                path.display()
            ))
        })?;
        let mut password = text.as_slice();
        while let [rest @ .., b'\n' | b'\r'] = password {
            password = rest;
        }
        let mut config = self.config.clone();
        config.password(password);
        Ok(std::borrow::Cow::Owned(config))
    }

    async fn query_rows(&self) -> Result<Vec<RawRow>, TierError> {
        let config = self.connect_config().await?;
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| self.error(error_chain(&e)))?;
        // The connection is driven here rather than spawned, so it ends with this call.
        let mut connection = std::pin::pin!(connection);
        let messages = tokio::select! {
            result = client.simple_query(&self.query) => {
                result.map_err(|e| self.error(format!("query failed: {}", error_chain(&e))))?
            }
            result = &mut connection => {
                let why = match result {
                    Ok(()) => "connection closed by the server".to_owned(),
                    Err(e) => error_chain(&e),
                };
                return Err(self.error(why));
            }
        };
        rows_from_messages(&messages).map_err(|m| self.error(m))
    }
}

/// `postgres host:port/dbname`, without user or password.
fn describe(c: &tokio_postgres::Config) -> String {
    let host = match (c.get_hosts().first(), c.get_hostaddrs().first()) {
        (Some(Host::Tcp(h)), _) if h.contains(':') => format!("[{h}]"),
        (Some(Host::Tcp(h)), _) => h.clone(),
        #[cfg(unix)]
        (Some(Host::Unix(p)), _) => p.display().to_string(),
        (None, Some(std::net::IpAddr::V6(a))) => format!("[{a}]"),
        (None, Some(a)) => a.to_string(),
        (None, None) => "localhost".to_owned(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let db = c.get_dbname().or(c.get_user()).unwrap_or("postgres");
    format!("postgres {host}:{port}/{db}")
}

/// The customers in a query's result: `customer_id` (or the first column), `tier`, and every
/// other column as an extra field. A result without rows is an error.
pub(crate) fn rows_from_messages(messages: &[SimpleQueryMessage]) -> Result<Vec<RawRow>, String> {
    let mut columns: Option<Vec<String>> = None;
    let mut result_sets = 0;
    let mut rows: Vec<&SimpleQueryRow> = Vec::new();
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                result_sets += 1;
                columns = Some(cols.iter().map(|c| c.name().to_owned()).collect());
            }
            SimpleQueryMessage::Row(r) => rows.push(r),
            _ => {}
        }
    }
    if result_sets > 1 {
        return Err("the query returned several result sets; write one SELECT".into());
    }
    let Some(columns) = columns else {
        return Err("the query returned no rows (is it a SELECT?)".into());
    };
    let id_col = columns.iter().position(|c| c == "customer_id").unwrap_or(0);
    let Some(tier_col) = columns.iter().position(|c| c == "tier") else {
        return Err(format!(
            "the query's result has no `tier` column (columns: {})",
            columns.join(", ")
        ));
    };
    if tier_col == id_col {
        return Err("the query's result needs a customer_id column before tier".into());
    }
    if rows.is_empty() {
        // Like an empty file: more likely a mistake (a truncated table, a wrong WHERE) than
        // a wish to take every customer's tier away.
        return Err("the query returned no customers; keeping the last table".into());
    }
    let mut first_row: hashbrown::HashMap<String, usize, foldhash::fast::RandomState> =
        hashbrown::HashMap::with_capacity_and_hasher(rows.len(), Default::default());
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let n = i + 1;
        let cell = |col: usize| row.try_get(col).ok().flatten().map(str::trim);
        let id = match cell(id_col) {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => return Err(format!("row {n}: {} is NULL or empty", columns[id_col])),
        };
        let tier = match cell(tier_col) {
            Some(t) if !t.is_empty() => t.to_owned(),
            _ => return Err(format!("row {n}: customer {id:?}: tier is NULL or empty")),
        };
        if let Some(first) = first_row.get(&id) {
            return Err(format!(
                "row {n}: customer {id:?}: duplicate (first in row {first})"
            ));
        }
        first_row.insert(id.clone(), n);
        let fields = columns
            .iter()
            .enumerate()
            .filter(|(c, _)| *c != id_col && *c != tier_col)
            .filter_map(|(c, name)| Some((name.clone(), cell(c)?.to_owned())))
            .collect();
        out.push(RawRow { id, tier, fields });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const AT: &str = "processors.customer_tier.source.postgres";

    fn pg_config(dsn: &str) -> PostgresConfig {
        PostgresConfig {
            dsn: dsn.into(),
            password_file: None,
            query: "SELECT customer_id, tier FROM customers".into(),
            refresh_interval: Duration::from_secs(30),
            timeout: Duration::from_millis(300),
        }
    }

    fn source(dsn: &str) -> PgSource {
        PgSource::new(&pg_config(dsn), AT).unwrap()
    }

    #[test]
    fn descriptions_hide_user_and_password() {
        let cases = [
            (
                "host=db.internal port=6432 user=vla password=s3cret dbname=billing",
                "postgres db.internal:6432/billing",
            ),
            (
                "host=127.0.0.1 user=vla password=s3cret",
                "postgres 127.0.0.1:5432/vla",
            ),
            (
                "postgresql://vla:s3cret@db/billing",
                "postgres db:5432/billing",
            ),
            ("host=::1 dbname=x", "postgres [::1]:5432/x"),
            ("hostaddr=10.0.0.7 dbname=x", "postgres 10.0.0.7:5432/x"),
            ("hostaddr=::1 port=6543 dbname=x", "postgres [::1]:6543/x"),
        ];
        for (dsn, want) in cases {
            assert_eq!(source(dsn).description, want, "{dsn}");
        }
        let err = PgSource::new(&pg_config("host=db password='s3cret"), AT)
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
        assert!(err.contains(&format!("{AT}.dsn: ")), "{err}");
    }

    #[tokio::test]
    async fn unreachable_server_is_a_failure_within_the_timeout() {
        // Nothing listens on port 1 of loopback: refused at once.
        let src = source("host=127.0.0.1 port=1 user=vla password=s3cret dbname=billing");
        let started = std::time::Instant::now();
        let err = src.load().await.unwrap_err().to_string();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(err.starts_with("postgres 127.0.0.1:1/billing: "), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_server_is_bounded_by_the_timeout() {
        // Accepts the TCP connection but never answers the startup message.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let src = source(&format!(
            "host=127.0.0.1 port={port} user=vla dbname=billing"
        ));
        let started = std::time::Instant::now();
        let err = src.load().await.unwrap_err().to_string();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(
            err.contains("timed out after 300ms") || err.contains("timeout"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_password_file_is_read_at_each_attempt_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pg-password");
        let mut c = pg_config("host=127.0.0.1 port=1 user=vla dbname=billing");
        c.password_file = Some(path.clone());
        let src = PgSource::new(&c, AT).unwrap();
        let err = src.load().await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "postgres 127.0.0.1:1/billing: cannot read the password file {} ({AT}.password_file): ",
                path.display()
            )),
            "{err}"
        );
        std::fs::write(&path, "s3cret \"q\\\r\n").unwrap();
        let config = src.connect_config().await.unwrap();
        assert_eq!(config.get_password(), Some(&b"s3cret \"q\\"[..]));
        // Now the file is there: the attempt gets as far as connecting.
        let err = src.load().await.unwrap_err().to_string();
        assert!(!err.contains("password file"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        std::fs::write(&path, "rotated\n").unwrap();
        let config = src.connect_config().await.unwrap();
        assert_eq!(config.get_password(), Some(&b"rotated"[..]));
    }
}
