//! Persistence: one SeaORM code path over SQLite (the embedded default) and
//! PostgreSQL, with an optional read replica and versioned migrations.

pub mod entities;
pub mod migrations;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DbBackend, TransactionTrait as _,
};
use sea_orm_migration::MigratorTrait as _;
use secrecy::{ExposeSecret as _, SecretString};

pub use migrations::Migrator;

/// Where the data lives, as resolved from the configuration.
#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    /// `postgres://…` or `sqlite://…`; `None` means the embedded SQLite file
    /// under the data directory.
    pub url: Option<SecretString>,
    /// A read replica for read-only queries.
    pub read_url: Option<SecretString>,
    pub data_dir: PathBuf,
    pub max_connections: u32,
    pub connect_timeout: Duration,
}

/// A pool for writes and one for reads; without a replica both are the same
/// pool.
#[derive(Clone, Debug)]
pub struct Database {
    write: DatabaseConnection,
    read: DatabaseConnection,
    sqlite_file: Option<PathBuf>,
}

impl Database {
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let (write, sqlite_file) = match &settings.url {
            Some(url) if !is_sqlite_url(url.expose_secret()) => {
                (connect_url(url, settings).await?, None)
            }
            Some(url) => {
                let path = sqlite_path_from_url(url.expose_secret());
                (connect_sqlite(&path, settings).await?, Some(path))
            }
            None => {
                let path = settings.data_dir.join("vmcloud.db");
                (connect_sqlite(&path, settings).await?, Some(path))
            }
        };
        let read = match &settings.read_url {
            Some(url) => connect_url(url, settings)
                .await
                .context("cannot connect to the read replica (DATABASE_READ_URL)")?,
            None => write.clone(),
        };
        Ok(Self {
            write,
            read,
            sqlite_file,
        })
    }

    /// A transaction on the primary that writes. On SQLite it takes the write
    /// lock at once (`BEGIN IMMEDIATE`), waiting within the busy timeout: a
    /// deferred transaction that reads and then writes fails outright
    /// (`SQLITE_BUSY_SNAPSHOT`) when another connection wrote in between.
    pub async fn begin_write(&self) -> Result<sea_orm::DatabaseTransaction, sea_orm::DbErr> {
        self.write
            .begin_with_options(sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
    }

    /// The primary: every write and every read that must see its own writes.
    pub fn writer(&self) -> &DatabaseConnection {
        &self.write
    }

    /// The replica when one is configured, else the primary.
    pub fn reader(&self) -> &DatabaseConnection {
        &self.read
    }

    pub fn backend(&self) -> DbBackend {
        self.write.get_database_backend()
    }

    /// Applies pending migrations; a no-op when the schema is current.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        Migrator::up(&self.write, None)
            .await
            .context("database migration failed")
    }

    /// Checks that both pools answer. For SQLite it also checks that the file
    /// is still where it was opened: an unlinked file keeps answering queries
    /// while every write goes to a file nobody will ever see again.
    pub async fn ping(&self) -> anyhow::Result<()> {
        if let Some(path) = &self.sqlite_file {
            anyhow::ensure!(path.exists(), "database file {} is gone", path.display());
        }
        self.write.ping().await.context("primary unreachable")?;
        if !std::ptr::eq(&raw const self.write, &raw const self.read) {
            self.read.ping().await.context("read replica unreachable")?;
        }
        Ok(())
    }

    /// Connections open and idle in the primary pool, for metrics.
    pub fn pool_usage(&self) -> PoolUsage {
        let (size, idle) = if self.backend() == DbBackend::Sqlite {
            let pool = self.write.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        } else {
            let pool = self.write.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        };
        PoolUsage {
            size,
            idle: u32::try_from(idle).unwrap_or(u32::MAX),
        }
    }

    pub async fn close(self) {
        if let Err(err) = self.write.close().await {
            tracing::warn!(error = %err, "closing the database pool failed");
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct PoolUsage {
    pub size: u32,
    pub idle: u32,
}

fn is_sqlite_url(url: &str) -> bool {
    url.starts_with("sqlite:")
}

fn sqlite_path_from_url(url: &str) -> PathBuf {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    PathBuf::from(rest.split('?').next().unwrap_or(rest))
}

async fn connect_url(
    url: &SecretString,
    settings: &DatabaseSettings,
) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.expose_secret().to_owned());
    options
        .max_connections(settings.max_connections)
        .connect_timeout(settings.connect_timeout)
        .acquire_timeout(settings.connect_timeout)
        .sqlx_logging(false);
    let conn = sea_orm::Database::connect(options)
        .await
        .map_err(|err| anyhow::anyhow!("cannot connect to the database: {}", describe(&err)))?;
    conn.ping()
        .await
        .map_err(|err| anyhow::anyhow!("cannot reach the database: {}", describe(&err)))?;
    Ok(conn)
}

async fn connect_sqlite(
    path: &Path,
    settings: &DatabaseSettings,
) -> anyhow::Result<DatabaseConnection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_files::create_dir(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = sea_orm::sqlx::pool::PoolOptions::<sea_orm::sqlx::Sqlite>::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.connect_timeout)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
    let conn = sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
    conn.execute_unprepared("SELECT 1").await?;
    // SQLite creates the -wal and -shm files with the database's mode.
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        crate::private_files::restrict_file(Path::new(&file))
            .with_context(|| format!("cannot make {} private", path.display()))?;
    }
    Ok(conn)
}

/// The driver's message without the connection string, which may hold a
/// password.
fn describe(err: &sea_orm::DbErr) -> String {
    let text = err.to_string();
    text.split(" (url:").next().unwrap_or(&text).to_owned()
}
