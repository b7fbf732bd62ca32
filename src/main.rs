//! The `rserve-proxy` command line.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use rserve_proxy::config::{self, Config};
use rserve_proxy::ops::users as ops_users;
use rserve_proxy::service::AppState;
use rserve_proxy::spawner::docker::DockerSpawner;
use rserve_proxy::store::Store;
use rserve_proxy::{auth, logging, server};

/// `--version`: package version, git commit and build date (from build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RSP_GIT_COMMIT"),
    ", built ",
    env!("RSP_BUILD_DATE"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "rserve-proxy",
    version = VERSION,
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
    /// Manage users (through the running server's admin socket, or directly when it
    /// is stopped).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Write a backup archive (store snapshot + uploads, with a manifest of sha256
    /// checksums) to FILE; works while the server runs.
    Backup {
        /// Archive to write (tar.gz); replaced only once complete.
        file: PathBuf,
    },
    /// Restore a backup archive into the (stopped) data dir; checks it whole first.
    Restore {
        /// Archive written by `rserve-proxy backup`.
        file: PathBuf,
        /// Restore into a non-empty data dir, moving its contents aside first.
        #[arg(long)]
        force: bool,
    },
    /// Check Docker, the base image, ports, the data dir, the clock and TLS; prints a
    /// fix for each failure and exits 1 if any check fails.
    Doctor {
        /// The base image to look for.
        #[arg(long, default_value = "rserve-base:latest")]
        base_image: String,
    },
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
    let source = rserve_proxy::reload::Source {
        file: cli.config.clone(),
        flags: flags.clone(),
    };
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
            server::serve_as(config, cli.upgrade, source).map_err(|e| e.to_string())
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
        Command::Backup { file } => {
            rserve_proxy::ops::backup(&config, &file).map(|line| println!("{line}"))
        }
        Command::Restore { file, force } => {
            rserve_proxy::ops::restore(&config, &file, force).map(|line| println!("{line}"))
        }
        Command::Doctor { base_image } => {
            let checks = rserve_proxy::ops::doctor::run(
                &config,
                &rserve_proxy::ops::doctor::Options { base_image },
            );
            for c in &checks {
                println!("{}", c.line());
            }
            let failed = checks
                .iter()
                .filter(|c| c.outcome == rserve_proxy::ops::doctor::Outcome::Fail)
                .count();
            if failed > 0 {
                Err(format!("{failed} check(s) failed; see the fixes above"))
            } else {
                Ok(())
            }
        }
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
/// local operator: through the running server's admin socket, or on the store
/// directly when no server runs.
fn admin(config: Config, cmd: AdminCommand) -> Result<(), String> {
    let request = match cmd {
        AdminCommand::CreateUser {
            username,
            role,
            email,
            password_stdin,
        } => {
            let (password, generated) = read_password(password_stdin)?;
            AdminRequest::Create(
                ops_users::NewUser {
                    username,
                    role,
                    email,
                    password,
                },
                generated,
            )
        }
        AdminCommand::ResetPassword {
            username,
            password_stdin,
        } => {
            let (password, generated) = read_password(password_stdin)?;
            AdminRequest::Reset(ops_users::PasswordReset { username, password }, generated)
        }
        AdminCommand::ListUsers => AdminRequest::List,
    };
    let answer = if rserve_proxy::ops::server_running(&config) {
        admin_remote(&config, &request)?
    } else {
        admin_local(config, &request)?
    };
    match (request, answer) {
        (AdminRequest::Create(input, generated), AdminAnswer::User(user)) => {
            println!("created {} ({}, {})", user.username, user.role, user.id);
            if generated {
                println!("password: {}", input.password);
            }
        }
        (AdminRequest::Reset(input, generated), _) => {
            println!(
                "password of {} reset; their sessions have ended and their API tokens are revoked",
                input.username
            );
            if generated {
                println!("password: {}", input.password);
            }
        }
        (_, AdminAnswer::Users(all)) => {
            println!(
                "{:<36}  {:<24}  {:<5}  {:<32}  created",
                "id", "username", "role", "email"
            );
            for u in all {
                println!(
                    "{:<36}  {:<24}  {:<5}  {:<32}  {}",
                    u.id,
                    u.username,
                    u.role,
                    u.email.as_deref().unwrap_or("-"),
                    u.created_at
                );
            }
        }
        _ => {}
    }
    Ok(())
}

enum AdminRequest {
    /// The bool: the password was generated (so it is printed).
    Create(ops_users::NewUser, bool),
    Reset(ops_users::PasswordReset, bool),
    List,
}

enum AdminAnswer {
    User(ops_users::UserLine),
    Users(Vec<ops_users::UserLine>),
    Done,
}

fn admin_local(config: Config, request: &AdminRequest) -> Result<AdminAnswer, String> {
    let (store, instance, rt) = open_local(&config)?;
    rt.block_on(async move {
        let spawner = Arc::new(DockerSpawner::new(&config.docker_socket, &instance));
        let state = AppState::new(store, spawner, Arc::new(config));
        Ok(match request {
            AdminRequest::Create(input, _) => {
                AdminAnswer::User(ops_users::create(&state, input.clone()).await?)
            }
            AdminRequest::Reset(input, _) => {
                ops_users::reset_password(&state, input.clone()).await?;
                AdminAnswer::Done
            }
            AdminRequest::List => AdminAnswer::Users(ops_users::list(&state).await?),
        })
    })
}

fn admin_remote(config: &Config, request: &AdminRequest) -> Result<AdminAnswer, String> {
    use rserve_proxy::ops::client;
    let socket = rserve_proxy::ops::socket::path(&config.data_dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let result = rt.block_on(async {
        match request {
            AdminRequest::Create(input, _) => client::json(
                &socket,
                http::Method::POST,
                "/v1/users",
                serde_json::to_value(input).ok(),
            )
            .await
            .map(AdminAnswer::User),
            AdminRequest::Reset(input, _) => client::request(
                &socket,
                http::Method::POST,
                "/v1/users/password",
                serde_json::to_value(input).ok(),
            )
            .await
            .map(|_| AdminAnswer::Done),
            AdminRequest::List => client::json(&socket, http::Method::GET, "/v1/users", None)
                .await
                .map(AdminAnswer::Users),
        }
    });
    result.map_err(|e| match e {
        client::ClientError::Unreachable(m) => format!(
            "a server holds {} but {m}; stop it and run the command again",
            config.state_file().display()
        ),
        other => other.to_string(),
    })
}
