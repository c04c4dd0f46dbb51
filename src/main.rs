//! The `hearth` command line: parse flags, set up logging, hand over to the library.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hearth::cli::{self, accounts};
use hearth::config::Config;
use hearth::store::Role;

#[derive(Parser)]
#[command(
    name = "hearth",
    version,
    about = "Self-hosted AI playground: local LLM inference with Candle"
)]
struct Cli {
    /// Configuration file (default: ./config.toml when present).
    #[arg(long, global = true, env = "HEARTH_CONFIG")]
    config: Option<PathBuf>,
    /// Model: a .gguf file, a safetensors directory or `hf:org/repo/file.gguf`
    /// (default: `model.path` from the configuration).
    #[arg(long, global = true)]
    model: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API (default 127.0.0.1:8080).
    Serve {
        /// Address to listen on (overrides server.host).
        #[arg(long)]
        host: Option<String>,
        /// Port (overrides server.port; 0 picks a free one).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Generate text from a prompt or chat messages, streaming it to stdout.
    Generate(GenerateArgs),
    /// Print the token ids of TEXT as a JSON array.
    Tokenize {
        /// Parse control-token text (e.g. `<|im_start|>`) as special tokens.
        #[arg(long)]
        special: bool,
        /// Prepend BOS when the model asks for it.
        #[arg(long)]
        bos: bool,
        /// The text to tokenize.
        text: String,
    },
    /// Print the prompt the chat template renders for a messages file.
    Template {
        /// JSON file with OpenAI-style messages: `[{"role": "user", "content": "Hi"}]`.
        #[arg(long)]
        messages: PathBuf,
    },
    /// Print a model's architecture, sizes, quantization, context, special tokens and template.
    Inspect {
        /// Model file, directory or `hf:` reference (default: the configured model).
        model: Option<String>,
    },
    /// Manage accounts in the configured database (safe while the server runs).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Write a consistent copy of the database to FILE (safe while the server runs).
    Backup {
        /// Destination file (replaced if present), or a directory to put a timestamped
        /// `hearth-YYYYmmddTHHMMSSZ.db` in.
        file: PathBuf,
    },
    /// Replace the database with the backup FILE. Stop the server first.
    Restore {
        /// A backup written by `hearth backup`, `POST /api/admin/backup` or the schedule.
        file: PathBuf,
    },
    /// Copy the SQLite store into an empty PostgreSQL database and compare every row. Stop the
    /// server first (writes after the copy's snapshot are not carried over).
    MigrateStore {
        /// The PostgreSQL database, e.g. postgres://hearth:PASSWORD@127.0.0.1/hearth.
        #[arg(long)]
        to: String,
        /// The SQLite store (default: the configured one), as sqlite://PATH.
        #[arg(long)]
        from: Option<String>,
    },
}

/// `hearth user …`. Passwords are read from standard input (its first line) when it is not a
/// terminal, otherwise prompted for twice without echo.
#[derive(Subcommand)]
enum UserCommand {
    /// Create an account (password from stdin, or prompted).
    Create {
        /// Make the account an admin.
        #[arg(long)]
        admin: bool,
        /// Username: ASCII letters, digits, `_`, `.` and `-`, within the `[auth]` length limits.
        name: String,
    },
    /// List every account.
    List,
    /// Disable an account and revoke its refresh tokens (not the last enabled admin).
    Disable {
        /// Username.
        name: String,
    },
    /// Enable a disabled account.
    Enable {
        /// Username.
        name: String,
    },
    /// Make an account a user or an admin (the last enabled admin cannot be demoted).
    SetRole {
        /// Username.
        name: String,
        /// The new role.
        role: RoleArg,
    },
    /// Set a new password (from stdin, or prompted), revoke the account's refresh tokens and
    /// delete its API keys.
    Passwd {
        /// Keep the account's API keys working.
        #[arg(long)]
        keep_api_keys: bool,
        /// Username.
        name: String,
    },
}

/// A role as named on the command line.
#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    User,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::User => Role::User,
            RoleArg::Admin => Role::Admin,
        }
    }
}

#[derive(Args)]
struct GenerateArgs {
    /// Prompt text (sent as one user message through the chat template; see --raw).
    #[arg(long, conflicts_with = "messages")]
    prompt: Option<String>,
    /// JSON file with OpenAI-style chat messages.
    #[arg(long)]
    messages: Option<PathBuf>,
    /// Feed --prompt to the model as is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// The most tokens to generate.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Nucleus sampling probability mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Drop tokens below this fraction of the top token's probability (0 = off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Random seed: the same seed and parameters give the same output.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop string (repeatable): generation ends before it.
    #[arg(long)]
    stop: Vec<String>,
    /// Also keep F16/F32 matrices of a GGUF as shipped (quantized ones always are).
    #[arg(long)]
    exact: bool,
    /// Print one JSON object with ids, text, finish reason and speeds instead of streaming text.
    #[arg(long)]
    json: bool,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            // HEARTH_LOG, else the ecosystem's RUST_LOG, else warnings only.
            tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config_path = args
        .config
        .clone()
        .or_else(|| Some(PathBuf::from("config.toml")).filter(|p| p.exists()));
    let mut config = Config::load(config_path.as_deref()).context("loading configuration")?;
    if let Some(m) = args.model {
        config.model.path = m;
    }
    match args.command {
        Command::Serve { host, port } => {
            if let Some(h) = host {
                config.server.host = h;
            }
            if let Some(p) = port {
                config.server.port = p;
            }
            config.validate()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(async {
                let app = hearth::app::App::build(config).await?;
                let addr = app.local_addr()?;
                // Tests and scripts read this line to find the port.
                println!("hearth listening on {}://{addr}", app.scheme());
                app.run_until_stopped().await
            })?;
        }
        Command::Generate(g) => {
            if g.exact {
                config.model.exact = true;
            }
            let messages = match &g.messages {
                Some(p) => Some(cli::read_messages(p)?),
                None => None,
            };
            let opts = cli::GenerateOptions {
                prompt: g.prompt,
                messages,
                raw: g.raw,
                max_tokens: g.max_tokens,
                temperature: g.temperature,
                top_p: g.top_p,
                top_k: g.top_k,
                min_p: g.min_p,
                repeat_penalty: g.repeat_penalty,
                seed: g.seed,
                stop: g.stop,
                json: g.json,
            };
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            cli::generate(&config, opts, &mut out)?;
            out.flush()?;
        }
        Command::Tokenize { special, bos, text } => {
            println!("{}", cli::tokenize(&config, &text, special, bos)?);
        }
        Command::Template { messages } => {
            let messages = cli::read_messages(&messages)?;
            print!("{}", cli::template(&config, &messages)?);
        }
        Command::Inspect { model } => {
            if let Some(m) = model {
                config.model.path = m;
            }
            println!("{}", cli::inspect(&config)?);
        }
        // None of these load the model.
        Command::User { command } => {
            let report = match command {
                UserCommand::Create { admin, name } => {
                    let role = if admin { Role::Admin } else { Role::User };
                    accounts::create_user(&config, &name, role)?
                }
                UserCommand::List => accounts::list_users(&config)?,
                UserCommand::Disable { name } => accounts::set_disabled(&config, &name, true)?,
                UserCommand::Enable { name } => accounts::set_disabled(&config, &name, false)?,
                UserCommand::SetRole { name, role } => {
                    accounts::set_role(&config, &name, role.into())?
                }
                UserCommand::Passwd {
                    name,
                    keep_api_keys,
                } => accounts::change_password(&config, &name, keep_api_keys)?,
            };
            print!("{}", with_newline(report));
        }
        Command::Backup { file } => println!("{}", accounts::backup(&config, &file)?),
        Command::Restore { file } => println!("{}", accounts::restore(&config, &file)?),
        Command::MigrateStore { to, from } => println!(
            "{}",
            cli::migrate_store::migrate_store(&config.storage, from.as_deref(), &to)?
        ),
    }
    Ok(())
}

/// `s` ending in exactly one line break (tables end in one already; messages do not).
fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}
