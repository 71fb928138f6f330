//! Configuration: defaults < config file (`vmcloud.toml` or `--config PATH`) <
//! environment (`VMCLOUD_*`, plus `DATABASE_URL`, `DATABASE_READ_URL` and
//! `REDIS_URL`). Everything is validated once, at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::db::DatabaseSettings;
use crate::modules::products::image_source::HostPattern;

/// The file read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "vmcloud.toml";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Text,
    /// One JSON object per line, for ELK and friends.
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub bind: SocketAddr,
    /// Where the embedded database, keys and VM files live. Like every path
    /// setting, made absolute at load (see [`Config::make_paths_absolute`]).
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// A tracing filter directive, e.g. `info` or `vmcloud_server=debug,info`.
    /// Unset means the command's own level: `info` for the long-running
    /// `serve` and `worker`, `warn` for the one-shot ones.
    pub log_level: Option<String>,
    /// `postgres://…`; unset means SQLite at `$data_dir/vmcloud.db`.
    pub database_url: Option<SecretString>,
    /// A read replica for read-only queries.
    pub database_read_url: Option<SecretString>,
    pub database_max_connections: u32,
    /// `redis://…`; unset means in-process cache and a database-backed queue.
    pub redis_url: Option<SecretString>,
    /// Namespace for every Redis key and channel of this deployment.
    pub redis_prefix: String,
    pub request_timeout_secs: u64,
    pub body_limit_bytes: usize,
    /// How long a shutdown waits for in-flight requests and jobs.
    pub shutdown_timeout_secs: u64,
    pub worker_concurrency: usize,
    pub worker_poll_interval_ms: u64,
    /// How long a claimed job stays invisible to other workers without a
    /// heartbeat before it is considered abandoned.
    pub job_visibility_timeout_secs: u64,
    /// The address users reach the platform at, e.g. `https://cloud.example.com`;
    /// used in emailed links, and `https` turns on HSTS and `Secure` cookies.
    /// Unset means `http://{bind}`.
    pub public_url: Option<String>,
    /// Origins allowed to call the API from a browser with credentials. Empty
    /// means same-origin only.
    pub cors_allowed_origins: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` is believed; from anyone else
    /// the header is ignored and the peer address is the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// SMTP relay; unset means mail goes to the outbox table and the log.
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    pub smtp_tls: SmtpTls,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<SecretString>,
    /// The From of every email, e.g. `VMCloud <noreply@example.com>`.
    pub mail_from: String,
    /// The key access tokens are signed with, as `KID:SECRET` (SECRET: at
    /// least 32 bytes, base64url). Unset means a key generated and kept under
    /// the data directory.
    pub jwt_signing_key: Option<SecretString>,
    /// Keys that signed tokens still in circulation, same format: rotating the
    /// signing key moves the old one here so its tokens stay valid until they
    /// expire.
    pub jwt_previous_keys: Vec<SecretString>,
    /// Whether `vmcloud serve` registers and drives this host as a QEMU node.
    pub local_node: bool,
    /// The region slug the local node joins (created when missing).
    pub local_region: String,
    /// The accelerator of QEMU nodes: `auto` probes KVM with a bounded test
    /// boot and falls back to TCG.
    pub qemu_accel: QemuAccel,
    /// Networks (CIDR) guests on QEMU nodes must not reach, on top of the
    /// node's own addresses, loopback and link-local: where the node's
    /// databases, caches and management interfaces are.
    pub guest_internal_networks: Vec<ipnet::IpNet>,
    /// User-mode guests on QEMU nodes reach the internet through passt
    /// (confined by nftables) instead of getting no network but SSH.
    pub qemu_passt: bool,
    /// Where user-mode instances' SSH ports listen on the node.
    pub ssh_bind: std::net::IpAddr,
    /// The host name customers SSH to; unset means the host of `public_url`.
    pub ssh_host: Option<String>,
    /// The range SSH ports of user-mode instances are taken from, inclusive.
    pub ssh_port_min: u16,
    pub ssh_port_max: u16,
    /// How long provisioning waits for a new guest's SSH server.
    pub guest_boot_timeout_secs: u64,
    /// How long a stop waits for the guest to power off before cutting it.
    pub guest_stop_timeout_secs: u64,
    /// How often the reconciler compares the database with the nodes.
    pub reconcile_interval_secs: u64,
    /// How often running instances are sampled for their metrics.
    pub metrics_interval_secs: u64,
    /// How often finished hours of usage are charged to the accounts.
    pub billing_accrual_interval_secs: u64,
    /// The signing secret of the Stripe webhook endpoint (`whsec_…`);
    /// without it the webhook answers 503.
    pub stripe_webhook_secret: Option<SecretString>,
    /// The secret API key (`sk_…`) Checkout Sessions and refunds are made
    /// with; without it card payments answer 503 and manual payments remain.
    pub stripe_secret_key: Option<SecretString>,
    /// Where Stripe's REST API is reached; tests point it at a local server.
    pub stripe_api_base: String,
    /// The bearer token Prometheus scrapes `/metrics` with; without it
    /// `/metrics` is not served (its figures are the operator's business).
    pub metrics_token: Option<SecretString>,
    /// With it, `serve` seeds a demo catalog (`vmcloud serve --demo`): this
    /// guest image, and small plans in the local region.
    pub demo_image: Option<PathBuf>,
    /// The one directory images are imported from when their source is a
    /// path (or `file://`): nothing outside it, after symlinks. Unset means
    /// `<data_dir>/imports`; created (mode 0700) at start.
    pub image_import_dir: Option<PathBuf>,
    /// Internal mirrors image downloads may reach although they resolve to
    /// loopback, private or link-local addresses: `host` or `host:port`
    /// (a name or an IP address, `[v6]:port`). A name is matched as written
    /// in the URL, on every redirect too.
    pub image_download_allowed_hosts: Vec<HostPattern>,
    /// Networks (CIDR, e.g. `10.20.0.0/16`) image downloads may connect to
    /// although they are not public.
    pub image_download_allowed_networks: Vec<ipnet::IpNet>,
    /// The longest one `qemu-img` run of an image import may take, wall clock
    /// (and CPU); it is killed then.
    pub qemu_img_timeout_secs: u64,
    /// The address space one `qemu-img` run of an image import may use.
    pub qemu_img_memory_mib: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QemuAccel {
    Auto,
    Kvm,
    Tcg,
}

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text: only for a relay on the same host or a test server.
    None,
    /// Upgrade with STARTTLS (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// The defaults, as a serialisable layer under the file and the environment.
#[derive(Serialize)]
struct Defaults {
    bind: &'static str,
    data_dir: &'static str,
    log_format: LogFormat,
    database_max_connections: u32,
    redis_prefix: &'static str,
    request_timeout_secs: u64,
    body_limit_bytes: usize,
    shutdown_timeout_secs: u64,
    worker_concurrency: usize,
    worker_poll_interval_ms: u64,
    job_visibility_timeout_secs: u64,
    cors_allowed_origins: [&'static str; 0],
    trusted_proxies: [&'static str; 0],
    smtp_port: u16,
    smtp_tls: SmtpTls,
    mail_from: &'static str,
    jwt_previous_keys: [&'static str; 0],
    local_node: bool,
    local_region: &'static str,
    qemu_accel: QemuAccel,
    guest_internal_networks: [&'static str; 5],
    qemu_passt: bool,
    ssh_bind: &'static str,
    ssh_port_min: u16,
    ssh_port_max: u16,
    guest_boot_timeout_secs: u64,
    guest_stop_timeout_secs: u64,
    reconcile_interval_secs: u64,
    metrics_interval_secs: u64,
    billing_accrual_interval_secs: u64,
    stripe_api_base: &'static str,
    image_download_allowed_hosts: [&'static str; 0],
    image_download_allowed_networks: [&'static str; 0],
    qemu_img_timeout_secs: u64,
    qemu_img_memory_mib: u64,
}

const DEFAULTS: Defaults = Defaults {
    bind: "127.0.0.1:8080",
    data_dir: "./data",
    log_format: LogFormat::Text,
    database_max_connections: 10,
    redis_prefix: "vmcloud:",
    request_timeout_secs: 30,
    body_limit_bytes: 1024 * 1024,
    shutdown_timeout_secs: 20,
    worker_concurrency: 4,
    worker_poll_interval_ms: 1000,
    job_visibility_timeout_secs: 300,
    cors_allowed_origins: [],
    trusted_proxies: [],
    smtp_port: 587,
    smtp_tls: SmtpTls::Starttls,
    mail_from: "VMCloud <noreply@localhost>",
    jwt_previous_keys: [],
    local_node: true,
    local_region: "local",
    qemu_accel: QemuAccel::Auto,
    guest_internal_networks: vmcloud_hypervisor::guest_firewall::DEFAULT_INTERNAL_NETWORKS,
    qemu_passt: false,
    ssh_bind: "0.0.0.0",
    ssh_port_min: 22000,
    ssh_port_max: 22999,
    guest_boot_timeout_secs: 300,
    guest_stop_timeout_secs: 60,
    reconcile_interval_secs: 30,
    metrics_interval_secs: 10,
    billing_accrual_interval_secs: 300,
    stripe_api_base: "https://api.stripe.com",
    image_download_allowed_hosts: [],
    image_download_allowed_networks: [],
    qemu_img_timeout_secs: 1800,
    qemu_img_memory_mib: 1024,
};

/// Unprefixed variables that deployment platforms conventionally set.
const CONVENTIONAL_ENV: [&str; 3] = ["DATABASE_URL", "DATABASE_READ_URL", "REDIS_URL"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads and validates the configuration. `file` is an explicit
    /// `--config`; without one, `vmcloud.toml` in the working directory is
    /// read if present. Relative paths, in the file too, are taken from the
    /// working directory.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let file = match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => Some(path.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
        };
        let mut config = Self::from_figment(&Self::figment(file.as_deref()))?;
        config.make_paths_absolute()?;
        Ok(config)
    }

    /// Makes every path setting absolute against the working directory, so
    /// none reaches code that runs elsewhere (QEMU, libvirt, workers) or
    /// refuses relative paths (the hypervisor drivers). A new path setting
    /// belongs in this list.
    pub fn make_paths_absolute(&mut self) -> Result<(), ConfigError> {
        let settings = [
            ("data_dir", Some(&mut self.data_dir)),
            ("demo_image", self.demo_image.as_mut()),
            ("image_import_dir", self.image_import_dir.as_mut()),
        ];
        for (name, path) in settings {
            if let Some(path) = path {
                *path = std::path::absolute(&*path).map_err(|err| {
                    ConfigError::Invalid(format!("{name} {}: {err}", path.display()))
                })?;
            }
        }
        Ok(())
    }

    /// The built-in defaults alone, ignoring files and the environment: the
    /// starting point for tests and tools that configure in code.
    pub fn defaults() -> Self {
        Self::from_figment(&Figment::from(Serialized::defaults(DEFAULTS)))
            .expect("the defaults are valid")
    }

    fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(DEFAULTS));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment
            .merge(
                // `VMCLOUD_CONFIG` names the file and `VMCLOUD_TEST_*` belongs
                // to the test harness; neither is a setting.
                Env::prefixed("VMCLOUD_").filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    key != "config" && !key.starts_with("test_")
                }),
            )
            .merge(Env::raw().only(&CONVENTIONAL_ENV))
    }

    fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let config: Self = figment
            .extract()
            .map_err(|err| ConfigError::Invalid(one_line(&err)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting; [`Config::load`] does, and so must code that
    /// changes settings after it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        for (name, url) in [
            ("database_url", &self.database_url),
            ("database_read_url", &self.database_read_url),
        ] {
            if let Some(url) = url {
                let url = url.expose_secret();
                if !(url.starts_with("postgres://")
                    || url.starts_with("postgresql://")
                    || url.starts_with("sqlite:"))
                {
                    return invalid(format!(
                        "{name} must start with postgres://, postgresql:// or sqlite:"
                    ));
                }
            }
        }
        if self.database_read_url.is_some() && self.database_url.is_none() {
            return invalid("database_read_url needs database_url".into());
        }
        if let Some(url) = &self.redis_url {
            let url = url.expose_secret();
            if !["redis://", "rediss://", "unix://", "redis+unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
            {
                return invalid("redis_url must start with redis://, rediss:// or unix://".into());
            }
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid("public_url must start with http:// or https://".into());
        }
        if self
            .metrics_token
            .as_ref()
            .is_some_and(|token| token.expose_secret().trim().len() < 16)
        {
            return invalid("metrics_token must be at least 16 characters".into());
        }
        if !(self.stripe_api_base.starts_with("http://")
            || self.stripe_api_base.starts_with("https://"))
        {
            return invalid("stripe_api_base must start with http:// or https://".into());
        }
        for origin in &self.cors_allowed_origins {
            if origin == "*" || !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return invalid(format!(
                    "cors_allowed_origins entry {origin:?} must be an http(s) origin, not a wildcard"
                ));
            }
        }
        if self.mail_from.parse::<lettre::message::Mailbox>().is_err() {
            return invalid(format!(
                "mail_from {:?} is not an email address",
                self.mail_from
            ));
        }
        if self.redis_prefix.is_empty() {
            return invalid("redis_prefix must not be empty".into());
        }
        if crate::validation::check_slug("local_region", &self.local_region).is_some() {
            return invalid(format!(
                "local_region {:?} must be a slug (lower-case letters, digits, dashes)",
                self.local_region
            ));
        }
        if self.ssh_port_min == 0 || self.ssh_port_min > self.ssh_port_max {
            return invalid(format!(
                "ssh_port_min..ssh_port_max must be a non-empty range of ports, got {}..{}",
                self.ssh_port_min, self.ssh_port_max
            ));
        }
        if let Some(level) = &self.log_level
            && let Err(err) = tracing_subscriber::EnvFilter::try_new(level)
        {
            return invalid(format!("log_level {level:?}: {err}"));
        }
        for (name, value, min, max) in [
            (
                "database_max_connections",
                u64::from(self.database_max_connections),
                1,
                1000,
            ),
            ("request_timeout_secs", self.request_timeout_secs, 1, 3600),
            (
                "body_limit_bytes",
                self.body_limit_bytes as u64,
                1024,
                1 << 30,
            ),
            ("shutdown_timeout_secs", self.shutdown_timeout_secs, 1, 3600),
            (
                "worker_concurrency",
                self.worker_concurrency as u64,
                1,
                1024,
            ),
            (
                "worker_poll_interval_ms",
                self.worker_poll_interval_ms,
                10,
                60_000,
            ),
            (
                "job_visibility_timeout_secs",
                self.job_visibility_timeout_secs,
                5,
                86_400,
            ),
            (
                "guest_boot_timeout_secs",
                self.guest_boot_timeout_secs,
                5,
                3600,
            ),
            (
                "guest_stop_timeout_secs",
                self.guest_stop_timeout_secs,
                1,
                3600,
            ),
            (
                "reconcile_interval_secs",
                self.reconcile_interval_secs,
                1,
                86_400,
            ),
            ("metrics_interval_secs", self.metrics_interval_secs, 1, 3600),
            (
                "billing_accrual_interval_secs",
                self.billing_accrual_interval_secs,
                1,
                3600,
            ),
            (
                "qemu_img_timeout_secs",
                self.qemu_img_timeout_secs,
                1,
                86_400,
            ),
            ("qemu_img_memory_mib", self.qemu_img_memory_mib, 256, 65_536),
        ] {
            if !(min..=max).contains(&value) {
                return invalid(format!(
                    "{name} must be between {min} and {max}, got {value}"
                ));
            }
        }
        Ok(())
    }

    pub fn database(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self.database_url.clone(),
            read_url: self.database_read_url.clone(),
            data_dir: self.data_dir.clone(),
            max_connections: self.database_max_connections,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Where users reach the platform, without a trailing slash.
    pub fn public_url(&self) -> String {
        self.public_url.as_ref().map_or_else(
            || format!("http://{}", self.bind),
            |url| url.trim_end_matches('/').to_owned(),
        )
    }

    /// The host customers SSH to, shown in each instance's `ssh.command`.
    pub fn ssh_host(&self) -> String {
        self.ssh_host.clone().unwrap_or_else(|| {
            let url = self.public_url();
            let authority = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
            let authority = authority.split('/').next().unwrap_or(authority);
            match authority.rsplit_once(':') {
                // An IPv6 literal keeps its brackets off: `[::1]:8080` → `::1`.
                Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                _ => authority.to_owned(),
            }
        })
    }

    /// Whether users reach the platform over TLS (HSTS, `Secure` cookies).
    pub fn served_over_tls(&self) -> bool {
        self.public_url().starts_with("https://")
    }

    /// Where path sources of image imports must lie, as configured
    /// (start-up makes it absolute and creates it).
    pub fn image_import_dir(&self) -> PathBuf {
        self.image_import_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("imports"))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

/// Figment errors can span lines; start-up failures are reported on one.
fn one_line(err: &figment::Error) -> String {
    err.clone()
        .into_iter()
        .map(|e| {
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
// figment's error type is large; it only travels through these tests.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use super::*;

    fn load_in(jail: &Jail, file: Option<&str>) -> Result<Config, ConfigError> {
        let path = file.map(|name| jail.directory().join(name));
        Config::load(path.as_deref())
    }

    #[test]
    fn defaults_apply_without_file_or_environment() {
        Jail::expect_with(|jail| {
            let config = load_in(jail, None).expect("defaults are valid");
            assert_eq!(config.bind, "127.0.0.1:8080".parse().expect("addr"));
            assert_eq!(config.data_dir, jail.directory().join("data"));
            assert_eq!(config.log_format, LogFormat::Text);
            assert_eq!(config.log_level, None);
            assert!(config.database_url.is_none());
            assert!(config.redis_url.is_none());
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                "bind = \"0.0.0.0:9000\"\nlog_format = \"json\"\ndata_dir = \"/srv/vmcloud\"",
            )?;
            jail.set_env("VMCLOUD_BIND", "127.0.0.1:7000");
            jail.set_env("DATABASE_URL", "postgres://vm:pw@db/vmcloud");
            let config = load_in(jail, Some("custom.toml")).expect("valid");
            assert_eq!(config.bind, "127.0.0.1:7000".parse().expect("addr"));
            assert_eq!(config.log_format, LogFormat::Json);
            assert_eq!(config.data_dir, PathBuf::from("/srv/vmcloud"));
            assert_eq!(
                config
                    .database_url
                    .as_ref()
                    .map(secrecy::ExposeSecret::expose_secret),
                Some("postgres://vm:pw@db/vmcloud")
            );
            Ok(())
        });
    }

    #[test]
    fn vmcloud_toml_in_the_working_directory_is_read_by_default() {
        Jail::expect_with(|jail| {
            jail.create_file(DEFAULT_CONFIG_FILE, "worker_concurrency = 9")?;
            assert_eq!(load_in(jail, None).expect("valid").worker_concurrency, 9);
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_cause_on_one_line() {
        Jail::expect_with(|jail| {
            let missing = load_in(jail, Some("nope.toml")).expect_err("missing file");
            assert!(missing.to_string().contains("nope.toml"));

            jail.create_file("bad.toml", "bind = [1, 2")?;
            let unreadable = load_in(jail, Some("bad.toml")).expect_err("bad toml");
            assert!(!unreadable.to_string().contains('\n'), "{unreadable}");

            jail.create_file("unknown.toml", "bnid = \"x\"")?;
            let unknown = load_in(jail, Some("unknown.toml")).expect_err("unknown key");
            assert!(unknown.to_string().contains("bnid"), "{unknown}");

            jail.set_env("VMCLOUD_BIND", "not-an-address");
            let bad_value = load_in(jail, None).expect_err("bad bind");
            assert!(
                bad_value.to_string().to_lowercase().contains("bind"),
                "{bad_value}"
            );
            Ok(())
        });
    }

    #[test]
    fn values_are_validated() {
        Jail::expect_with(|jail| {
            jail.set_env("VMCLOUD_LOG_FORMAT", "xml");
            assert!(load_in(jail, None).is_err());
            jail.set_env("VMCLOUD_LOG_FORMAT", "json");

            jail.set_env("DATABASE_URL", "mysql://x");
            let err = load_in(jail, None).expect_err("unsupported database");
            assert!(err.to_string().contains("database_url"), "{err}");
            jail.set_env("DATABASE_URL", "postgres://localhost/x");

            jail.set_env("REDIS_URL", "http://cache");
            assert!(load_in(jail, None).is_err());
            jail.set_env("REDIS_URL", "redis://127.0.0.1");

            jail.set_env("VMCLOUD_CORS_ALLOWED_ORIGINS", "[\"*\"]");
            assert!(load_in(jail, None).is_err(), "no wildcard origin");
            jail.set_env(
                "VMCLOUD_CORS_ALLOWED_ORIGINS",
                "[\"https://console.example.com\"]",
            );

            jail.set_env("VMCLOUD_MAIL_FROM", "not an address");
            assert!(load_in(jail, None).is_err());
            jail.set_env("VMCLOUD_MAIL_FROM", "Cloud <noreply@example.com>");

            jail.set_env("VMCLOUD_WORKER_CONCURRENCY", "0");
            let err = load_in(jail, None).expect_err("zero workers");
            assert!(err.to_string().contains("worker_concurrency"), "{err}");
            jail.set_env("VMCLOUD_WORKER_CONCURRENCY", "2");
            jail.set_env("VMCLOUD_STRIPE_API_BASE", "api.stripe.com");
            let err = load_in(jail, None).expect_err("no scheme");
            assert!(err.to_string().contains("stripe_api_base"), "{err}");
            jail.set_env("VMCLOUD_STRIPE_API_BASE", "http://127.0.0.1:12111");

            let config = load_in(jail, None).expect("valid again");
            assert_eq!(config.stripe_api_base, "http://127.0.0.1:12111");
            assert_eq!(config.cors_allowed_origins, ["https://console.example.com"]);
            Ok(())
        });
    }

    #[test]
    fn guest_internal_networks_default_to_private_ranges_and_can_be_replaced() {
        Jail::expect_with(|jail| {
            let config = load_in(jail, None).expect("defaults");
            assert_eq!(
                config.guest_internal_networks,
                vmcloud_hypervisor::guest_firewall::default_internal_networks()
            );
            jail.set_env(
                "VMCLOUD_GUEST_INTERNAL_NETWORKS",
                "[\"10.20.0.0/16\", \"fd12::/48\"]",
            );
            let config = load_in(jail, None).expect("valid");
            assert_eq!(
                config.guest_internal_networks,
                [
                    "10.20.0.0/16".parse::<ipnet::IpNet>().expect("net"),
                    "fd12::/48".parse().expect("net")
                ]
            );
            jail.set_env("VMCLOUD_GUEST_INTERNAL_NETWORKS", "[\"10.20.0.0\"]");
            assert!(load_in(jail, None).is_err(), "a network needs its prefix");
            Ok(())
        });
    }

    #[test]
    fn image_import_settings_are_parsed_and_checked() {
        Jail::expect_with(|jail| {
            let config = load_in(jail, None).expect("defaults");
            assert_eq!(
                config.image_import_dir(),
                jail.directory().join("data/imports")
            );
            assert!(config.image_download_allowed_hosts.is_empty());
            jail.set_env("VMCLOUD_IMAGE_IMPORT_DIR", "/srv/images");
            jail.set_env(
                "VMCLOUD_IMAGE_DOWNLOAD_ALLOWED_HOSTS",
                "[\"mirror.internal:8080\", \"10.0.0.5\"]",
            );
            jail.set_env(
                "VMCLOUD_IMAGE_DOWNLOAD_ALLOWED_NETWORKS",
                "[\"10.20.0.0/16\"]",
            );
            let config = load_in(jail, None).expect("valid");
            assert_eq!(config.image_import_dir(), PathBuf::from("/srv/images"));
            assert_eq!(config.image_download_allowed_hosts.len(), 2);
            assert_eq!(
                config.image_download_allowed_networks,
                ["10.20.0.0/16".parse::<ipnet::IpNet>().expect("net")]
            );
            jail.set_env(
                "VMCLOUD_IMAGE_DOWNLOAD_ALLOWED_HOSTS",
                "[\"http://mirror\"]",
            );
            let err = load_in(jail, None).expect_err("a URL is no host");
            assert!(
                err.to_string()
                    .to_lowercase()
                    .contains("image_download_allowed_hosts"),
                "{err}"
            );
            jail.set_env("VMCLOUD_IMAGE_DOWNLOAD_ALLOWED_HOSTS", "[]");
            jail.set_env("VMCLOUD_IMAGE_DOWNLOAD_ALLOWED_NETWORKS", "[\"10.20.0.0\"]");
            assert!(load_in(jail, None).is_err(), "a network needs its prefix");
            Ok(())
        });
    }

    #[test]
    fn relative_paths_are_taken_from_the_working_directory() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "paths.toml",
                "data_dir = \"state\"\nimage_import_dir = \"./incoming\"",
            )?;
            jail.set_env("VMCLOUD_DEMO_IMAGE", "guest/disk.qcow2");
            let config = load_in(jail, Some("paths.toml")).expect("valid");
            let here = jail.directory();
            assert_eq!(config.data_dir, here.join("state"));
            assert_eq!(config.image_import_dir(), here.join("incoming"));
            assert_eq!(config.demo_image, Some(here.join("guest/disk.qcow2")));

            jail.clear_env();
            jail.set_env("VMCLOUD_DATA_DIR", "/srv/vmcloud");
            let config = load_in(jail, None).expect("valid");
            assert_eq!(config.data_dir, PathBuf::from("/srv/vmcloud"));
            assert_eq!(
                config.image_import_dir(),
                PathBuf::from("/srv/vmcloud/imports")
            );
            Ok(())
        });
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "postgres://vm:hunter2hunter2@db/vmcloud");
            jail.set_env("REDIS_URL", "redis://:s3cr3t-redis@cache:6379");
            jail.set_env("VMCLOUD_STRIPE_SECRET_KEY", "sk_live_n0tsh0wn");
            let config = load_in(jail, None).expect("valid");
            assert_eq!(
                config
                    .stripe_secret_key
                    .as_ref()
                    .map(secrecy::ExposeSecret::expose_secret),
                Some("sk_live_n0tsh0wn")
            );
            let printed = format!("{config:?} {:?}", config.database());
            assert!(!printed.contains("hunter2"), "{printed}");
            assert!(!printed.contains("s3cr3t"), "{printed}");
            assert!(!printed.contains("n0tsh0wn"), "{printed}");
            Ok(())
        });
    }

    #[test]
    fn test_harness_variables_are_not_settings() {
        Jail::expect_with(|jail| {
            jail.set_env("VMCLOUD_TEST_DATABASE_URL", "postgres://localhost/test");
            jail.set_env("VMCLOUD_CONFIG", "elsewhere.toml");
            load_in(jail, None).expect("ignored");
            Ok(())
        });
    }
}
