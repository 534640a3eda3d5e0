//! Throwaway GitLab-shaped databases: the demo's, and the tests' template.

use diesel::OptionalExtension as _;
use diesel_async::SimpleAsyncConnection;

use crate::db::dsl::{set_config, shobj_description};
use crate::db::{redact, DbError};

/// The part of GitLab's `db/structure.sql` that the service reads (a copy: see SPEC section 2).
pub const GITLAB_SCHEMA: &str = include_str!("gitlab_schema.sql");

/// `server_url` with its database replaced by `name`.
pub fn database_url(server_url: &str, name: &str) -> Result<String, DbError> {
    let mut url = url::Url::parse(server_url).map_err(|e| DbError::Connect {
        target: redact(server_url),
        message: e.to_string(),
    })?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// Only plain names: they are spliced into DDL.
pub fn valid_database_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

async fn admin_connection(server_url: &str) -> Result<crate::db::SingleConn, DbError> {
    let url = database_url(server_url, "postgres")?;
    crate::db::connect::establish_url(&url).await
}

/// Runs statements on the server's `postgres` database (CREATE/DROP DATABASE and the like).
pub async fn on_server(server_url: &str, sql: &str) -> Result<(), DbError> {
    let mut conn = admin_connection(server_url).await?;
    conn.batch_execute(sql)
        .await
        .map_err(DbError::query(format!("running `{sql}`")))
}

/// Drops `name` if it exists (closing its sessions) and creates it empty, or from `template`.
pub async fn recreate_database(
    server_url: &str,
    name: &str,
    template: Option<&str>,
) -> Result<String, DbError> {
    for n in std::iter::once(name).chain(template) {
        if !valid_database_name(n) {
            return Err(DbError::Connect {
                target: redact(server_url),
                message: format!(
                    "`{n}` is not a plain database name (lowercase letters, digits, _)"
                ),
            });
        }
    }
    on_server(
        server_url,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .await?;
    let create = match template {
        Some(t) => format!("CREATE DATABASE {name} TEMPLATE {t}"),
        None => format!("CREATE DATABASE {name}"),
    };
    on_server(server_url, &create).await?;
    database_url(server_url, name)
}

/// Creates GitLab's tables in the (empty) database at `url`.
pub async fn load_gitlab_schema(url: &str) -> Result<(), DbError> {
    let mut conn = crate::db::connect::establish_url(url).await?;
    conn.batch_execute(GITLAB_SCHEMA)
        .await
        .map_err(DbError::query("creating GitLab's tables"))
}

/// What the demo writes on every database it creates (`COMMENT ON DATABASE`). The demo drops
/// only a database that carries it: one without it, whatever it holds, is not the demo's.
pub const DEMO_MARK: &str =
    "Made by `registry-repair demo`, which drops and re-creates it at will: \
     a throwaway GitLab-shaped database with a seeded world and nothing else";

/// The advisory lock's first key: "RRDM", the demo's claims.
const CLAIM_KEY: i32 = 0x5252_444d;

/// Why the demo does not use a database.
#[derive(Debug, thiserror::Error)]
pub enum DemoDatabaseError {
    #[error(
        "the database `{name}` exists and was not made by `registry-repair demo` (it does not carry \
         the demo's mark{}), so the demo leaves it as it is: pick another --database for the demo, \
         or, if it really is an old demo's database, drop it yourself (`DROP DATABASE {name}`) and \
         run the demo again",
        shown_comment(comment)
    )]
    NotTheDemos {
        name: String,
        comment: Option<String>,
    },
    #[error(
        "the database `{name}` is in use by another demo ({holder}): stop that one first (Ctrl-C \
         where it runs), or pick another --database"
    )]
    InUse { name: String, holder: String },
    #[error(transparent)]
    Db(#[from] DbError),
}

fn shown_comment(comment: &Option<String>) -> String {
    match comment {
        None => String::new(),
        Some(text) => {
            let short: String = text.chars().take(60).collect();
            let more = if short.len() < text.len() { "..." } else { "" };
            format!("; its comment is {:?}", format!("{short}{more}"))
        }
    }
}

/// The demo's hold on a database name while it runs: a session-level advisory lock taken on the
/// server's `postgres` database by one connection kept open, so that a second demo (served or
/// not) cannot drop the database under the first. It ends when this is dropped or the process
/// dies (the connection closes).
pub struct DemoClaim {
    conn: crate::db::SingleConn,
    name: String,
}

#[derive(diesel::QueryableByName)]
struct Granted {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    granted: bool,
}

#[derive(diesel::QueryableByName)]
struct Holder {
    #[diesel(sql_type = diesel::sql_types::Text)]
    holder: String,
}

// PostgreSQL's catalog of databases, as far as the demo reads it.
diesel::table! {
    pg_database (oid) {
        oid -> Oid,
        datname -> Text,
    }
}

/// The advisory lock's second key for `name` (FNV-1a, kept positive).
fn claim_key(name: &str) -> i32 {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    i32::try_from(hash & 0x7fff_ffff).unwrap_or(0)
}

/// Takes the demo's hold on `name` (see [`DemoClaim`]), or says which demo holds it.
pub async fn claim_demo_database(
    server_url: &str,
    name: &str,
) -> Result<DemoClaim, DemoDatabaseError> {
    use diesel::sql_types::Integer;
    use diesel_async::RunQueryDsl;

    let mut conn = admin_connection(server_url).await?;
    let me = format!(
        "registry-repair demo, pid {} on {}",
        std::process::id(),
        crate::identity::host_name()
    );
    let key = claim_key(name);
    let granted = conn
        .transaction(|conn| {
            Box::pin(async move {
                diesel::select(set_config("application_name", &me, false))
                    .execute(conn)
                    .await
                    .map_err(DbError::query("naming the demo's connection"))?;
                // Raw: a session-level advisory lock, the demo's hold for as long as it runs.
                let granted: Granted =
                    diesel::sql_query("SELECT pg_try_advisory_lock($1, $2) AS granted")
                        .bind::<Integer, _>(CLAIM_KEY)
                        .bind::<Integer, _>(key)
                        .get_result(conn)
                        .await
                        .map_err(DbError::query("taking the demo's advisory lock"))?;
                if granted.granted {
                    return Ok(None);
                }
                // Raw: pg_locks' oid keys cast to bigint, joined to pg_stat_activity (catalogs).
                let holder: Option<Holder> = diesel::sql_query(
                    "SELECT a.application_name || ', connected since ' \
                         || to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') \
                         || ' UTC' AS holder \
                     FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
                       AND l.classid::bigint = $1 AND l.objid::bigint = $2 \
                     LIMIT 1",
                )
                .bind::<Integer, _>(CLAIM_KEY)
                .bind::<Integer, _>(key)
                .get_result(conn)
                .await
                .optional()
                .map_err(DbError::query("finding which demo holds the database"))?;
                Ok(Some(holder.map_or_else(
                    || "it has just ended".to_string(),
                    |h| h.holder,
                )))
            })
        })
        .await?;
    match granted {
        None => Ok(DemoClaim {
            conn,
            name: name.to_string(),
        }),
        Some(holder) => Err(DemoDatabaseError::InUse {
            name: name.to_string(),
            holder,
        }),
    }
}

impl DemoClaim {
    /// The claimed database, empty: created and marked when it does not exist; dropped (its
    /// sessions ended) and created again when it carries [`DEMO_MARK`]; any other existing
    /// database is refused, untouched, with no session of it ended. Returns its URL.
    pub async fn recreate(&mut self, server_url: &str) -> Result<String, DemoDatabaseError> {
        let name = self.name.clone();
        if !valid_database_name(&name) {
            return Err(DbError::Connect {
                target: redact(server_url),
                message: format!(
                    "`{name}` is not a plain database name (lowercase letters, digits, _)"
                ),
            }
            .into());
        }
        match self.mark().await? {
            None => {}
            Some(Some(mark)) if mark == DEMO_MARK => {
                self.run(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
            }
            Some(comment) => return Err(DemoDatabaseError::NotTheDemos { name, comment }),
        }
        self.run(&format!("CREATE DATABASE {name}")).await?;
        let mark = DEMO_MARK.replace('\'', "''");
        if let Err(error) = self
            .run(&format!("COMMENT ON DATABASE {name} IS '{mark}'"))
            .await
        {
            // Unmarked, it would never be the demo's again: take it back while it is empty.
            let _ = self.run(&format!("DROP DATABASE IF EXISTS {name}")).await;
            return Err(error.into());
        }
        Ok(database_url(server_url, &name)?)
    }

    /// `None`: no such database; `Some(comment)`: it exists, with this comment (if any).
    async fn mark(&mut self) -> Result<Option<Option<String>>, DbError> {
        use diesel::{ExpressionMethods, QueryDsl};
        use diesel_async::RunQueryDsl;
        let name = self.name.clone();
        self.conn
            .transaction(|conn| {
                Box::pin(async move {
                    pg_database::table
                        .filter(pg_database::datname.eq(&name))
                        .select(shobj_description(pg_database::oid, "pg_database"))
                        .get_result(conn)
                        .await
                        .optional()
                        .map_err(DbError::query(format!(
                            "reading whether the database `{name}` is the demo's"
                        )))
                })
            })
            .await
    }

    async fn run(&mut self, sql: &str) -> Result<(), DbError> {
        self.conn
            .batch_execute(sql)
            .await
            .map_err(DbError::query(format!("running `{sql}`")))
    }
}
