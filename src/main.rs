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
    /// Send one command to a box over MQTT and print its reply (JSON, one line).
    /// Exit 0 on an ok reply, 1 on an error reply, 2 on a usage or connection error.
    Ctl(Box<CtlArgs>),
    /// Serve the operator console: every box of the school on one live web page, with
    /// the commands a person needs (docs/console.md).
    Console(Box<ConsoleArgs>),
}

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  roomcast ctl --broker mqtt://10.0.0.5:1883 --device box-17 login_room room_id=bigclass\n  roomcast ctl --broker mqtt://10.0.0.5:1883 --device box-17 send_custom_command room_id=bigclass command=mute to_users='[\"student-1\"]'\n\nOps and their arguments: docs/mqtt.md"
)]
struct CtlArgs {
    /// The broker: mqtt://host:port or mqtts://host:port.
    #[arg(long)]
    broker: String,
    /// The box's device_id.
    #[arg(long)]
    device: String,
    /// The topic prefix (the box's mqtt.topic_prefix).
    #[arg(long, default_value = "roomcast")]
    prefix: String,
    /// Seconds to wait for connecting and for the reply.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    #[command(flatten)]
    credentials: BrokerCredentials,
    /// The op, e.g. get_state, login_room, start_publishing.
    op: String,
    /// Arguments as key=value. Values that are JSON objects, arrays or strings are used as
    /// JSON (to_users='["a","b"]'); anything else is sent as text.
    args: Vec<String>,
}

/// How `ctl` and `console` log in to the broker.
#[derive(clap::Args)]
struct BrokerCredentials {
    #[arg(long)]
    username: Option<String>,
    /// The broker password (better in the environment than on the command line).
    #[arg(long, env = "ROOMCAST_MQTT_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// CA certificate (PEM) of an mqtts:// broker.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for brokers that require one (with --client-key).
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
}

impl BrokerCredentials {
    /// The broker settings for `url`, as client `client_id`.
    fn settings(
        &self,
        url: roomcast::config::MqttUrl,
        client_id: String,
    ) -> roomcast::control::BrokerSettings {
        roomcast::control::BrokerSettings {
            url,
            client_id,
            username: self.username.clone(),
            password: self
                .password
                .clone()
                .map(roomcast::base::secret::Secret::new),
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone().zip(self.client_key.clone()),
            keepalive: std::time::Duration::from_secs(30),
        }
    }
}

/// A client id of this run: `roomcast-<tool>-<pid>-<random>`.
fn client_id(tool: &str) -> String {
    format!(
        "roomcast-{tool}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  roomcast console --broker mqtt://10.0.0.5:1883\n  roomcast console --broker mqtts://broker.school.lan:8883 --ca-file ca.pem --listen 0.0.0.0:8090 --auth /etc/roomcast/console-users --janus wss://janus.school.lan:8989/\n\nMore: docs/console.md"
)]
struct ConsoleArgs {
    /// The broker: mqtt://host:port or mqtts://host:port. Give it again for a list (as the
    /// boxes' mqtt.urls): the console moves to the next broker when it loses one.
    #[arg(long, required = true)]
    broker: Vec<String>,
    /// Where the page is served. Anything but loopback needs --auth.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    /// Users allowed in: a file of `user:sha256-hex-of-the-password` lines
    /// (printf '%s' 'the password' | sha256sum). Browsers ask for the user and password.
    #[arg(long)]
    auth: Option<PathBuf>,
    /// Janus's WebSocket URL (ws:// or wss://), for live previews in the room view.
    #[arg(long)]
    janus: Option<String>,
    /// Where Debian's janus.js and adapter.js are (libjs-janus-gateway, libjs-webrtc-adapter).
    #[arg(long, default_value = "/usr/share/javascript")]
    javascript: PathBuf,
    /// The boxes' topic prefix (their mqtt.topic_prefix).
    #[arg(long, default_value = "roomcast")]
    prefix: String,
    /// Seconds a command may wait for its box's reply (a login waits for its room).
    #[arg(long, default_value_t = 70.0)]
    timeout: f64,
    #[command(flatten)]
    credentials: BrokerCredentials,
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
        Command::Ctl(args) => ctl(*args),
        Command::Console(args) => {
            logging::init(cli.log_format);
            console(*args)
        }
        Command::Run => {
            roomcast::service::memory::limit_arenas();
            logging::init(cli.log_format);
            // A broken file exits 2, like check-config; the unit does not restart on 2
            // (RestartPreventExitStatus=2): restarting cannot fix the file.
            let config = match Config::load(&cli.config) {
                Ok(config) => config,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            match run(&cli.config, config) {
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
                println!(
                    "# channel {channel}: publisher branches attach to vtee and atee (the agent also puts its own roomcastframelist element in front of vtee: one push per frame)"
                );
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

/// One MQTT topic level: not empty, no '/', '+', '#' or NUL.
fn topic_level_ok(level: &str) -> bool {
    !level.is_empty() && !level.contains(['/', '+', '#', '\0'])
}

/// The options `ctl` and `console` share: the broker URL, a reply timeout and the topic
/// prefix. `Err`: what is wrong, naming the option.
fn broker_options(
    broker: &str,
    timeout: f64,
    prefix: &str,
) -> Result<roomcast::config::MqttUrl, String> {
    let url = roomcast::config::MqttUrl::parse(broker).map_err(|e| format!("--broker: {e}"))?;
    if !(timeout > 0.0 && timeout <= 3600.0) {
        return Err(format!(
            "--timeout {timeout} must be more than 0 and at most 3600 seconds"
        ));
    }
    if !prefix.split('/').all(topic_level_ok) {
        return Err(format!(
            "--prefix {prefix:?}: topic levels separated by '/', without '+', '#' or empty levels"
        ));
    }
    Ok(url)
}

fn ctl(args: CtlArgs) -> ExitCode {
    use roomcast::control::Topics;
    use roomcast::control::client::{CommandClient, parse_args};

    let usage = |message: String| {
        eprintln!("roomcast ctl: {message}");
        ExitCode::from(2)
    };
    let url = match broker_options(&args.broker, args.timeout, &args.prefix) {
        Ok(url) => url,
        Err(message) => return usage(message),
    };
    if !topic_level_ok(&args.device) {
        return usage(format!(
            "--device {:?}: a device id is one topic level, without '/', '+' or '#'",
            args.device
        ));
    }
    let command_args = match parse_args(&args.args) {
        Ok(value) => value,
        Err(e) => return usage(e),
    };
    let broker = args.credentials.settings(url, client_id("ctl"));
    let topics = Topics::new(&args.prefix, &args.device);
    let timeout = std::time::Duration::from_secs_f64(args.timeout);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return usage(format!("cannot start the async runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        let client = CommandClient::connect(&broker, topics, timeout).await?;
        let reply = client.request(&args.op, command_args).await;
        client.close().await;
        reply
    });
    match outcome {
        Ok(reply) => {
            println!("{reply}");
            if reply["ok"] == serde_json::Value::Bool(true) {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "roomcast ctl: error {}: {}",
                    reply["error"]["code"],
                    reply["error"]["message"].as_str().unwrap_or("(no message)")
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => usage(e.to_string()),
    }
}

fn console(args: ConsoleArgs) -> ExitCode {
    use roomcast::console::{ConsoleSettings, auth::Users};

    let usage = |message: String| {
        eprintln!("roomcast console: {message}");
        ExitCode::from(2)
    };
    let mut urls = Vec::new();
    for broker in &args.broker {
        match broker_options(broker, args.timeout, &args.prefix) {
            Ok(url) => urls.push(url),
            Err(message) => return usage(message),
        }
    }
    if let Some((_, problem)) = roomcast::config::broker_list_problems(&urls).first() {
        return usage(format!("--broker: {problem}"));
    }
    if let Some(janus) = &args.janus
        && !(janus.starts_with("ws://") || janus.starts_with("wss://"))
    {
        return usage(format!(
            "--janus {janus:?}: give Janus's WebSocket URL, ws://host:8188/ or wss://host:8989/"
        ));
    }
    if args.auth.is_none() && !args.listen.ip().is_loopback() {
        return usage(roomcast::console::ConsoleError::NeedsAuth(args.listen).to_string());
    }
    let users = match args.auth.as_deref().map(Users::load).transpose() {
        Ok(users) => users,
        Err(e) => return usage(e.to_string()),
    };
    let client_id = client_id("console");
    let settings = ConsoleSettings {
        brokers: urls
            .into_iter()
            .map(|url| args.credentials.settings(url, client_id.clone()))
            .collect(),
        prefix: args.prefix,
        listen: args.listen,
        users,
        janus: args.janus,
        javascript: args.javascript,
        command_timeout: std::time::Duration::from_secs_f64(args.timeout),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("roomcast-console")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return usage(format!("cannot start the async runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let console = roomcast::console::start(settings, shutdown.clone()).await?;
        println!("roomcast console: http://{}/", console.local_addr);
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            shutdown.cancel();
            console.stopped().await;
            anyhow::bail!("cannot install signal handlers");
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("console: stopping");
        shutdown.cancel();
        console.stopped().await;
        Ok::<(), anyhow::Error>(())
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(300));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("roomcast console: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path, config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("roomcast")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
        tokio::spawn(watch_signals(shutdown.clone(), reload_tx));
        let options = roomcast::service::RunOptions {
            config_path: Some(path.to_owned()),
            reloads: Some(reloads),
            notifier: None,
        };
        roomcast::service::run(config, shutdown, options).await
    });
    // Work still running (a pipeline going to NULL on a blocking thread) gets a moment,
    // not a say in when the process ends.
    runtime.shutdown_timeout(std::time::Duration::from_millis(300));
    result?;
    Ok(())
}

/// First SIGTERM or SIGINT: shut down cleanly (leave every room). A second one: exit now.
/// SIGHUP: reload the configuration file.
async fn watch_signals(shutdown: CancellationToken, reload: tokio::sync::mpsc::Sender<()>) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop roomcast with SIGKILL");
        return;
    };
    let mut received = 0;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                // One pending reload is enough: it reads the file as it is then.
                let _ = reload.try_send(());
                continue;
            }
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
