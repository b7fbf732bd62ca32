//! The `rserve-proxy` command line.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use rserve_proxy::config::{self, Config};
use rserve_proxy::model::Role;
use rserve_proxy::service::users::{CreateUserInput, UpdateUserInput};
use rserve_proxy::service::{users, AppState, ClientMeta, ServiceError};
use rserve_proxy::spawner::docker::DockerSpawner;
use rserve_proxy::store::Store;
use rserve_proxy::{auth, logging, server};

#[derive(Parser)]
#[command(
    name = "rserve-proxy",
    version,
    about = "Run R (Rserve) apps on your own server"
)]
struct Cli {
    /// TOML config file (settings: see `rserve-proxy config`).
    #[arg(long, global = true, env = "RSP_CONFIG")]
    config: Option<PathBuf>,
    // Every setting also has a flag (`--listen`, `--data-dir`, …), added from the
    // config declarations: see `config::flag_args`.
    /// Take over from the server running on this data dir (set by that server when it
    /// starts its successor; see `rserve-proxy upgrade`).
    #[arg(long, global = true, hide = true)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (the default).
    Serve,
    /// Print the effective configuration (secrets redacted).
    Config {
        /// Print the reference of every setting (docs/configuration.md) instead.
        #[arg(long)]
        docs: bool,
    },
    /// Manage users while the server is stopped.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Remove every container and image this data dir's rserve-proxy created, for all
    /// apps (base images stay). Run it with the server stopped; apps can be started again.
    Cleanup,
    /// Build images rserve-proxy needs.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Hand the running server over to the binary now installed at its path, without
    /// dropping open connections (after replacing the binary, e.g. in a package's
    /// postinst). Waits until the new process serves.
    Upgrade {
        /// Seconds to wait for the new process to serve.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Build `rserve-base:<R version>`: from Debian's packages (no registry needed), or
    /// from `r-base:<version>` on a registry.
    BuildBase {
        /// Build from Debian's packages (R 4.2.2 on Debian 12) with mmdebstrap.
        #[arg(long)]
        from_debian: bool,
        /// R version for the registry recipe (`r-base:<version>`).
        #[arg(long, default_value = "4.5.1")]
        r_version: String,
        /// Rebuild even when the image exists (Debian recipe).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a user; prints a generated password unless --password-stdin is given.
    CreateUser {
        #[arg(long)]
        username: String,
        #[arg(long, default_value = "user", value_parser = ["admin", "user"])]
        role: String,
        #[arg(long)]
        email: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (ends the user's sessions, revokes their API tokens).
    ResetPassword {
        #[arg(long)]
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    ListUsers,
}

fn main() -> ExitCode {
    let matches = Cli::command().args(config::flag_args()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Some(Command::Config { docs: true }) = cli.command {
        print!("{}", config::docs_markdown());
        return ExitCode::SUCCESS;
    }
    let flags = config::flag_overrides(&matches);
    let (config, warnings) =
        match Config::load_with_warnings(cli.config.as_deref(), std::env::vars(), &flags) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("rserve-proxy: {e}");
                return ExitCode::from(2);
            }
        };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            logging::init(&config);
            for w in &warnings {
                tracing::warn!("{w}");
            }
            server::serve_as(config, cli.upgrade).map_err(|e| e.to_string())
        }
        Command::Upgrade { timeout } => rserve_proxy::upgrade::command::request(
            &config.data_dir,
            std::time::Duration::from_secs(timeout),
        )
        .map(|line| println!("{line}")),
        Command::Config { .. } => {
            for w in &warnings {
                eprintln!("rserve-proxy: warning: {w}");
            }
            print!("{}", config.render_redacted());
            Ok(())
        }
        Command::Images(ImagesCommand::BuildBase {
            from_debian,
            r_version,
            force,
        }) => rserve_proxy::images::build_base(&if from_debian {
            rserve_proxy::images::Recipe::FromDebian { force }
        } else {
            rserve_proxy::images::Recipe::Dockerfile { r_version }
        }),
        Command::Admin(cmd) => admin(config, cmd),
        Command::Cleanup => cleanup(config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rserve-proxy: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `rserve-proxy cleanup`: containers and images of every app, through the spawner.
fn cleanup(config: Config) -> Result<(), String> {
    // What we remove is what this data dir's instance created; holding the store's
    // lock also proves no server of it is running (it would restart what we remove).
    if !config.state_file().exists() {
        println!(
            "no state in {}: this data dir has created no containers",
            config.data_dir.display()
        );
        return Ok(());
    }
    let (_store, instance, rt) = open_local(&config)?;
    let report = rt
        .block_on(DockerSpawner::new(&config.docker_socket, &instance).cleanup_all())
        .map_err(|e| e.to_string())?;
    println!(
        "removed {} container(s) and {} image(s)",
        report.containers, report.images
    );
    Ok(())
}

/// For the one-off commands: the data dir's store (open, so no server of it runs
/// meanwhile), its instance id (which scopes its Docker objects) and a runtime.
fn open_local(config: &Config) -> Result<(Store, String, tokio::runtime::Runtime), String> {
    let store = Store::open(&config.state_file()).map_err(|e| e.to_string())?;
    let instance = store.instance_id().map_err(|e| e.to_string())?.to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    Ok((store, instance, rt))
}

fn read_password(from_stdin: bool) -> Result<(String, bool), String> {
    if !from_stdin {
        return Ok((auth::secrets::new_password(), true));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    Ok((line.trim_end_matches(['\r', '\n']).to_string(), false))
}

/// User management through the same service functions as the API, acting as the
/// local operator.
fn admin(config: Config, cmd: AdminCommand) -> Result<(), String> {
    let (store, instance, rt) = open_local(&config)?;
    rt.block_on(async move {
        let spawner = Arc::new(DockerSpawner::new(&config.docker_socket, &instance));
        let state = AppState::new(store, spawner, Arc::new(config));
        let meta = ClientMeta::default();
        let fail = |e: ServiceError| e.to_string();
        match cmd {
            AdminCommand::CreateUser {
                username,
                role,
                email,
                password_stdin,
            } => {
                let (password, generated) = read_password(password_stdin)?;
                let role = if role == "admin" {
                    Role::Admin
                } else {
                    Role::User
                };
                let input = CreateUserInput {
                    username,
                    password: password.clone(),
                    email,
                    role: Some(role),
                };
                let user = users::create(&state, None, input, &meta)
                    .await
                    .map_err(fail)?;
                println!(
                    "created {} ({}, {})",
                    user.username,
                    user.role.as_str(),
                    user.id
                );
                if generated {
                    println!("password: {password}");
                }
            }
            AdminCommand::ResetPassword {
                username,
                password_stdin,
            } => {
                let name = username.clone();
                let user = rserve_proxy::service::with_store(&state.store, move |s| {
                    s.get_user_by_username(&name)
                })
                .await
                .map_err(fail)?
                .ok_or_else(|| format!("no user named {username:?}"))?;
                let (password, generated) = read_password(password_stdin)?;
                let input = UpdateUserInput {
                    password: Some(password.clone()),
                    ..Default::default()
                };
                users::update(&state, None, user.id, input, &meta)
                    .await
                    .map_err(fail)?;
                println!(
                    "password of {username} reset; their sessions have ended and their API tokens are revoked"
                );
                if generated {
                    println!("password: {password}");
                }
            }
            AdminCommand::ListUsers => {
                let all = users::list(&state, None).await.map_err(fail)?;
                println!(
                    "{:<36}  {:<24}  {:<5}  {:<32}  created",
                    "id", "username", "role", "email"
                );
                for u in all {
                    println!(
                        "{:<36}  {:<24}  {:<5}  {:<32}  {}",
                        u.id,
                        u.username,
                        u.role.as_str(),
                        u.email.as_deref().unwrap_or("-"),
                        u.created_at
                    );
                }
            }
        }
        Ok(())
    })
}
