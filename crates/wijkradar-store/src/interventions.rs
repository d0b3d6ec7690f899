//! Registered interventions, every version kept: `I` · gemeente · id ·
//! version → the version as JSON. A new version is written only if its key
//! is still free ([`crate::IngestQueue::put_intervention`]), so two
//! analysts changing the same intervention cannot overwrite each other.
//! Interventions hold no signal data; retention leaves them alone.

use wijkradar_domain::GemeenteCode;
use wijkradar_domain::intervention::Intervention;

use crate::{Store, StoreError};

pub(crate) const INTERVENTION: u8 = b'I';

pub(crate) fn key(g: GemeenteCode, id: u32, version: u32) -> Vec<u8> {
    let mut k = prefix(g);
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(&version.to_be_bytes());
    k
}

fn prefix(g: GemeenteCode) -> Vec<u8> {
    let mut k = vec![INTERVENTION];
    k.extend_from_slice(g.body());
    k
}

pub(crate) fn encode(i: &Intervention) -> Vec<u8> {
    serde_json::to_vec(i).expect("an intervention serialises")
}

fn decode(v: &[u8]) -> Result<Intervention, StoreError> {
    serde_json::from_slice(v).map_err(|_| StoreError::Corrupt)
}

impl Store {
    /// Every version of every intervention of gemeente `g`, by id, then
    /// version.
    pub fn intervention_versions(&self, g: GemeenteCode) -> Result<Vec<Intervention>, StoreError> {
        self.db
            .scan_prefix(prefix(g))
            .map(|kv| decode(&kv?.1))
            .collect()
    }

    /// The latest version of each intervention of `g`, by id.
    pub fn interventions(&self, g: GemeenteCode) -> Result<Vec<Intervention>, StoreError> {
        let mut latest: Vec<Intervention> = Vec::new();
        for i in self.intervention_versions(g)? {
            match latest.last_mut() {
                Some(last) if last.id == i.id => *last = i,
                _ => latest.push(i),
            }
        }
        Ok(latest)
    }

    /// The latest version of intervention `id` of `g`.
    pub fn intervention(
        &self,
        g: GemeenteCode,
        id: u32,
    ) -> Result<Option<Intervention>, StoreError> {
        let mut p = prefix(g);
        p.extend_from_slice(&id.to_be_bytes());
        match self.db.scan_prefix(p).next_back() {
            Some(kv) => Ok(Some(decode(&kv?.1)?)),
            None => Ok(None),
        }
    }
}
