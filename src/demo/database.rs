//! Throwaway GitLab-shaped databases: the demo's, and the tests' template.

use diesel_async::SimpleAsyncConnection;

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
