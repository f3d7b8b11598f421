//! Health probes and tiny protocol clients, all with hard timeouts: a probe never hangs
//! (a 4lw probe without one once hung for ten minutes on a starting ZooKeeper).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Connect, read and write timeout of every probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

fn connect(addr: &str) -> Result<TcpStream, String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("bad address {addr}: {e}"))?;
    let stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Sends `request` and reads until the server closes or `PROBE_TIMEOUT` passes.
pub fn exchange(addr: &str, request: &[u8]) -> Result<Vec<u8>, String> {
    let mut stream = connect(addr)?;
    stream.write_all(request).map_err(|e| format!("write to {addr}: {e}"))?;
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
            Err(e) if response.is_empty() => return Err(format!("read from {addr}: {e}")),
            Err(_) => break,
        }
    }
    Ok(response)
}

/// An HTTP/1.1 request with `Connection: close`; returns the status code and the body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), String> {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let response = String::from_utf8_lossy(&exchange(addr, request.as_bytes())?).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            format!(
                "no HTTP status from {addr}: {:?}",
                response.chars().take(80).collect::<String>()
            )
        })?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_owned();
    Ok((status, body))
}

/// One Redis command in RESP; returns the raw reply.
pub fn redis(addr: &str, args: &[&str]) -> Result<String, String> {
    let mut stream = connect(addr)?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut buffer = [0u8; 4096];
    let n = stream.read(&mut buffer).map_err(|e| format!("read from {addr}: {e}"))?;
    Ok(String::from_utf8_lossy(&buffer[..n]).into_owned())
}

/// Redis commands whose replies are one line each (`+OK`, `:1`, `-ERR …`), sent on one
/// connection in order; returns the replies. A connection of its own matters for `WAIT`:
/// it waits for the replicas to acknowledge that connection's own writes.
pub fn redis_lines(addr: &str, commands: &[&[&str]]) -> Result<Vec<String>, String> {
    let mut stream = connect(addr)?;
    let mut request = String::new();
    for args in commands {
        request.push_str(&format!("*{}\r\n", args.len()));
        for arg in *args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
    }
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut received = String::new();
    let mut buffer = [0u8; 4096];
    while received.matches("\r\n").count() < commands.len() {
        let n = stream.read(&mut buffer).map_err(|e| format!("read from {addr}: {e}"))?;
        if n == 0 {
            return Err(format!("{addr} closed the connection after {received:?}"));
        }
        received.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    Ok(received.split_terminator("\r\n").map(str::to_owned).collect())
}

/// Runs a client program (curl, redis-cli, etcdctl: the probes of the TLS servers, which
/// the harness reaches through those rather than a TLS stack of its own) with its output
/// captured, killing it if it has not exited within `timeout`. The output is read once the
/// program exits, so it must fit the pipe (64 KiB): a probe's answer does.
pub fn output(command: &mut Command, timeout: Duration) -> Result<Output, String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} did not finish within {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    }
    child
        .wait_with_output()
        .map_err(|e| format!("reading {program}'s output: {e}"))
}

/// A ZooKeeper four-letter-word command (`ruok`, `srvr`, …).
pub fn four_letter_word(addr: &str, word: &str) -> Result<String, String> {
    Ok(String::from_utf8_lossy(&exchange(addr, word.as_bytes())?).into_owned())
}

/// The headers DynamoDB (and its emulators) require on a JSON request for `target`; the
/// signature is not checked by the emulators, but a SigV4-shaped header must be there.
pub fn dynamodb_headers(target: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "application/x-amz-json-1.0".to_owned()),
        ("X-Amz-Target", format!("DynamoDB_20120810.{target}")),
        ("X-Amz-Date", "20240101T000000Z".to_owned()),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=valkeyrie/20240101/us-east-1/dynamodb/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=00"
                .to_owned(),
        ),
    ]
}

/// A DynamoDB JSON request.
pub fn dynamodb(addr: &str, target: &str, body: &str) -> Result<(u16, String), String> {
    let headers = dynamodb_headers(target);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    http(addr, "POST", "/", &headers, body)
}
