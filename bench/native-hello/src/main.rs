//! The native baseline of `cargo xtask bench plugins`: `GET /hello/{name}` -> `Hello, {name}!`
//! from a plain actix-web handler, with as many workers as CPUs (like the server's default).
//!
//! Usage: `native-hello [--addr HOST:PORT]` (or `NATIVE_HELLO_ADDR`; default 127.0.0.1:8080;
//! port 0 picks a free port). Prints `listening on http://ADDR` once bound.

use std::io::Write;

use actix_web::{App, HttpResponse, HttpServer, get, web};

const DEFAULT_ADDR: &str = "127.0.0.1:8080";
const USAGE: &str = "usage: native-hello [--addr HOST:PORT] (or NATIVE_HELLO_ADDR)";

#[get("/hello/{name}")]
async fn hello(name: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(format!("Hello, {name}!"))
}

fn main() -> std::io::Result<()> {
    let addr = match parse_addr(
        std::env::args().skip(1),
        std::env::var("NATIVE_HELLO_ADDR").ok(),
    ) {
        Ok(addr) => addr,
        Err(message) => {
            eprintln!("native-hello: {message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(|| App::new().service(hello))
            .workers(workers)
            .bind(&addr)?;
        let mut stdout = std::io::stdout().lock();
        for bound in server.addrs() {
            writeln!(stdout, "listening on http://{bound}")?;
        }
        stdout.flush()?;
        drop(stdout);
        server.run().await
    })
}

/// `--addr X` or `--addr=X` wins over the environment, which wins over the default.
fn parse_addr(
    mut args: impl Iterator<Item = String>,
    env: Option<String>,
) -> Result<String, String> {
    let mut addr = env.filter(|a| !a.is_empty());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = Some(args.next().ok_or("--addr needs a value")?),
            "-h" | "--help" => return Err("help".to_string()),
            _ => match arg.strip_prefix("--addr=") {
                Some(value) => addr = Some(value.to_string()),
                None => return Err(format!("unexpected argument `{arg}`")),
            },
        }
    }
    Ok(addr.unwrap_or_else(|| DEFAULT_ADDR.to_string()))
}

#[cfg(test)]
mod tests {
    use super::parse_addr;

    fn args(s: &str) -> impl Iterator<Item = String> {
        s.split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn flag_beats_env_beats_default() {
        assert_eq!(parse_addr(args(""), None).unwrap(), "127.0.0.1:8080");
        assert_eq!(
            parse_addr(args(""), Some("127.0.0.1:0".into())).unwrap(),
            "127.0.0.1:0"
        );
        assert_eq!(
            parse_addr(args("--addr 0.0.0.0:9"), Some("127.0.0.1:0".into())).unwrap(),
            "0.0.0.0:9"
        );
        assert_eq!(parse_addr(args("--addr=[::1]:0"), None).unwrap(), "[::1]:0");
        assert!(parse_addr(args("--addr"), None).is_err());
        assert!(parse_addr(args("--port 1"), None).is_err());
    }
}
