//! `meshrelay web pair|sessions|revoke`: the web app's pairing links and
//! browser sessions (`protocol-spec/web.md`, "Pairing"). They work on the
//! data directory's files, with or without a running daemon.

use std::io::Write;

use serde_json::json;

use super::{CmdError, now_ms};
use crate::datadir::DataDir;
use crate::safe_text::for_terminal;
use crate::web::access;

/// `meshrelay web …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum WebCommand {
    /// Make a new one-time pairing link (valid ten minutes, for one
    /// browser) and show it with its QR code.
    Pair {
        /// Print JSON: {"url","expires_in_s"} (the QR code goes to standard error).
        #[arg(long)]
        json: bool,
    },
    /// List the paired browsers.
    Sessions {
        /// Print JSON: [{"id","created_ms","agent"}].
        #[arg(long)]
        json: bool,
    },
    /// Unpair a browser: its next request gets the login page.
    Revoke {
        /// The session's ID, as `web sessions` lists it.
        id: String,
    },
}

/// `text` as a QR code for a terminal (light on dark, with its quiet zone).
pub fn qr_for_terminal(text: &str) -> Result<String, CmdError> {
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M)
        .map_err(|e| CmdError::context("the text does not fit a QR code".into(), &e))?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Runs one `web` command.
pub fn run(
    dir: &DataDir,
    cmd: &WebCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CmdError> {
    match cmd {
        WebCommand::Pair { json } => {
            let Some(base) = access::pairing_base(dir)? else {
                return Err(CmdError::bad(
                    "no web app has been served on a non-loopback address from this data \
                     directory: start `meshrelay run --web ADDR` first (loopback needs no pairing)",
                ));
            };
            let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
            let url = access::new_pairing(dir, &base, now_ms()?, &mut rng)?;
            let qr = qr_for_terminal(&url)?;
            let ttl = access::PAIRING_TTL_MS / 1000;
            if *json {
                writeln!(out, "{}", json!({"url": url, "expires_in_s": ttl}))?;
                writeln!(err, "{qr}")?;
            } else {
                writeln!(out, "{qr}")?;
                writeln!(
                    out,
                    "Open this link in the browser to pair (one browser, {} minutes):",
                    ttl / 60
                )?;
                writeln!(out, "{url}")?;
            }
        }
        WebCommand::Sessions { json } => {
            let all = access::sessions(dir)?;
            if *json {
                let v: Vec<_> = all
                    .iter()
                    .map(|s| json!({"id": s.id, "created_ms": s.created_ms, "agent": s.agent}))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else if all.is_empty() {
                writeln!(out, "No paired browsers.")?;
            } else {
                for s in &all {
                    writeln!(
                        out,
                        "{}  paired {}  {}",
                        s.id,
                        i64::try_from(s.created_ms)
                            .ok()
                            .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                            .map_or_else(
                                || s.created_ms.to_string(),
                                |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string()
                            ),
                        for_terminal(&s.agent)
                    )?;
                }
            }
        }
        WebCommand::Revoke { id } => {
            if !access::revoke(dir, id)? {
                return Err(CmdError::bad(format!(
                    "no paired browser has the ID {}",
                    for_terminal(id)
                )));
            }
            writeln!(out, "Revoked {}.", for_terminal(id))?;
        }
    }
    Ok(())
}
