//! The `jitflow` binary: parses the command line and runs it (see the library's docs).

use std::process::ExitCode;

use clap::Parser;
use jitflow_cli::cli::{Cli, Command};
use jitflow_cli::progress::Interrupt;
use jitflow_cli::{Outcome, exit};

fn main() -> ExitCode {
    // Usage errors and --help exit through clap (code 2, or 0 for help).
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jitflow: cannot start: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let interrupt = Interrupt::default();
    // Commands whose every step may be abandoned: on Ctrl-C they stop at once (they only read,
    // or send one request). The others (export, stats, tail) check the flag between pages, and
    // compact and upgrade finish their transaction first.
    let abandon = matches!(
        cli.command,
        Command::Verify
            | Command::Connections(_)
            | Command::Connection(_)
            | Command::Activation(_)
            | Command::Approvals(_)
            | Command::Completions(_)
    );
    let result = runtime.block_on(async {
        // Offline work is synchronous: it runs on a blocking thread so the signal is heard.
        let work = tokio::task::spawn_blocking({
            let interrupt = interrupt.clone();
            move || {
                let handle = tokio::runtime::Handle::current();
                let mut out = std::io::stdout().lock();
                handle.block_on(jitflow_cli::run(cli, interrupt, &mut out))
            }
        });
        tokio::pin!(work);
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let finished = |done: Result<_, tokio::task::JoinError>| {
            done.unwrap_or_else(|e| {
                Err(jitflow_cli::Error::Store(format!(
                    "the command failed: {e}"
                )))
            })
        };
        tokio::select! {
            done = &mut work => finished(done),
            () = ctrl_c => {
                interrupt.set();
                if abandon {
                    eprintln!("jitflow: interrupted; nothing was changed");
                    Ok(Outcome::Interrupted)
                } else {
                    eprintln!("jitflow: Ctrl-C: stopping cleanly...");
                    finished(work.await).map(|_| Outcome::Interrupted)
                }
            }
        }
    });
    match result {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(e) => {
            eprintln!("jitflow: {e}");
            ExitCode::from(e.code())
        }
    }
}
