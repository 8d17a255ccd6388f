//! The `q8s` command line: parses arguments, runs one command, maps errors to exit codes.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::client::ClientError;
use crate::config::{Config, ConfigError, Sources};

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

#[derive(Debug, Args)]
struct GlobalArgs {
    /// Configuration file (default: q8s.toml in the current folder, if present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Set an option, stronger than the file and Q8S_* variables; repeatable.
    #[arg(long = "set", global = true, value_name = "OPTION=VALUE")]
    set: Vec<String>,
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
    Config,
    /// List the task functions this binary has.
    Functions,
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
}

impl Failure {
    fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
        }
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
            ClientError::Broker(crate::broker::BrokerError::Unsupported(_)) => Exit::Usage,
            ClientError::Broker(_) | ClientError::Store(_) => Exit::Unavailable,
        };
        Failure::new(exit, error.to_string())
    }
}

/// Runs the command line and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("q8s: cannot start the async runtime: {error}");
            return Exit::Failed.into();
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(exit) => exit.into(),
        Err(failure) => {
            eprintln!("q8s: {}", failure.message);
            failure.exit.into()
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("Q8S_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> Result<Exit, Failure> {
    let config = Config::load(&Sources::from_process(cli.global.config, cli.global.set))?;
    match cli.command {
        Command::Enqueue(args) => commands::enqueue(config, args).await,
        Command::Result { id, wait } => commands::result(config, &id, wait).await,
        Command::Fetch { id } => commands::fetch(config, &id).await,
        Command::Group(command) => commands::group(config, command).await,
        Command::Queue(command) => commands::queue(config, command).await,
        Command::Failures(command) => commands::failures(config, command).await,
        Command::Config => commands::show_config(&config),
        Command::Functions => commands::functions(&config),
    }
}
