//! What analysts set on alerts: a status per (gemeente, month, area,
//! measure), with who set it and when. Written through the writer thread
//! ([`crate::IngestQueue::set_alert_status`]); erased with the months that
//! retention purges.

use wijkradar_domain::{GemeenteCode, Month};

use crate::StoreError;

pub(crate) const ALERT_STATUS: u8 = b'A';

/// Where an analyst stands with an alert. An alert without a stored status
/// is new; an analyst can set it back to new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertStatus {
    New,
    Seen,
    TakenUp,
    Closed,
}

impl AlertStatus {
    fn code(self) -> u8 {
        match self {
            AlertStatus::New => 0,
            AlertStatus::Seen => 1,
            AlertStatus::TakenUp => 2,
            AlertStatus::Closed => 3,
        }
    }

    fn from_code(c: u8) -> Option<AlertStatus> {
        match c {
            0 => Some(AlertStatus::New),
            1 => Some(AlertStatus::Seen),
            2 => Some(AlertStatus::TakenUp),
            3 => Some(AlertStatus::Closed),
            _ => None,
        }
    }
}

/// A stored status: what, by which organisation, when (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertStatusRecord {
    pub status: AlertStatus,
    pub by: String,
    pub at: i64,
}

/// Which alert: an area and a measure (signal type or derived indicator)
/// of a gemeente's month.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AlertRef {
    pub gemeente: GemeenteCode,
    pub month: Month,
    pub area: String,
    pub measure: String,
}

impl AlertRef {
    /// `A` · gemeente · month · area length · area · measure.
    pub(crate) fn key(&self) -> Vec<u8> {
        let mut k = vec![ALERT_STATUS];
        k.extend_from_slice(self.gemeente.body());
        k.extend_from_slice(&self.month.index().to_be_bytes());
        k.push(self.area.len() as u8);
        k.extend_from_slice(self.area.as_bytes());
        k.extend_from_slice(self.measure.as_bytes());
        k
    }

    pub(crate) fn prefix(g: GemeenteCode, month: Month) -> Vec<u8> {
        let mut k = vec![ALERT_STATUS];
        k.extend_from_slice(g.body());
        k.extend_from_slice(&month.index().to_be_bytes());
        k
    }

    /// The month and measure of a key, for retention.
    pub(crate) fn month_and_measure(key: &[u8]) -> Option<(Month, &str)> {
        let month = Month::from_index(u32::from_be_bytes(key.get(5..9)?.try_into().ok()?))?;
        let n = usize::from(*key.get(9)?);
        let measure = std::str::from_utf8(key.get(10 + n..)?).ok()?;
        Some((month, measure))
    }

    pub(crate) fn parse(g: GemeenteCode, month: Month, key: &[u8]) -> Result<AlertRef, StoreError> {
        let corrupt = || StoreError::Corrupt;
        let n = usize::from(*key.get(9).ok_or_else(corrupt)?);
        let area = key.get(10..10 + n).ok_or_else(corrupt)?;
        let measure = key.get(10 + n..).ok_or_else(corrupt)?;
        Ok(AlertRef {
            gemeente: g,
            month,
            area: String::from_utf8(area.to_vec()).map_err(|_| corrupt())?,
            measure: String::from_utf8(measure.to_vec()).map_err(|_| corrupt())?,
        })
    }
}

impl AlertStatusRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.status.code()];
        v.extend_from_slice(&self.at.to_be_bytes());
        v.extend_from_slice(self.by.as_bytes());
        v
    }

    pub(crate) fn decode(v: &[u8]) -> Result<AlertStatusRecord, StoreError> {
        let corrupt = || StoreError::Corrupt;
        let status = AlertStatus::from_code(*v.first().ok_or_else(corrupt)?).ok_or_else(corrupt)?;
        let at = i64::from_be_bytes(
            v.get(1..9)
                .ok_or_else(corrupt)?
                .try_into()
                .map_err(|_| corrupt())?,
        );
        let by = String::from_utf8(v[9..].to_vec()).map_err(|_| corrupt())?;
        Ok(AlertStatusRecord { status, by, at })
    }
}
