//! `portcullis-demo`: the demo MCP server on stdio (default) or `--http ADDR`.

use std::net::SocketAddr;
use std::process::ExitCode;

const USAGE: &str = "usage: portcullis-demo [--http ADDR]\n\
    \n\
    Serves the Portcullis demo MCP server on stdin/stdout, or with --http on\n\
    http://ADDR/mcp (e.g. --http 127.0.0.1:0 picks a free port; the bound address is printed).";

enum Mode {
    Stdio,
    Http(SocketAddr),
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Mode>, String> {
    let mode = match args.next().as_deref() {
        None => Mode::Stdio,
        Some("-h" | "--help") => return Ok(None),
        Some("--http") => {
            let addr = args.next().ok_or("--http needs an address, e.g. 127.0.0.1:8080")?;
            Mode::Http(addr.parse().map_err(|e| format!("invalid address {addr:?}: {e}"))?)
        }
        Some(other) => return Err(format!("unexpected argument {other:?}")),
    };
    match args.next() {
        Some(extra) => Err(format!("unexpected argument {extra:?}")),
        None => Ok(Some(mode)),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mode = match parse_args(std::env::args().skip(1)) {
        Ok(Some(mode)) => mode,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("portcullis-demo: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let served = match mode {
        Mode::Stdio => portcullis_demo::run_stdio().await,
        Mode::Http(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                match listener.local_addr() {
                    Ok(bound) => eprintln!("listening on http://{bound}/mcp"),
                    Err(e) => eprintln!("portcullis-demo: listening, but the bound address is unknown: {e}"),
                }
                portcullis_demo::run_http(listener).await
            }
            Err(e) => Err(e),
        },
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Mode>, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn defaults_to_stdio_and_parses_http_address() {
        assert!(matches!(parse(&[]), Ok(Some(Mode::Stdio))));
        assert!(matches!(parse(&["--http", "127.0.0.1:0"]), Ok(Some(Mode::Http(a))) if a.port() == 0));
        assert!(matches!(parse(&["--help"]), Ok(None)));
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(parse(&["--http"]).is_err());
        assert!(parse(&["--http", "localhost"]).is_err());
        assert!(parse(&["--verbose"]).is_err());
        assert!(parse(&["--http", "127.0.0.1:0", "extra"]).is_err());
    }
}
