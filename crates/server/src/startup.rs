//! Builds the platform from its configuration and runs it until told to stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::db::Database;
use crate::http::{self, AppState};
use crate::jobs::{Backoff, JobQueue, WorkerConfig, WorkerPool};
use crate::mail::{Mailer, outbox};
use crate::modules::auth::keys::KeyRing;
use crate::modules::auth::sealing::Sealer;
use crate::modules::auth::two_factor;
use crate::modules::billing::stripe_client::StripeClient;
use crate::modules::instances::console::SerialHubs;
use crate::modules::instances::metrics::{LatestReadings, Sampler};
use crate::modules::instances::queue::{self, RunSettings, Runner};
use crate::modules::instances::reconcile::Reconciler;
use crate::modules::nodes;
use crate::modules::nodes::drivers::Drivers;
use crate::modules::products::image_file::ImageTool;
use crate::modules::products::image_source::SourcePolicy;
use crate::modules::products::{demo, images};
use crate::modules::users::UserViews;
use crate::modules::users::flows;
use crate::modules::{billing, support};
use crate::realtime;
use crate::telemetry;

/// What this process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// API, workers and the local node in one process.
    Serve,
    /// Workers only; HTTP serves the probes and metrics.
    Worker,
}

#[derive(Debug)]
pub struct Application {
    role: Role,
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Connects to everything, applies migrations and binds the listener.
    /// Each failure names its cause.
    pub async fn build(config: Config, role: Role) -> anyhow::Result<Self> {
        Self::build_with_clock(config, role, Arc::new(SystemClock)).await
    }

    /// Like [`Self::build`], with the platform's time read from `clock`
    /// (tests simulate billing hours with a settable one).
    pub async fn build_with_clock(
        mut config: Config,
        role: Role,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        // Whatever the database backend, the data directory holds the signing
        // keys, the setup token and attachments.
        crate::private_files::create_dir(&config.data_dir)
            .with_context(|| format!("preparing data_dir {}", config.data_dir.display()))?;
        // Resolved once, here: relative to the working directory at start.
        let import_dir =
            std::path::absolute(config.image_import_dir()).context("resolving image_import_dir")?;
        config.image_import_dir = Some(images::prepare_import_dir(&import_dir).await?);
        let db = Database::connect(&config.database()).await?;
        db.migrate().await?;
        let cache = Cache::connect(config.redis_url.as_ref(), &config.redis_prefix).await?;
        let jobs = match &config.redis_url {
            Some(url) => JobQueue::redis(url, &config.redis_prefix).await?,
            None => JobQueue::database(db.clone()),
        };
        let keys = KeyRing::load(
            config.jwt_signing_key.as_ref(),
            &config.jwt_previous_keys,
            &config.data_dir,
        )?;
        let sealer = Sealer::load(&config.data_dir)?;
        let resealed = two_factor::reseal_secrets(&db, &sealer).await?;
        if resealed > 0 {
            tracing::info!(resealed, "sealed stored TOTP secrets under the current key");
        }
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.bind))?;
        if role == Role::Serve && config.local_node {
            nodes::ensure_local_node(&db, &config.data_dir, &config.local_region).await?;
        }
        if role == Role::Serve
            && let Some(image) = &config.demo_image
        {
            let sources = SourcePolicy::new(&config);
            demo::seed(&db, &cache, &jobs, &sources, &config.local_region, image).await?;
        }
        if role == Role::Serve
            && let Some(token_file) = flows::write_setup_token(&db, &config.data_dir).await?
        {
            tracing::warn!(
                "no admin account yet: run `vmcloud admin create-user --role admin`, or within \
                 the hour POST the token in {} with email, password and name to \
                 /api/v1/auth/setup",
                token_file.display()
            );
        }
        tracing::info!(
            database = ?db.backend(),
            cache = cache.backend_name(),
            elapsed_ms = started.elapsed().as_millis(),
            "platform initialised"
        );
        let mailer = Mailer::from_config(&config)?;
        if !mailer.uses_smtp() {
            tracing::warn!(
                "no SMTP server configured: emails go to the log and the outbox (GET /api/v1/admin/outbox)"
            );
        }
        let payments = match &config.stripe_secret_key {
            Some(key) => Some(
                Arc::new(StripeClient::new(&config.stripe_api_base, key.clone())?)
                    as billing::payments::SharedProvider,
            ),
            None => None,
        };
        let user_views_cache = cache.clone();
        let config_accel = config.qemu_accel;
        let guest_internal_networks = config.guest_internal_networks.clone();
        let qemu_passt = config.qemu_passt;
        Ok(Self {
            role,
            listener,
            state: AppState {
                config: Arc::new(config),
                db,
                cache,
                jobs,
                metrics: telemetry::prometheus().clone(),
                keys: Arc::new(keys),
                sealer: Arc::new(sealer),
                user_views: UserViews::new(user_views_cache),
                mailer,
                drivers: Drivers::new(config_accel, guest_internal_networks, qemu_passt),
                serial_hubs: SerialHubs::default(),
                instance_readings: LatestReadings::default(),
                clock,
                payments,
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets
    /// in-flight requests and jobs finish within the configured bound, and
    /// closes the pools.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            role,
            listener,
            state,
        } = self;
        let grace = state.config.shutdown_timeout();
        let workers = tokio::spawn(worker_pool(&state).run(shutdown.child_token()));
        let views = tokio::spawn(state.user_views.clone().listen(shutdown.child_token()));
        let reconciler = tokio::spawn(Reconciler::default().run(
            instance_runner(&state),
            Duration::from_secs(state.config.reconcile_interval_secs),
            shutdown.child_token(),
        ));
        let sampler = tokio::spawn(
            Sampler::new(
                state.instances(),
                state.instance_readings.clone(),
                Duration::from_secs(state.config.metrics_interval_secs),
            )
            .run(shutdown.child_token()),
        );
        let accrual = tokio::spawn(billing::run_accrual(
            state.billing(),
            Duration::from_secs(state.config.billing_accrual_interval_secs),
            shutdown.child_token(),
        ));
        let auto_close = tokio::spawn(support::run_auto_close(
            state.support(),
            support::AUTO_CLOSE_INTERVAL,
            shutdown.child_token(),
        ));
        let (router, realtime) = match role {
            Role::Serve => {
                let (layer, io) = realtime::layer(&state);
                let relay = realtime::run(io, state.cache.clone(), shutdown.child_token());
                (
                    http::router(state.clone())
                        .layer(layer)
                        .layer(axum::middleware::map_request(realtime::detach_head)),
                    Some(tokio::spawn(relay)),
                )
            }
            Role::Worker => (http::probe_router(state.clone()), None),
        };
        let mut server = tokio::spawn(
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
        );
        let served = tokio::select! {
            // The server only ends by itself on an I/O error.
            joined = &mut server => joined,
            () = shutdown.cancelled() => {
                tracing::info!("shutting down");
                if let Ok(joined) = tokio::time::timeout(grace, &mut server).await {
                    joined
                } else {
                    tracing::warn!(?grace, "in-flight requests outlived the shutdown bound");
                    server.abort();
                    Ok(Ok(()))
                }
            }
        };
        shutdown.cancel();
        // The pool bounds its own drain by the same grace period.
        workers.await.context("worker pool task failed")?;
        reconciler.await.context("reconciler task failed")?;
        sampler.await.context("metrics sampler task failed")?;
        accrual.await.context("usage accrual task failed")?;
        auto_close.await.context("ticket auto-close task failed")?;
        if let Some(realtime) = realtime {
            realtime.await.context("real-time task failed")?;
        }
        if let Err(err) = views.await.context("view invalidation task failed")? {
            tracing::warn!(error = %err, "view invalidation listener stopped");
        }
        state.db.close().await;
        served.context("HTTP server task failed")??;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The background workers of this process. Modules register the handlers of
/// their job kinds here.
fn worker_pool(state: &AppState) -> WorkerPool {
    let config = &state.config;
    let mut pool = WorkerPool::new(
        state.jobs.clone(),
        WorkerConfig {
            concurrency: config.worker_concurrency,
            poll_interval: Duration::from_millis(config.worker_poll_interval_ms),
            visibility_timeout: Duration::from_secs(config.job_visibility_timeout_secs),
            backoff: Backoff::default(),
            drain_timeout: config.shutdown_timeout(),
        },
    );
    let (db, mailer) = (state.db.clone(), state.mailer.clone());
    pool.register_fn(outbox::SEND_JOB, move |ctx, payload| {
        let (db, mailer) = (db.clone(), mailer.clone());
        async move { outbox::deliver(&db, &mailer, &ctx, payload).await }
    });
    let (db, jobs, public_url) = (state.db.clone(), state.jobs.clone(), config.public_url());
    pool.register_fn(flows::PASSWORD_RESET_JOB, move |_, payload| {
        let (db, jobs, public_url) = (db.clone(), jobs.clone(), public_url.clone());
        async move { flows::run_password_reset_request(&db, &jobs, &public_url, payload).await }
    });
    let db = state.db.clone();
    let importer = images::Importer {
        data_dir: config.data_dir.clone(),
        sources: SourcePolicy::new(config),
        tool: ImageTool {
            program: "qemu-img".into(),
            timeout: Duration::from_secs(config.qemu_img_timeout_secs),
            memory_bytes: config.qemu_img_memory_mib << 20,
        },
    };
    pool.register_fn(images::IMPORT_JOB, move |_, payload| {
        let (db, importer) = (db.clone(), importer.clone());
        async move { images::run_import(&db, &importer, payload).await }
    });
    let runner = instance_runner(state);
    pool.register_fn(queue::JOB, move |ctx, payload| {
        let runner = runner.clone();
        async move { queue::run_job(&runner, ctx, payload).await }
    });
    pool
}

/// What runs the instances' queues and the reconciler.
fn instance_runner(state: &AppState) -> Runner {
    let config = &state.config;
    Runner {
        services: state.instances(),
        settings: RunSettings {
            ssh_bind: config.ssh_bind,
            ssh_ports: config.ssh_port_min..=config.ssh_port_max,
            boot_timeout: Duration::from_secs(config.guest_boot_timeout_secs),
            stop_timeout: Duration::from_secs(config.guest_stop_timeout_secs),
        },
    }
}

/// Installs the SIGINT and SIGTERM handlers now, so a signal that arrives
/// before the returned future is first polled (during start-up) still stops
/// the process gracefully, and resolves on the first of them.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
