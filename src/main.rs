//! The `roomcast` command line. Everything the agent does lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use roomcast::base::logging::{self, LogFormat};
use roomcast::config::{Config, DEFAULT_CONFIG_PATH};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "roomcast",
    version,
    about = "Classroom camera agent: one encode, several real-time rooms, driven over MQTT"
)]
struct Cli {
    /// The configuration file.
    #[arg(long, short, global = true, env = "ROOMCAST_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,

    /// How log lines are written.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (what the systemd unit starts).
    Run,
    /// Check the configuration file: exit 0 and a one-line summary when valid, exit 2 and
    /// what is wrong (file, line, field, what is allowed) when not.
    CheckConfig,
    /// Print the capture and encode pipeline of each channel, gst-launch style, as the
    /// agent would build it on this machine (encoder chosen, cameras probed).
    Pipeline,
    /// List the cameras (V4L2), microphones and speakers (ALSA) and H.264 encoders
    /// (GStreamer) of this box, and the configuration lines to use them.
    Devices {
        /// Print the list as JSON (for machines).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig => check_config(&cli.config),
        Command::Pipeline => print_pipeline(&cli.config),
        Command::Devices { json } => {
            logging::init(cli.log_format);
            devices(json)
        }
        Command::Run => {
            logging::init(cli.log_format);
            match run(&cli.config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("roomcast: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            println!("{}: ok: {}", path.display(), config.summary());
            for warning in config.warnings() {
                eprintln!("{}: warning: {warning}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn print_pipeline(path: &std::path::Path) -> ExitCode {
    let result = Config::load(path)
        .map_err(anyhow::Error::from)
        .and_then(|config| roomcast::media::describe_all(&config).map_err(anyhow::Error::from));
    match result {
        Ok((encoder, channels)) => {
            println!(
                "# video encoder: {} (preset {}; `roomcast devices` lists the alternatives)",
                encoder.spec.element, encoder.preset
            );
            for (channel, description) in channels {
                println!("# channel {channel}: publisher branches attach to vtee and atee");
                println!("gst-launch-1.0 {description}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(2)
        }
    }
}

/// Prints the devices of this box: exit 0 whatever is (not) found; 1 only when GStreamer itself cannot start.
fn devices(json: bool) -> ExitCode {
    if let Err(e) = roomcast::webrtc::init() {
        eprintln!("roomcast: {e}");
        return ExitCode::FAILURE;
    }
    let list = roomcast::media::devices::list();
    if json {
        match serde_json::to_string_pretty(&list) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("roomcast: cannot write the device list as JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{list}");
    }
    ExitCode::SUCCESS
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("roomcast")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        roomcast::run(config, shutdown).await
    })?;
    Ok(())
}

/// First SIGTERM or SIGINT: shut down cleanly (leave every room). A second one: exit now.
async fn watch_signals(shutdown: CancellationToken) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop roomcast with SIGKILL");
        return;
    };
    let mut received = 0;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        received += 1;
        if received == 1 {
            tracing::info!(
                "shutting down: leaving every room (send the signal again to exit at once)"
            );
            shutdown.cancel();
        } else {
            tracing::warn!("second stop signal: exiting at once");
            std::process::exit(130);
        }
    }
}
