//! firerunner guest agent: serves the host's requests over a framed byte stream.

mod entropy;
mod server;
mod system;

use std::fs::OpenOptions;
use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let is_init = std::process::id() == 1;
    let own_children = server::OwnChildren::default();
    if is_init {
        system::init_mounts();
        system::spawn_reaper(own_children.clone());
    }
    let spec = if args.iter().any(|a| a == "--stdio") {
        "stdio".to_owned()
    } else if let Some(pos) = args.iter().position(|a| a == "--transport") {
        args.get(pos + 1).cloned().unwrap_or_default()
    } else {
        system::cmdline_transport().unwrap_or_else(|| "virtio-port:org.firerunner.agent".into())
    };
    // A guest serves one host connection after another: the host reconnects
    // after a snapshot restore, and a virtio port reads end-of-file while no
    // host is attached. Only `--stdio` serves a single connection.
    let mut last_error: Option<String> = None;
    loop {
        let (reader, writer): (Box<dyn Read + Send>, Box<dyn Write + Send>) = match open(&spec) {
            Ok(pair) => pair,
            Err(err) => {
                let message = format!("firerunner-agent: cannot open transport {spec}: {err}");
                if last_error.as_deref() != Some(message.as_str()) {
                    eprintln!("{message}");
                    last_error = Some(message);
                }
                if is_init && spec != "stdio" {
                    std::thread::sleep(RECONNECT_PAUSE);
                    continue;
                }
                std::process::exit(1);
            }
        };
        let shutdown = server::serve(reader, writer, own_children.clone());
        if shutdown && is_init {
            system::power_off();
        }
        if shutdown || spec == "stdio" {
            return;
        }
        std::thread::sleep(RECONNECT_PAUSE);
    }
}

/// Pause between two connections, so a detached port is polled, not spun on.
const RECONNECT_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

fn open(spec: &str) -> std::io::Result<(Box<dyn Read + Send>, Box<dyn Write + Send>)> {
    if spec == "stdio" {
        return Ok((Box::new(std::io::stdin()), Box::new(std::io::stdout())));
    }
    let (kind, arg) = spec.split_once(':').unwrap_or((spec, ""));
    let path = match kind {
        "serial" => arg.to_owned(),
        "virtio-port" => system::find_virtio_port(arg)?,
        "vsock" => {
            let port = arg.parse().unwrap_or(1024);
            let stream = system::vsock_accept(port)?;
            let clone = stream.try_clone()?;
            return Ok((Box::new(stream), Box::new(clone)));
        }
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("unknown transport kind {kind}"),
            ))
        }
    };
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let clone = file.try_clone()?;
    Ok((Box::new(file), Box::new(clone)))
}
