//! `strata serve`: the backup service. It reads one configuration file, keeps its state in a
//! SQLite database, runs plans and repository jobs on their schedules, and answers an HTTP
//! API; `token` and `notify-test` manage it from the command line.
pub mod api;
pub mod api_actions;
pub mod api_browse;
pub mod api_mongo;
pub mod config;
pub mod dashboard;
pub mod follower;
pub mod metrics;
pub mod mongo;
pub mod notify;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub mod state;
pub mod tls;
pub mod tokens;

use super::{Context, Outcome};
use anyhow::{Context as _, Result, bail};
use axum::serve::ListenerExt;
use config::{Config, Job, Plan};
use runner::Running;
use state::State;
use std::collections::HashMap;
use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

#[derive(clap::Args)]
pub struct Args {
    /// The configuration file (default: $XDG_CONFIG_HOME/strata/strata.toml)
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration and that every repository opens, then exit
    #[arg(long)]
    check_config: bool,
    /// Allow `listen` on an address other than loopback although the API has no TLS
    #[arg(long)]
    allow_remote_without_tls: bool,
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Manage API tokens
    #[command(subcommand)]
    Token(TokenAction),
    /// Send a test alert to the notification target TARGET
    NotifyTest { target: String },
}

#[derive(clap::Subcommand)]
enum TokenAction {
    /// Make a token and print it (alone, once) on stdout
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: tokens::Role,
    },
    /// List tokens: name, role, creation time (never the secret)
    List,
    /// Remove the token NAME
    Revoke { name: String },
}

/// How long SIGTERM may take: running operations are cancelled and waited for this long.
pub const STOP_BOUND: Duration = Duration::from_secs(30);

/// The service: its configuration, database and the operations running now.
pub struct Service {
    pub config: Config,
    pub state: Arc<State>,
    running: Mutex<HashMap<i64, Arc<Running>>>,
    /// Which plan or job (by `Task::key`) runs which operation.
    busy: Mutex<HashMap<String, i64>>,
    stopping: AtomicBool,
    started: chrono::DateTime<chrono::Utc>,
    /// One per `[[follower]]`, in the configuration's order.
    pub followers: Vec<follower::Watch>,
    /// Repositories whose followers an exclusive operation keeps stopped.
    pub holds: follower::Holds,
    /// The latest alerts, for the dashboard.
    pub alerts: notify::Recent,
}

/// Something the scheduler starts: a plan's run or a repository job.
#[derive(Clone, Copy)]
pub enum Task<'a> {
    Plan(&'a Plan),
    Job(&'a Job),
}

impl Task<'_> {
    /// The name the state database keys it by.
    pub fn key(&self) -> String {
        match self {
            Task::Plan(p) => p.name.get_ref().clone(),
            Task::Job(j) => format!("job:{}", j.name.get_ref()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Task::Plan(_) => "backup",
            Task::Job(j) => match j.kind {
                config::JobKind::Check => "check",
                config::JobKind::Prune => "prune",
            },
        }
    }

    fn repository(&self) -> &str {
        match self {
            Task::Plan(p) => p.repository.get_ref(),
            Task::Job(j) => j.repository.get_ref(),
        }
    }

    fn plan(&self) -> Option<&str> {
        match self {
            Task::Plan(p) => Some(p.name.get_ref()),
            Task::Job(_) => None,
        }
    }
}

/// An operation to start: the key that keeps it from running twice at once, and what the
/// history records of it.
pub struct Launch {
    pub key: String,
    pub kind: &'static str,
    pub plan: Option<String>,
    pub repository: Option<String>,
}

/// Why an operation was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0} is running already (operation {1})")]
    Busy(String, i64),
    #[error("the service is stopping")]
    Stopping,
    #[error(transparent)]
    State(#[from] state::StateError),
}

impl Service {
    fn new(config: Config) -> Result<Service> {
        let limits = state::Limits {
            days: config.history_days,
            operations: config.history_max,
            log_lines: config.log_lines,
        };
        let state = Arc::new(State::open(&config.state_dir, limits)?);
        let followers = config.followers.iter().map(follower::Watch::new).collect();
        Ok(Service {
            followers,
            holds: follower::Holds::default(),
            alerts: notify::Recent::default(),
            config,
            state,
            running: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            started: chrono::Utc::now(),
        })
    }

    pub fn tasks(&self) -> impl Iterator<Item = Task<'_>> {
        let plans = self.config.plans.iter().map(Task::Plan);
        plans.chain(self.config.jobs.iter().map(Task::Job))
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn running(&self, id: i64) -> Option<Arc<Running>> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn running_count(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The operation `task` runs now, if any.
    pub fn busy_with(&self, task: &Task) -> Option<i64> {
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.get(&task.key()).copied()
    }

    /// Starts `task` on a blocking thread; the new operation's id. A task never runs
    /// twice at once.
    pub fn start(self: &Arc<Self>, task: Task, why: &str) -> Result<i64, StartError> {
        let key = task.key();
        let work = Launch {
            key: key.clone(),
            kind: task.kind(),
            plan: task.plan().map(str::to_string),
            repository: Some(task.repository().to_string()),
        };
        let run = move |service: &Service, op: &Running| match service.task(&key) {
            Some(Task::Plan(plan)) => service.run_plan(plan, op),
            Some(Task::Job(job)) => service.run_job(job, op),
            None => unreachable!("tasks come from the configuration"),
        };
        let after = |service: &Service, key: &str, id: i64, out: &runner::Outcome| match service
            .task(key)
        {
            Some(Task::Plan(plan)) => notify::after_run(service, plan, id, out),
            Some(Task::Job(job)) => notify::after_job(service, job, id, out),
            None => {}
        };
        self.launch(work, why, run, after)
    }

    /// Starts `run` on a blocking thread as a new operation described by `work`, unless
    /// `work.key` runs already; once it has ended and is recorded, `after` (alerts) runs.
    pub fn launch(
        self: &Arc<Self>,
        work: Launch,
        why: &str,
        run: impl FnOnce(&Service, &Running) -> runner::Outcome + Send + 'static,
        after: impl FnOnce(&Service, &str, i64, &runner::Outcome) + Send + 'static,
    ) -> Result<i64, StartError> {
        if self.is_stopping() {
            return Err(StartError::Stopping);
        }
        let key = work.key;
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = busy.get(&key) {
            return Err(StartError::Busy(key, *id));
        }
        let id = (self.state).start_operation(
            work.kind,
            work.plan.as_deref(),
            work.repository.as_deref(),
        )?;
        busy.insert(key.clone(), id);
        drop(busy);
        let op = Arc::new(Running::new(id));
        (self.running.lock().unwrap_or_else(|e| e.into_inner())).insert(id, op.clone());
        eprintln!("strata serve: {key}: operation {id} started ({why})");
        let service = self.clone();
        tokio::task::spawn_blocking(move || {
            let out = run(&service, &op);
            service.finish(&op, &key, &out);
            after(&service, &key, op.id, &out);
        });
        Ok(id)
    }

    fn task(&self, key: &str) -> Option<Task<'_>> {
        self.tasks().find(|t| t.key() == key)
    }

    fn finish(&self, op: &Arc<Running>, key: &str, out: &runner::Outcome) {
        // Recorded and released under the `busy` and `running` locks, so that once the
        // history shows the operation ended, the plan can be run again at once and the
        // operation is no longer counted as running.
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        runner::record(self, op, out);
        running.remove(&op.id);
        busy.remove(key);
        drop(running);
        drop(busy);
        eprintln!(
            "strata serve: {key}: operation {} ended: {}{}",
            op.id,
            out.status.name(),
            out.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }

    /// Stops accepting work and cancels every running operation and follower.
    fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        for f in &self.followers {
            f.stop();
        }
        for op in self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            op.cancel.cancel();
        }
    }
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let file = match &args.config {
        Some(f) => f.clone(),
        None => default_config()?,
    };
    let config = Config::load(&file)?;
    match args.action {
        Some(Action::Token(action)) => return token(config, action),
        Some(Action::NotifyTest { target }) => return notify_test(config, &target),
        None => {}
    }
    check_listen(&config, args.allow_remote_without_tls, &file)?;
    let service = Arc::new(Service::new(config)?);
    preflight(&service, &file, !args.check_config)?;
    let tls = (service.config.tls())
        .map(|(cert, key)| tls::acceptor(cert, key))
        .transpose()?;
    if args.check_config {
        ctx.say(&format!("{}: the configuration is valid", file.display()))?;
        return Ok(Outcome::Ok);
    }
    let interrupted = service.state.mark_interrupted()?;
    if interrupted > 0 {
        eprintln!(
            "strata serve: {interrupted} operations were interrupted when the service last stopped"
        );
    }
    serve(service, tls, ctx)?;
    Ok(Outcome::Ok)
}

/// `$XDG_CONFIG_HOME/strata/strata.toml` (or `~/.config/...`).
fn default_config() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    match base {
        Some(base) => Ok(base.join("strata").join("strata.toml")),
        None => bail!("no configuration file: give --config FILE (or set XDG_CONFIG_HOME or HOME)"),
    }
}

/// A bind address other than loopback needs TLS, or the explicit flag.
fn check_listen(config: &Config, allowed: bool, file: &std::path::Path) -> Result<()> {
    let addr = config.listen.get_ref();
    if addr.ip().is_loopback() || config.tls().is_some() {
        return Ok(());
    }
    if !allowed {
        bail!(
            "{}: listen = {addr} is not a loopback address and no tls_certificate is given: \
             pass --allow-remote-without-tls to serve the API in clear text anyway",
            file.display()
        );
    }
    eprintln!(
        "strata serve: warning: listening on {addr} without TLS: tokens travel in clear text"
    );
    Ok(())
}

/// Opens every repository with its password: a configuration naming one that cannot be
/// reached is refused at start, naming its `location`. With `clean`, stale locks go.
fn preflight(service: &Service, file: &std::path::Path, clean: bool) -> Result<()> {
    for repo in &service.config.repositories {
        if let Err(e) = service.probe(repo, clean) {
            let message = format!(
                "cannot open the repository: {}",
                strata::errors::message(e.as_ref())
            );
            return Err(repo.location_error(file, message).into());
        }
    }
    Ok(())
}

/// Serves the API (over TLS with `tls`) and runs the scheduler until SIGTERM or Ctrl-C.
fn serve(service: Arc<Service>, tls: Option<TlsAcceptor>, ctx: &Context) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the service runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(service.config.listen.get_ref())
            .await
            .with_context(|| format!("cannot listen on {}", service.config.listen.get_ref()))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        eprintln!(
            "strata serve: listening on {scheme}://{}",
            listener.local_addr()?
        );
        let app = api::router(service.clone())
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let stop = wait_for_signal(ctx.cancel.clone());
        let mut serving = match tls {
            None => tokio::spawn(
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .into_future(),
            ),
            Some(acceptor) => {
                // `tap_io` (doing nothing) lends the TLS listener axum's ConnectInfo of
                // its address.
                let listener = tls::TlsListener {
                    tcp: listener,
                    acceptor,
                }
                .tap_io(|_| {});
                tokio::spawn(
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stop)
                        .into_future(),
                )
            }
        };
        let scheduler = tokio::spawn(scheduler::run(service.clone()));
        follower::start_all(&service);
        let served = tokio::select! {
            _ = wait_for_signal(ctx.cancel.clone()) => false,
            ended = &mut serving => {
                ended??;
                true
            }
        };
        // Stopping: no new connections, no new runs; what runs is cancelled and given
        // STOP_BOUND to stop and release its locks.
        let deadline = tokio::time::Instant::now() + STOP_BOUND;
        eprintln!(
            "strata serve: stopping: cancelling {} operations",
            service.running_count()
        );
        service.stop();
        scheduler.abort();
        let busy = || service.running_count() > 0 || service.followers.iter().any(|f| f.is_alive());
        while busy() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !served {
            let _ = tokio::time::timeout_at(deadline, serving).await;
        }
        eprintln!("strata serve: stopped");
        anyhow::Ok(())
    })?;
    // Threads still waiting (for a lock, a hook) are not waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// How often the service looks for a signal: a stop starts at most this late, and an idle
/// service wakes up no more often than this (and its scheduler's tick).
const SIGNAL_POLL: Duration = Duration::from_millis(250);

/// Resolves once the first Ctrl-C or SIGTERM has cancelled `cancel` (see
/// `Context::cancel_on_signals`).
async fn wait_for_signal(cancel: strata::cancel::Cancel) {
    while !cancel.is_cancelled() {
        tokio::time::sleep(SIGNAL_POLL).await;
    }
}

fn token(config: Config, action: TokenAction) -> Result<Outcome> {
    let service = Service::new(config)?;
    let state = &service.state;
    match action {
        TokenAction::Create { name, role } => {
            let secret = tokens::create(state, &name, role)?;
            state.audit("cli", "token.create", &name, "local")?;
            println!("{secret}");
        }
        TokenAction::List => {
            for t in state.tokens()? {
                println!("{}\t{}\t{}", t.name, t.role, t.created);
            }
        }
        TokenAction::Revoke { name } => {
            state.revoke_token(&name)?;
            state.audit("cli", "token.revoke", &name, "local")?;
            eprintln!("token {name} revoked");
        }
    }
    Ok(Outcome::Ok)
}

fn notify_test(config: Config, target: &str) -> Result<Outcome> {
    let Some(notify) = config.notify.iter().find(|n| *n.name.get_ref() == target) else {
        bail!("no [[notify]] target is named {target:?}");
    };
    let body = serde_json::json!({
        "event": "test",
        "text": format!("strata: test alert to {target}"),
        "time": chrono::Utc::now(),
    });
    notify::deliver(&notify.target(), &body)?;
    eprintln!("test alert delivered to {target}");
    Ok(Outcome::Ok)
}
