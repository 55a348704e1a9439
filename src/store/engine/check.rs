//! The integrity check behind `meshrelay store check`: re-reads every held
//! event, verifies it and its index rows, and recounts usage
//! (`protocol-spec/store.md`, §5 "File").

use super::rows::MetaRow;
use super::*;
use crate::event::Event;
use crate::store::{EventStore, MetaStore};

impl<K: Kv> Engine<K> {
    /// Re-reads every held event, checks its signature, ID and index rows,
    /// and recounts usage. `path` and `file_bytes` describe the file.
    pub fn check_report(&self) -> Result<CheckReport, StoreError> {
        const PAGE: usize = 256;
        let mut problems = Vec::new();
        let mut verified = 0u64;
        let mut usage = [ClassUsage::default(); 3];
        let mut held = 0u64;
        self.for_each_page(Table::EventMeta, PAGE, |page| {
            for (k, v) in &page {
                held += 1;
                let Some(id) = id_from(k) else {
                    problems.push("event metadata key of wrong length".to_string());
                    continue;
                };
                let row = match MetaRow::decode(v) {
                    Ok(row) => row,
                    Err(e) => {
                        problems.push(format!("event {id}: {e}"));
                        continue;
                    }
                };
                match self.kv.get(Table::Events, &be(row.serial))? {
                    None => problems.push(format!("event {id}: bytes missing")),
                    Some(b) => match Event::decode(&b) {
                        Ok(ev) if ev.id() == id => verified += 1,
                        Ok(_) => problems.push(format!("event {id}: bytes do not hash to the ID")),
                        Err(e) => problems.push(format!("event {id}: {e}")),
                    },
                }
                let u = &mut usage[usize::from(row.priority.tag())];
                u.events += 1;
                u.bytes += row.charged;
                let seq_key = cat(&[row.room.as_bytes(), &row.sender, &be(row.seq)]);
                match self.kv.get(Table::Seqs, &seq_key)? {
                    Some(s) if s.get(..32) == Some(id.as_bytes().as_slice()) => {}
                    _ => problems.push(format!("event {id}: sequence index row missing")),
                }
                let hw = self.mark(&cat(&[row.room.as_bytes(), &row.sender]))?.high;
                if hw < row.seq {
                    problems.push(format!("event {id}: high-water {hw} below seq {}", row.seq));
                }
                let item = cat(&[row.room.as_bytes(), &be(row.origin_ts_ms), k]);
                match self.kv.get(Table::RoomItems, &item)? {
                    None => problems.push(format!("event {id}: room item row missing")),
                    // Its class (empty in rows written before it was kept).
                    Some(v) if !v.is_empty() && v.as_slice() != [row.priority.tag()] => {
                        problems.push(format!("event {id}: room item row names another class"));
                    }
                    Some(_) => {}
                }
            }
            Ok(())
        })?;
        // Orphaned event bytes (no metadata row) waste budget invisibly.
        let mut stored = 0u64;
        self.for_each_page(Table::Events, PAGE, |page| {
            stored += page.len() as u64;
            Ok(())
        })?;
        if stored != held {
            problems.push(format!("{stored} event bodies for {held} metadata rows"));
        }
        let stats = self.stats()?;
        for (p, u) in Priority::ALL.iter().zip(usage.iter()) {
            let rec = match p {
                Priority::OwnUndelivered => stats.own_undelivered,
                Priority::OwnRoom => stats.own_room,
                Priority::Stranger => stats.stranger,
            };
            if rec != *u {
                problems.push(format!(
                    "class {}: counters say {} events / {} bytes, found {} / {}",
                    p.name(),
                    rec.events,
                    rec.bytes,
                    u.events,
                    u.bytes
                ));
            }
        }
        let rooms = self.rooms()?.len() as u64;
        Ok(CheckReport {
            path: self.path.as_ref().map(|p| p.display().to_string()),
            file_bytes: self
                .path
                .as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len()),
            schema_version: self.schema_version()?.unwrap_or(0),
            ok: problems.is_empty(),
            stats,
            config: self.config,
            rooms,
            events_verified: verified,
            problems,
        })
    }
}
