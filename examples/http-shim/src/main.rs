//! `jitflow-shim`: serves the JIT REST contract over an embedded jitflow engine (`serve`, the
//! default), or mints a bearer token (`token`). Every setting has a flag and an environment
//! variable; `jitflow-shim --help` lists them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jitflow::Engine;
use jitflow_shim::auth::claims::{Layout, Name};
use jitflow_shim::auth::jwks::{self, Jwks, Remote};
use jitflow_shim::auth::{Keys, Level, Provider};
use jitflow_shim::demo::{self, DemoProvisioner};
use jitflow_shim::partitions::{Opener, Partitions, balance};
use jitflow_shim::{AppState, start};
use jitflow_store::backend::Partition;
use jitflow_store_pg::Membership;

/// The redb file's name in the data directory.
const STORE_FILE: &str = "jitflow.redb";

#[derive(Debug, Parser)]
#[command(
    name = "jitflow-shim",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the REST contract (the default).
    Serve(Serve),
    /// Print a bearer token (HS256) for a tenant, identity, scopes and levels.
    Token(Token),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
struct Serve {
    /// Address to listen on.
    #[arg(long, env = "JITFLOW_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    secrets: Secrets,
    /// Boxed: its many settings would make `Serve` dwarf the other commands.
    #[command(flatten)]
    provider: Box<IdentityProvider>,
    /// Log format.
    #[arg(long, env = "JITFLOW_LOG_FORMAT", value_enum, default_value = "human")]
    log_format: LogFormat,
    /// Log filter (tracing-subscriber's EnvFilter syntax).
    #[arg(long, env = "JITFLOW_LOG", default_value = "info")]
    log: String,
    /// Load the demo tenant `acme` (identities alice, bob and admin; four connections; a policy).
    #[arg(long, env = "JITFLOW_DEMO")]
    demo: bool,
    /// Fraction (0.0..=1.0) of the demo provisioner's grants and revokes that fail, to show
    /// retries.
    #[arg(long, env = "JITFLOW_DEMO_FAIL_RATE", default_value_t = 0.0)]
    demo_fail_rate: f64,
    /// Fraction (0.0..=1.0) of the demo provisioner's revokes that are dropped silently: they
    /// answer success and the access stays, so that the reconciliation finds the drift and
    /// revokes it again.
    #[arg(long, env = "JITFLOW_DEMO_DROP_RATE", default_value = "0", value_parser = demo::parse_rate)]
    demo_drop_rate: f64,
    #[command(flatten)]
    store: StoreArgs,
    /// An engine setting, NAME=VALUE (repeatable, or comma-separated in the variable), e.g.
    /// `retry_cap=1m`. Names: grant_max_attempts, stuck_after, retry_base, retry_cap,
    /// warning_lead, batch_max, queue_capacity, effects_in_flight, effect_timeout,
    /// timer_window, max_sleep, idempotency_ttl, notify_timeout, notify_retry_base,
    /// notify_retry_cap, reconcile_rate, reconcile_interval, reconcile_in_flight (with --demo
    /// the reconciliation is on: 20 connections a second, every 30s).
    #[arg(long = "engine", env = "JITFLOW_ENGINE", value_delimiter = ',')]
    engine: Vec<String>,
    #[command(flatten)]
    notify: Notify,
}

/// Where notices go: webhook receivers, signed per Standard Webhooks.
#[derive(Debug, Args)]
struct Notify {
    /// A webhook receiver (repeatable, or comma-separated in the variable; at most 16): every
    /// notice is POSTed to each as signed JSON. Plain http (this build has no TLS: behind TLS
    /// use a local proxy). Retries: --engine notify_retry_base, notify_retry_cap,
    /// notify_timeout.
    #[arg(long = "notify-url", env = "JITFLOW_NOTIFY_URL", value_delimiter = ',')]
    notify_urls: Vec<String>,
    /// The signing secret, `whsec_` and the base64 of 24 to 64 random bytes (e.g.
    /// `whsec_$(head -c 32 /dev/urandom | base64)`). Prefer --notify-secret-file.
    #[arg(
        long = "notify-secret",
        env = "JITFLOW_NOTIFY_SECRET",
        hide_env_values = true,
        conflicts_with = "notify_secret_file"
    )]
    notify_secret: Option<String>,
    /// A file holding the signing secret.
    #[arg(long = "notify-secret-file", env = "JITFLOW_NOTIFY_SECRET_FILE")]
    notify_secret_file: Option<PathBuf>,
    /// The bound on one POST to a receiver (keep it below the engine's notify_timeout, 30s by
    /// default).
    #[arg(long = "notify-timeout", env = "JITFLOW_NOTIFY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    notify_timeout: Duration,
}

impl Notify {
    /// The webhook notifier of these settings; in demo mode it also logs each delivered notice
    /// (with no URL, it only logs). `None` when neither is asked for.
    fn webhook(&self, demo: bool) -> Result<Option<jitflow_webhook::Webhook>, BoxError> {
        if self.notify_urls.is_empty() && !demo {
            if self.notify_secret.is_some() || self.notify_secret_file.is_some() {
                return Err("--notify-secret without --notify-url: nothing would be sent".into());
            }
            return Ok(None);
        }
        let text = match (&self.notify_secret, &self.notify_secret_file) {
            (Some(text), _) => Some(text.clone()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| format!("--notify-secret-file {}: {e}", file.display()))?,
            ),
            (None, None) => None,
        };
        let secret = text
            .map(|t| jitflow_webhook::Secret::parse(&t))
            .transpose()
            .map_err(|e| format!("--notify-secret: {e}"))?;
        let options = jitflow_webhook::Options {
            urls: self.notify_urls.clone(),
            secret,
            timeout: self.notify_timeout,
            connect_timeout: self.notify_timeout.min(Duration::from_secs(5)),
            log_delivered: demo,
            ..jitflow_webhook::Options::default()
        };
        Ok(Some(jitflow_webhook::Webhook::new(options)?))
    }
}

#[derive(Debug, Args)]
struct Token {
    /// The tenant id.
    #[arg(long)]
    tenant: String,
    /// The caller's identity id (the `sub` claim).
    #[arg(long)]
    identity: String,
    /// A scope (repeatable), e.g. idn:jit-activation-workflow:activate.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// A user level (repeatable).
    #[arg(long = "level", value_enum)]
    levels: Vec<Level>,
    /// How long the token is valid, e.g. 1h or 30m.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    #[command(flatten)]
    secrets: Secrets,
}

/// An identity provider whose RS256 and ES256 tokens are accepted beside the secret's.
#[derive(Debug, Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("jwks").args(["jwks_file", "jwks_url"])))]
struct IdentityProvider {
    /// A JWKS file (RFC 7517, at most 64 KiB and 32 keys) whose RSA and EC P-256 keys verify an
    /// identity provider's RS256 and ES256 tokens, by `kid`. Read at start only: restart after
    /// changing it.
    #[arg(long, env = "JITFLOW_JWKS_FILE", requires_all = ["issuers", "audiences"])]
    jwks_file: Option<PathBuf>,
    /// A JWKS URL, plain http (this build has no TLS: behind TLS use a local sidecar or
    /// --jwks-file). Fetched at start, cached, fetched again when older than --jwks-max-age or
    /// when a token names an unknown kid, at most once per --jwks-cooldown.
    #[arg(long, env = "JITFLOW_JWKS_URL", requires_all = ["issuers", "audiences"])]
    jwks_url: Option<String>,
    /// How old a fetched key set may get before it is fetched again.
    #[arg(long, env = "JITFLOW_JWKS_MAX_AGE", default_value = "10m", value_parser = humantime::parse_duration, requires = "jwks_url")]
    jwks_max_age: Duration,
    /// The least time between two fetches of the key set (after the first).
    #[arg(long, env = "JITFLOW_JWKS_COOLDOWN", default_value = "30s", value_parser = humantime::parse_duration, requires = "jwks_url")]
    jwks_cooldown: Duration,
    /// The bound on one fetch of the key set, from connecting to the last byte.
    #[arg(long, env = "JITFLOW_JWKS_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration, requires = "jwks_url")]
    jwks_timeout: Duration,
    /// An issuer (`iss`) the provider's tokens may carry (repeatable; required with a JWKS).
    #[arg(
        long = "issuer",
        id = "issuers",
        env = "JITFLOW_ISSUER",
        value_delimiter = ',',
        requires = "jwks"
    )]
    issuers: Vec<String>,
    /// An audience (`aud`) the provider's tokens must carry one of (repeatable; required with a
    /// JWKS).
    #[arg(
        long = "audience",
        id = "audiences",
        env = "JITFLOW_AUDIENCE",
        value_delimiter = ',',
        requires = "jwks"
    )]
    audiences: Vec<String>,
    /// The claim holding the tenant id: a top-level name, or a JSON Pointer starting with `/`.
    #[arg(
        long,
        env = "JITFLOW_TENANT_CLAIM",
        default_value = "tenant",
        requires = "jwks"
    )]
    tenant_claim: Name,
    /// The claim holding the caller's identity id (e.g. `oid` for Entra ID).
    #[arg(
        long,
        env = "JITFLOW_IDENTITY_CLAIM",
        default_value = "sub",
        requires = "jwks"
    )]
    identity_claim: Name,
    /// A claim holding scopes, as a space-separated string or a list (repeatable; the values of
    /// all are joined), e.g. `scp`, or `scope` and `permissions`.
    #[arg(
        long = "scope-claim",
        env = "JITFLOW_SCOPE_CLAIM",
        value_delimiter = ',',
        default_value = "scope",
        requires = "jwks"
    )]
    scope_claims: Vec<Name>,
    /// A claim holding user levels, as a string or a list (repeatable), e.g. `roles`, `groups`
    /// or `/realm_access/roles`. Values that are not USER, POLICY_ADMIN or ORG_ADMIN are ignored.
    #[arg(
        long = "levels-claim",
        env = "JITFLOW_LEVELS_CLAIM",
        value_delimiter = ',',
        default_value = "levels",
        requires = "jwks"
    )]
    levels_claims: Vec<Name>,
}

impl IdentityProvider {
    /// The provider of these settings, its keys read or fetched; `None` without a JWKS.
    async fn load(&self) -> Result<Option<Provider>, BoxError> {
        let keys: jwks::Source = if let Some(path) = &self.jwks_file {
            let jwks = Jwks::from_file(path)?;
            tracing::info!(file = %path.display(), keys = jwks.len(), "JWKS loaded");
            jwks.into()
        } else if let Some(url) = &self.jwks_url {
            let settings = jwks::Settings {
                max_age: self.jwks_max_age,
                cooldown: self.jwks_cooldown,
                timeout: self.jwks_timeout,
            };
            let remote = Remote::fetch(url, settings).await?;
            tracing::info!(url, "JWKS fetched");
            remote.into()
        } else {
            return Ok(None);
        };
        let layout = Layout {
            tenant: self.tenant_claim.clone(),
            identity: self.identity_claim.clone(),
            scopes: self.scope_claims.clone(),
            levels: self.levels_claims.clone(),
        };
        Ok(Some(Provider::new(
            keys,
            self.issuers.clone(),
            self.audiences.clone(),
            layout,
        )?))
    }
}

/// The PostgreSQL store (the redb file in --data-dir without it).
#[derive(Debug, Args)]
struct StoreArgs {
    /// Store in this PostgreSQL database instead of `<data-dir>/jitflow.redb`: a libpq
    /// connection string (`host=127.0.0.1 port=5432 user=jitflow dbname=jitflow`) or a
    /// `postgresql://` URL. Several shims may share one database: tenants are spread over
    /// --partitions, and each shim serves the partitions it leases, answering a request for
    /// another's with a 503 that names the owner (`jitflow-owner`, `jitflow-owner-address`).
    #[arg(
        long = "store",
        env = "JITFLOW_STORE",
        hide_env_values = true,
        requires = "node_id"
    )]
    url: Option<String>,
    /// With --store: this node's id, unique among the shims sharing the database (1..=128
    /// bytes). A shim restarted under its id takes its leases back at once.
    #[arg(long, env = "JITFLOW_NODE_ID")]
    node_id: Option<String>,
    /// With --store: how long a lease lasts unless renewed (renewed every third of it); a dead
    /// shim's partitions move to the others at most this long after it died. 1s..=10m.
    #[arg(long, env = "JITFLOW_LEASE", default_value = "15s", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// With --store: how many partitions tenants are spread over, 1..=1024. Fixed when the
    /// database is created: every shim sharing it must say the same. More partitions than
    /// shims lets the load spread evenly; each costs its shim a writer and a few connections.
    #[arg(long, env = "JITFLOW_PARTITIONS", default_value_t = 1)]
    partitions: u32,
    /// With --store: the address other shims name in their 503s as this one's (default:
    /// `http://` and the address it listens on).
    #[arg(long, env = "JITFLOW_ADVERTISE")]
    advertise: Option<String>,
}

impl StoreArgs {
    /// The PostgreSQL backend's settings when --store is given (leases of no partition yet:
    /// the balancing takes them); `None` for the redb file.
    fn settings(&self) -> Option<jitflow_store_pg::Config> {
        let (Some(url), Some(node_id)) = (&self.url, &self.node_id) else {
            return None;
        };
        let lease = jitflow_store_pg::LeaseOptions::new(self.lease);
        let mut settings = jitflow_store_pg::Config::new(url.clone(), node_id.clone(), lease);
        settings.partition_count = self.partitions;
        // Each partition's engine has a pool of its own.
        settings.snapshots_max = PARTITION_SNAPSHOTS;
        Some(settings)
    }
}

/// Snapshot connections per served partition: enough for the writer and a few readers, few
/// enough that a node serving many partitions stays within PostgreSQL's 100 connections.
const PARTITION_SNAPSHOTS: usize = 4;

/// Where the data lives and which secret signs tokens (shared by `serve` and `token`).
#[derive(Debug, Args)]
struct Secrets {
    /// Directory holding the store (`jitflow.redb`) and the generated secret (`secret`).
    #[arg(long, env = "JITFLOW_DATA_DIR", default_value = "./jitflow-data")]
    data_dir: PathBuf,
    /// The HS256 secret itself (32..=4096 bytes). Prefer --secret-file.
    #[arg(
        long,
        env = "JITFLOW_SECRET",
        hide_env_values = true,
        conflicts_with = "secret_file"
    )]
    secret: Option<String>,
    /// A file holding the HS256 secret. Without this or --secret, `<data-dir>/secret` is used;
    /// `serve` generates it (mode 0600) on first start.
    #[arg(long, env = "JITFLOW_SECRET_FILE")]
    secret_file: Option<PathBuf>,
}

impl Secrets {
    /// The keys from --secret, --secret-file or the data directory's secret (which `create`
    /// allows making). Returns whether a new secret file was made.
    fn keys(&self, create: bool) -> Result<(Keys, bool), BoxError> {
        if let Some(secret) = &self.secret {
            return Ok((Keys::from_secret(secret.as_bytes())?, false));
        }
        if let Some(file) = &self.secret_file {
            return Ok((Keys::from_file(file)?, false));
        }
        if create {
            return Ok(Keys::load_or_create(&self.data_dir)?);
        }
        let file = self.data_dir.join(jitflow_shim::auth::SECRET_FILE);
        Ok((Keys::from_file(&file)?, false))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Token(token)) => mint(token),
        Some(Command::Serve(serve)) => run(serve),
        None => run(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jitflow-shim: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(
    clippy::print_stdout,
    reason = "the token alone on stdout is this command's output"
)]
fn mint(token: Token) -> Result<(), BoxError> {
    let (keys, _) = token.secrets.keys(false)?;
    let jwt = keys.mint(
        &token.tenant,
        &token.identity,
        &token.scopes,
        &token.levels,
        token.ttl,
    )?;
    println!("{jwt}");
    Ok(())
}

fn init_logs(format: LogFormat, filter: &str) -> Result<(), BoxError> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.try_init()?,
        LogFormat::Json => builder.json().try_init()?,
    }
    Ok(())
}

fn run(serve: Serve) -> Result<(), BoxError> {
    init_logs(serve.log_format, &serve.log)?;
    let mut config = if serve.demo {
        demo::config()
    } else {
        jitflow::Config::default()
    };
    for setting in &serve.engine {
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("--engine {setting}: expected NAME=VALUE"))?;
        config.set(name.trim(), value.trim())?;
    }
    config.validate()?;
    let webhook = serve.notify.webhook(serve.demo)?;
    if let Some(webhook) = &webhook {
        tracing::info!(receivers = ?webhook.receivers(), "notices go to webhook receivers");
    }
    let data_dir = serve.secrets.data_dir.clone();
    std::fs::create_dir_all(&data_dir)?;
    let (mut keys, created) = serve.secrets.keys(true)?;
    let settings = serve.store.settings();
    // Checked again by Membership::open and PgBackend::open, but those run once the server
    // listens (the advertised address defaults to the listening one): a bad setting stops the
    // shim before it listens.
    if let Some(settings) = &settings {
        settings.validate()?;
    }
    let engines = Engines {
        path: data_dir.join(STORE_FILE),
        config,
        webhook,
        demo: serve.demo,
        fail_rate: serve.demo_fail_rate,
        drop_rate: serve.demo_drop_rate,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        if let Some(provider) = serve.provider.load().await? {
            keys = keys.with_provider(provider);
        }
        let (state, balancing) = match settings {
            None => {
                let engine = engines.open(None).await?;
                (AppState::new(engine, keys), None)
            }
            Some(settings) => {
                let partitions = Arc::new(Partitions::shared(
                    settings.node_id.clone(),
                    settings.partition_count,
                ));
                (AppState::over(Arc::clone(&partitions), keys), Some((partitions, settings)))
            }
        };
        let running = start(serve.listen, state.clone()).await?;
        if created {
            tracing::info!(
                secret = %data_dir.join(jitflow_shim::auth::SECRET_FILE).display(),
                "generated a new token secret (mode 0600)"
            );
        }
        // On a shared database: heartbeat and balance the partitions until the stop signal.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let balancer = match balancing {
            None => None,
            Some((partitions, settings)) => {
                let advertise = serve
                    .store
                    .advertise
                    .clone()
                    .unwrap_or_else(|| format!("http://{}", running.addr));
                let membership = Membership::open(&settings, advertise).await?;
                let engines = Arc::new(engines);
                let open: Opener = Box::new(move |backend, partition| {
                    let engines = Arc::clone(&engines);
                    Box::pin(async move { engines.open(Some((backend, partition))).await })
                });
                tracing::info!(
                    node = %settings.node_id,
                    partitions = settings.partition_count,
                    "joins the nodes sharing the database"
                );
                Some(tokio::spawn(balance(partitions, membership, settings, open, async {
                    let _ = stopped.await;
                })))
            }
        };
        tracing::info!(
            addr = %running.addr,
            data_dir = %data_dir.display(),
            "listening; mint a token with: jitflow-shim token --data-dir {} --tenant acme --identity alice --scope idn:jit-activation-workflow:activate --level USER",
            data_dir.display()
        );
        let served = running.until(shutdown_signal()).await;
        tracing::info!("shutting down");
        match balancer {
            // Stops every partition's engine and hands its lease over at once.
            Some(task) => {
                let _ = stop.send(());
                task.await?;
            }
            None => state.partitions.stop_all().await,
        }
        served?;
        Ok::<(), BoxError>(())
    })
}

/// How the shim opens an engine: on the redb file, or on a partition of the shared database.
struct Engines {
    path: PathBuf,
    config: jitflow::Config,
    webhook: Option<jitflow_webhook::Webhook>,
    demo: bool,
    fail_rate: f64,
    drop_rate: f64,
}

impl Engines {
    async fn open(
        &self,
        partition: Option<(Arc<jitflow_store_pg::PgBackend>, Partition)>,
    ) -> Result<Engine, BoxError> {
        let mut builder = Engine::builder(&self.path)
            .config(self.config.clone())
            .provisioner(DemoProvisioner::new(self.fail_rate).with_drop_rate(self.drop_rate));
        let mut count = 1;
        if let Some((backend, partition)) = &partition {
            count = backend.partition_count();
            builder = builder
                .backend(Arc::clone(backend) as Arc<dyn jitflow_store::backend::Backend>)
                .store_options(jitflow_store::open::Options {
                    partition: *partition,
                    ..jitflow_store::open::Options::default()
                })
                // Engines sharing a target should differ in their retries' jitter.
                .jitter_seed(u64::from(partition.0));
        }
        if let Some(webhook) = &self.webhook {
            builder = builder.notifier(webhook.clone());
        }
        let engine = builder.open().await?;
        let serves_demo = partition
            .as_ref()
            .is_none_or(|(_, p)| *p == Partition::of_tenant(demo::TENANT, count));
        if self.demo && serves_demo {
            demo::load(&engine).await?;
            tracing::info!(tenant = demo::TENANT, "demo tenant loaded");
        }
        Ok(engine)
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("listening for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("listening for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
