//! `meshrelay bridge registration|invite|status` (`protocol-spec/bridge.md`,
//! "Commands"). `registration` writes the data directory's registration;
//! `invite` and `status` ask the running bridge (`run --bridge`) over its
//! socket.

use std::io::Write;
use std::net::SocketAddr;

use super::CmdError;
use crate::bridge::local::{self, BridgeStatus, LocalOp};
use crate::bridge::{BridgeConfig, BridgeError, config};
use crate::datadir::DataDir;
use crate::safe_text::for_terminal;

/// `meshrelay bridge …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BridgeCommand {
    /// Make the application-service registration: print the YAML file the
    /// homeserver loads, store its fresh tokens in the data directory.
    Registration {
        /// The homeserver's client-server API URL (https, or http on loopback).
        #[arg(long, value_name = "URL")]
        homeserver: String,
        /// The homeserver's domain (the part after ':' in user IDs).
        #[arg(long, value_name = "DOMAIN")]
        domain: String,
        /// Where the bridge's application-service API listens.
        #[arg(long, value_name = "ADDR", default_value = config::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Prefix of puppets' user IDs and of room aliases.
        #[arg(long, value_name = "PREFIX", default_value = config::DEFAULT_PREFIX)]
        prefix: String,
    },
    /// Invite a Matrix user to the Matrix room of every bridged room (or
    /// one).
    Invite {
        /// The Matrix user ID (@user:domain).
        matrix_user_id: String,
        /// Only this mesh room.
        #[arg(long, value_name = "ROOM_ID")]
        room: Option<String>,
    },
    /// The bridged rooms and what crossed the bridge.
    Status {
        /// Print JSON: {"rooms":[{"room_id","matrix_room_id","alias"}],"puppets","to_matrix","to_mesh","pending"}.
        #[arg(long)]
        json: bool,
    },
}

fn failure(e: BridgeError) -> CmdError {
    match e {
        BridgeError::BadInput(_) | BridgeError::NotRegistered => CmdError::bad(e),
        e => CmdError::msg(e),
    }
}

/// Flags this device's contact card as a bridge's (signed), so members
/// see in the roster that a room with it is bridged. Cards given out
/// before do not have the flag: give the card out after this.
fn mark_card(dir: &DataDir) -> Result<(), CmdError> {
    let (identity, card) = dir
        .load()
        .map_err(|e| CmdError::msg(format!("reading the identity: {e}")))?;
    if card.bridge {
        return Ok(());
    }
    let card = card.with_bridge_flag(&identity, true);
    dir.write_atomic(crate::datadir::CARD_FILE, card.to_text().as_bytes())
        .map_err(|e| CmdError::msg(format!("writing the card: {e}")))
}

/// Runs one `bridge` command.
pub fn run(dir: &DataDir, cmd: &BridgeCommand, out: &mut dyn Write) -> Result<(), CmdError> {
    let w = |out: &mut dyn Write, s: String| {
        out.write_all(s.as_bytes())
            .map_err(|e| CmdError::msg(format!("standard output: {e}")))
    };
    match cmd {
        BridgeCommand::Registration {
            homeserver,
            domain,
            listen,
            prefix,
        } => {
            if !dir.has_identity() {
                return Err(CmdError::bad(
                    "no identity: run `meshrelay init --name NAME` for the bridge's device first",
                ));
            }
            let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
            let cfg = BridgeConfig::new(homeserver, domain, *listen, prefix, &mut rng)
                .map_err(failure)?;
            cfg.save(dir).map_err(failure)?;
            mark_card(dir)?;
            w(out, cfg.registration_yaml())
        }
        BridgeCommand::Invite {
            matrix_user_id,
            room,
        } => {
            let v = local::request(
                dir.root(),
                &LocalOp::Invite {
                    user: matrix_user_id.clone(),
                    room: room.clone(),
                },
            )
            .map_err(failure)?;
            let n = v["invited"].as_array().map_or(0, Vec::len);
            w(
                out,
                format!(
                    "Invited {} to {n} bridged room{}.\n",
                    for_terminal(matrix_user_id),
                    if n == 1 { "" } else { "s" }
                ),
            )
        }
        BridgeCommand::Status { json } => {
            let v = local::request(dir.root(), &LocalOp::Status).map_err(failure)?;
            if *json {
                return w(out, format!("{v}\n"));
            }
            let s: BridgeStatus = serde_json::from_value(v)
                .map_err(|e| CmdError::msg(format!("bad reply from the bridge: {e}")))?;
            let mut text = format!(
                "Bridge: {} room{}, {} puppet{}; {} to Matrix, {} to the mesh, {} pending\n",
                s.rooms.len(),
                if s.rooms.len() == 1 { "" } else { "s" },
                s.puppets,
                if s.puppets == 1 { "" } else { "s" },
                s.to_matrix,
                s.to_mesh,
                s.pending
            );
            for r in &s.rooms {
                text.push_str(&format!(
                    "  {}  {}  {}\n",
                    for_terminal(&r.room_id),
                    for_terminal(&r.alias),
                    for_terminal(&r.matrix_room_id)
                ));
            }
            w(out, text)
        }
    }
}
