use clap::Parser;

use cleandift::app::AppArgs;
use cleandift::cli::{Command, run};

/// CleanDIFT Explorer: clean vs noisy diffusion features.
///
/// With no command it opens the app: `cleandift [A B]` (default: the last
/// session's images, or the embedded sample pair).
#[derive(Debug, Parser)]
#[command(
    name = "cleandift",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true
)]
struct Main {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    app: AppArgs,
}

fn main() -> std::process::ExitCode {
    cleandift::util::tune_allocator();
    // eframe logs every failed start at ERROR before returning the error to
    // us; `app::run` reports each one itself (the software-rasterizer
    // fallback to glow is not an error), so eframe's line is silenced unless
    // RUST_LOG names eframe.
    let rust_log = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    if !rust_log.contains("eframe")
        && let Ok(d) = "eframe::native::run=off".parse()
    {
        filter = filter.add_directive(d);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Main::parse();
    let result = match cli.command {
        Some(cmd) => {
            cleandift::util::default_sigpipe();
            run(cmd)
        }
        None => cleandift::app::run(cli.app),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cleandift::util::error_chain(&*e));
            std::process::ExitCode::FAILURE
        }
    }
}
