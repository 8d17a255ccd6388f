//! The `q8s` command line: parses arguments, runs one command, maps errors to exit codes.

mod bench;
mod cluster;
mod commands;
#[cfg(feature = "monitor")]
mod monitor;
mod schedule;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::client::ClientError;
use crate::config::{Config, ConfigError, Sources};
use crate::registry::{Registry, RegistryError};

/// Builds the task functions a binary offers, from its configuration.
pub type RegistryFactory = dyn Fn(&Config) -> Result<Registry, RegistryError>;

/// Exit codes, documented in docs/configuration.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done; for `result`, the task succeeded.
    Ok = 0,
    /// The task failed (`result`), or the command failed.
    Failed = 1,
    /// Bad arguments or configuration: fix the command.
    Usage = 2,
    /// No result yet (`result`).
    NoResult = 3,
    /// The broker or store could not be reached.
    Unavailable = 4,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// q8s: a task queue, scheduler and worker cluster.
#[derive(Debug, Parser)]
#[command(name = "q8s", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Args)]
struct GlobalArgs {
    /// Configuration file (default: q8s.toml in the current folder, if present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Set an option, stronger than the file and Q8S_* variables; repeatable.
    #[arg(long = "set", global = true, value_name = "OPTION=VALUE")]
    set: Vec<String>,
}

impl GlobalArgs {
    /// The same global arguments again, for worker processes to load the same configuration.
    fn passthrough(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(config) = &self.config {
            args.push("--config".to_string());
            args.push(config.display().to_string());
        }
        for set in &self.set {
            args.push("--set".to_string());
            args.push(set.clone());
        }
        args
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enqueue a task and print its id (the seed's async_task).
    #[command(allow_negative_numbers = true)]
    Enqueue(EnqueueArgs),
    /// Print a task's result as JSON; exit 0 success, 1 failure, 3 no result yet.
    Result {
        /// Task id or name.
        id: String,
        /// Wait up to this many seconds for the task to finish.
        #[arg(long, value_name = "SECONDS")]
        wait: Option<f64>,
    },
    /// Print a whole finished task as JSON.
    Fetch {
        /// Task id or name.
        id: String,
    },
    /// Group functions: results, tasks, counts, deletion.
    #[command(subcommand)]
    Group(GroupCommand),
    /// The broker's queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Failed tasks.
    #[command(subcommand)]
    Failures(FailuresCommand),
    /// Print the effective configuration and where each option came from.
    Config {
        /// Print the options that were set as TOML that loads back to the same configuration (secret keys included).
        #[arg(long, conflicts_with = "schema")]
        toml: bool,
        /// Print the JSON Schema of the options.
        #[arg(long)]
        schema: bool,
    },
    /// Create the secret key file when no key is configured and it is missing; print its path.
    Key,
    /// Create or update q8s's tables in the store (and the SQL broker's database).
    Migrate,
    /// List the task functions this binary has.
    Functions,
    /// Run a cluster: the sentinel, its workers, pusher and monitor (the seed's qcluster).
    Cluster,
    /// Print a one-off summary of all clusters (the seed's qinfo).
    Info {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the Stat of every live cluster.
    Stat {
        /// Print the raw Stats as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Watch every cluster on the broker, live (the seed's qmonitor); q quits.
    Monitor {
        /// Print the table once, as text, and exit (also when stdout is no terminal).
        #[arg(long)]
        once: bool,
    },
    /// Schedules: create, list, delete, pause, resume.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Measure enqueue rate, drain rate, latency and memory (see docs/benchmarks.md).
    Bench(bench::BenchArgs),
    /// Internal: a worker process of a cluster, fed by its sentinel over pipes.
    #[command(hide = true)]
    WorkerProcess {
        /// The worker's slot in the cluster.
        #[arg(long)]
        slot: usize,
        /// CPUs to pin this process to, comma-separated.
        #[arg(long, value_delimiter = ',')]
        cpus: Option<Vec<usize>>,
    },
}

#[derive(Debug, Args)]
struct EnqueueArgs {
    /// Dotted function name, e.g. math.copysign.
    func: String,
    /// Arguments: each is JSON if it parses as JSON, else a string.
    args: Vec<String>,
    /// Keyword arguments as a JSON object.
    #[arg(long, value_name = "JSON")]
    kwargs: Option<String>,
    /// Group label.
    #[arg(long)]
    group: Option<String>,
    /// Function called with the finished task.
    #[arg(long)]
    hook: Option<String>,
    /// Seconds the task may run.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Save the result even if save_limit says not to.
    #[arg(long, overrides_with = "no_save")]
    save: bool,
    /// Do not save the result of a success.
    #[arg(long)]
    no_save: bool,
    /// Run the task now, in this process, and save it.
    #[arg(long)]
    sync: bool,
    /// The seed's q_options as a JSON object (overrides the flags above).
    #[arg(long, value_name = "JSON")]
    q_options: Option<String>,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Print the results of a group as a JSON array.
    Result {
        /// Group label.
        group: String,
        /// Include failed tasks' results.
        #[arg(long)]
        failures: bool,
    },
    /// Print the tasks of a group as a JSON array.
    Fetch {
        /// Group label.
        group: String,
        /// Leave failed tasks out.
        #[arg(long)]
        no_failures: bool,
    },
    /// Print how many tasks a group has.
    Count {
        /// Group label.
        group: String,
        /// Count only the failures.
        #[arg(long)]
        failures: bool,
    },
    /// Remove a group label from its tasks; print how many.
    Delete {
        /// Group label.
        group: String,
        /// Delete the tasks too.
        #[arg(long)]
        tasks: bool,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Print how many packages wait in the broker, and how many are being processed.
    Size {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove every package from the queue; print how many.
    Purge,
}

#[derive(Debug, Subcommand)]
enum FailuresCommand {
    /// List the newest failed tasks.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Enqueue a failed task again and remove the failure; print the new id.
    Retry {
        /// Task id or name.
        id: String,
    },
}

/// An error on its way to the user: what to print and which exit code.
#[derive(Debug)]
pub struct Failure {
    exit: Exit,
    message: String,
    /// Ends the command with `exit` and says nothing: its output's reader went away.
    quiet: bool,
}

impl Failure {
    fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
            quiet: false,
        }
    }

    /// The end of a command whose output nobody reads any more: success, silently.
    fn quiet() -> Failure {
        Failure {
            exit: Exit::Ok,
            message: String::new(),
            quiet: true,
        }
    }
}

/// Prints one line of a command's output. A reader that went away (`| head`)
/// ends the command quietly and successfully: what it did is done, only the
/// rest of its output goes unread. Any other write error (a full disk) fails
/// it, so no output is lost unnoticed.
fn say(line: impl std::fmt::Display) -> Result<(), Failure> {
    use std::io::Write;
    // println! would panic on a closed pipe: Rust ignores SIGPIPE, so the
    // write returns the error instead of ending the process.
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::quiet()),
        Err(error) => Err(Failure::new(
            Exit::Failed,
            format!("cannot write the output: {error}"),
        )),
    }
}

impl From<ConfigError> for Failure {
    fn from(error: ConfigError) -> Failure {
        Failure::new(Exit::Usage, format!("invalid configuration: {error}"))
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        let exit = match &error {
            ClientError::Config(_)
            | ClientError::Package(_)
            | ClientError::Invalid(_)
            | ClientError::Registry(_) => Exit::Usage,
            ClientError::Broker(error) if error.is_usage() => Exit::Usage,
            ClientError::Store(crate::store::StoreError::Database(error)) if error.is_usage() => {
                Exit::Usage
            }
            ClientError::Broker(_) | ClientError::Store(_) => Exit::Unavailable,
        };
        Failure::new(exit, error.to_string())
    }
}

impl From<RegistryError> for Failure {
    fn from(error: RegistryError) -> Failure {
        Failure::new(Exit::Usage, error.to_string())
    }
}

/// Runs the command line with the built-in functions and returns the process's exit code.
pub fn main() -> ExitCode {
    main_with(&|config: &Config| Registry::with_builtins(&config.exec_allow))
}

/// Runs the command line with the functions `registry` builds: the entry point of
/// a worker binary of your own, so its clusters' workers run your functions.
pub fn main_with(registry: &RegistryFactory) -> ExitCode {
    let cli = Cli::parse();
    if let Command::WorkerProcess { slot, cpus } = &cli.command {
        init_logging("warn");
        let (slot, cpus) = (*slot, cpus.clone());
        return cluster::worker_process(cli.global, slot, cpus.as_deref(), registry).into();
    }
    let cluster = matches!(cli.command, Command::Cluster);
    init_logging(if cluster { "info" } else { "warn" });
    // One thread: the sentinel's tasks all wait on pipes and sockets, and
    // hopping between threads cost more than the work itself (measured).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("q8s: cannot start the async runtime: {error}");
            return Exit::Failed.into();
        }
    };
    let outcome = runtime.block_on(run(cli, registry));
    // A hook that never returned still holds a blocking thread; the process
    // ends anyway instead of waiting for it (the stop procedure gave it its time).
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    match outcome {
        Ok(exit) => exit.into(),
        Err(failure) => {
            if !failure.quiet {
                eprintln!("q8s: {}", failure.message);
            }
            failure.exit.into()
        }
    }
}

/// How long the process waits, once a command is done, for blocking threads still running.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(1);

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("Q8S_LOG")
        // The AWS SDK warns about each place it looked for a region in vain;
        // q8s says clearly when none was found.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{default},aws_config=error"))
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli, registry: &RegistryFactory) -> Result<Exit, Failure> {
    let config_args = cli.global.passthrough();
    let config = Config::load(&Sources::from_process(cli.global.config, cli.global.set))?;
    match cli.command {
        Command::Cluster => {
            let functions = registry(&config)?;
            cluster::cluster(config, functions, config_args).await
        }
        Command::Info { json } => cluster::info(config, json).await,
        Command::Bench(args) => bench::bench(config, config_args, args).await,
        Command::Schedule(command) => schedule::schedule(config, command).await,
        Command::Stat { json } => cluster::stat(config, json).await,
        #[cfg(feature = "monitor")]
        Command::Monitor { once } => monitor::monitor(config, once).await,
        #[cfg(not(feature = "monitor"))]
        Command::Monitor { .. } => Err(Failure::new(
            Exit::Usage,
            "this q8s was built without the monitor feature: build it with --features monitor",
        )),
        Command::WorkerProcess { .. } => Ok(Exit::Usage),
        Command::Enqueue(args) => {
            let functions = registry(&config)?;
            commands::enqueue(config, functions, args).await
        }
        Command::Result { id, wait } => commands::result(config, &id, wait).await,
        Command::Fetch { id } => commands::fetch(config, &id).await,
        Command::Group(command) => commands::group(config, command).await,
        Command::Queue(command) => commands::queue(config, command).await,
        Command::Failures(command) => commands::failures(config, command).await,
        Command::Config { toml, schema } => commands::show_config(&config, toml, schema),
        Command::Key => commands::key(&config),
        Command::Migrate => commands::migrate(&config).await,
        Command::Functions => commands::functions(&registry(&config)?),
    }
}
