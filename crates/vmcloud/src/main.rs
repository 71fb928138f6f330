//! `vmcloud`: the whole platform in one binary.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use vmcloud_server::cache::Cache;
use vmcloud_server::config::Config;
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::error::Error;
use vmcloud_server::modules::auth::revocation;
use vmcloud_server::modules::users;
use vmcloud_server::startup::{Application, Role, shutdown_signal};
use vmcloud_server::{db, http, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "vmcloud",
    version,
    about = "Rent out virtual machines from your own servers"
)]
struct Cli {
    /// Configuration file (default: ./vmcloud.toml when it exists).
    #[arg(long, global = true, env = "VMCLOUD_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// A tracing filter, e.g. `debug` (default: the `log_level` setting, else
    /// `info` for `serve` and `worker` and `warn` for the other commands).
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API, the workers and the local node (the default).
    Serve {
        /// Seed a demo catalog: the test guest as an image, small plans in
        /// the local region, so a VM can be ordered at once.
        #[arg(long)]
        demo: bool,
        /// The guest image the demo catalog offers.
        #[arg(long, value_name = "PATH", default_value = "guest/out/disk.qcow2")]
        demo_image: PathBuf,
    },
    /// Run the background workers only.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Administrative tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create a user; the password is read from standard input.
    CreateUser {
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = ["admin", "support", "customer"])]
        role: String,
        /// Display name (default: the part of the email before the @).
        #[arg(long)]
        name: Option<String>,
    },
    /// Set a user's password, read from standard input, and sign them out
    /// everywhere: the way back in for a locked-out admin, and for accounts
    /// while no SMTP server is configured (the outbox never shows links).
    SetPassword {
        #[arg(long)]
        email: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve {
        demo: false,
        demo_image: PathBuf::new(),
    });
    if let Command::Openapi = command {
        print!("{}", http::openapi::document());
        return Ok(());
    }
    let config_file = cli.config.map(std::path::absolute).transpose()?;
    let mut config = Config::load(config_file.as_deref())?;
    if let Command::Serve {
        demo: true,
        demo_image,
    } = &command
    {
        config.demo_image = Some(demo_image.clone());
        config.make_paths_absolute()?;
    }
    if let Some(level) = cli.log_level {
        config.log_level = Some(level);
        config.validate()?;
    }
    // The long-running commands narrate; the one-shot ones print their
    // result and log only what went wrong.
    let default_level = match command {
        Command::Serve { .. } | Command::Worker => "info",
        _ => "warn",
    };
    telemetry::init_logging(
        config.log_format,
        config.log_level.as_deref().unwrap_or(default_level),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Serve { .. } => serve(config, Role::Serve).await,
            Command::Worker => serve(config, Role::Worker).await,
            Command::Migrate => {
                let database = db::Database::connect(&config.database()).await?;
                database.migrate().await?;
                database.close().await;
                println!("migrations applied");
                Ok(())
            }
            Command::Admin {
                command: AdminCommand::CreateUser { email, role, name },
            } => create_user(config, &email, &role, name).await,
            Command::Admin {
                command: AdminCommand::SetPassword { email },
            } => set_password(config, &email).await,
            Command::Openapi => unreachable!("handled before start-up"),
        }
    })
}

async fn serve(config: Config, role: Role) -> anyhow::Result<()> {
    let stop_signal = shutdown_signal();
    let app = Application::build(config, role).await?;
    let addr = app.local_addr();
    match role {
        Role::Serve => tracing::info!(
            "VMCloud is listening on http://{addr} (API docs at http://{addr}/api/docs)"
        ),
        Role::Worker => tracing::info!("VMCloud worker running; probes on http://{addr}"),
    }
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            stop_signal.await;
            shutdown.cancel();
        }
    });
    app.run(shutdown).await
}

async fn create_user(
    config: Config,
    email: &str,
    role: &str,
    name: Option<String>,
) -> anyhow::Result<()> {
    let role = match role {
        "admin" => UserRole::Admin,
        "support" => UserRole::Support,
        _ => UserRole::Customer,
    };
    let password = read_password()?;
    let database = db::Database::connect(&config.database()).await?;
    database.migrate().await?;
    let new_user = users::NewUser {
        email: email.to_owned(),
        name,
        password,
        role,
        email_verified: true,
    };
    let created = users::create_user(&database, new_user).await;
    database.close().await;
    let user = created.map_err(for_the_shell)?;
    println!(
        "created {:?} account {} ({})",
        user.role, user.email, user.id
    );
    Ok(())
}

async fn set_password(config: Config, email: &str) -> anyhow::Result<()> {
    let password = read_password()?;
    let database = db::Database::connect(&config.database()).await?;
    database.migrate().await?;
    // The running platform's cache, so its replicas drop the sessions too.
    let cache = Cache::connect(config.redis_url.as_ref(), &config.redis_prefix).await?;
    let views = users::UserViews::new(cache.clone());
    let changed = async {
        let user = users::flows::set_password(&database, &views, email, password).await?;
        let ended = revocation::end_sessions_of(&database, &cache, user.id, None).await?;
        Ok::<_, Error>((user, ended))
    }
    .await;
    database.close().await;
    let (user, ended) = changed.map_err(for_the_shell)?;
    println!(
        "password set for {} ({}); {ended} session(s) signed out",
        user.email, user.id
    );
    Ok(())
}

/// The password on standard input, without its line ending.
fn read_password() -> anyhow::Result<SecretString> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("cannot read the password from standard input")?;
    Ok(SecretString::from(
        password.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

/// A service error as one line for the terminal.
fn for_the_shell(err: Error) -> anyhow::Error {
    match err {
        Error::Validation { fields, .. } => anyhow::anyhow!(
            "{}",
            fields
                .iter()
                .map(|f| format!("{} {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => anyhow::anyhow!("{other}"),
    }
}
