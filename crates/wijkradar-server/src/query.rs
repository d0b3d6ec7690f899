//! The query service: the catalogue and protected tables, nothing else.

use std::sync::Arc;

use std::collections::HashMap;
use tonic::{Request, Response, Status};

use wijkradar_domain::derived::{self, Derived, HouseholdSignal};
use wijkradar_domain::{AreaCode, BuurtCode, CellTotal, GemeenteCode, Month, SignalTypeName};
use wijkradar_pki::Role;
use wijkradar_proto::v1::{self as pb, query_service_server::QueryService};
use wijkradar_release::{GemeenteTable, Rate, Released};
use wijkradar_store::ReleaseSnapshot;

use crate::State;
use crate::auth::authorize;
use crate::convert::{
    Period, TableQuery, gemeente_from_proto, level_to_proto, table_query_from_proto,
};
use crate::error::ApiError;

/// A table's release version and every cell of it, in node order.
pub(crate) type VersionedRelease = (u32, Vec<(AreaCode, Released)>);

/// A derived indicator's households per (month, buurt).
pub(crate) type DerivedTotals = HashMap<(Month, BuurtCode), CellTotal>;

#[derive(Debug)]
pub struct Query {
    pub(crate) state: Arc<State>,
}

fn signal_unit(u: wijkradar_domain::SignalUnit) -> pb::SignalUnit {
    match u {
        wijkradar_domain::SignalUnit::Household => pb::SignalUnit::Household,
        wijkradar_domain::SignalUnit::Person => pb::SignalUnit::Person,
    }
}

fn signal_kind(k: wijkradar_domain::SignalKind) -> pb::SignalKind {
    match k {
        wijkradar_domain::SignalKind::Risk => pb::SignalKind::Risk,
        wijkradar_domain::SignalKind::Protective => pb::SignalKind::Protective,
    }
}

impl Query {
    fn table(&self, req: pb::GetTableRequest) -> Result<pb::GetTableResponse, ApiError> {
        let state = &self.state;
        let q = table_query_from_proto(req, &state.hierarchy, &state.catalogue)?;
        // Every level is answered from the one audited release of the whole
        // gemeente table, so no combination of levels gives more.
        let table = GemeenteTable::new(&state.hierarchy, q.gemeente);
        let now = crate::ingest::current_month();
        let mut cells = Vec::new();
        if q.period != Period::Month {
            self.period_cells(&mut cells, &table, &q, now)?;
            return Ok(pb::GetTableResponse {
                cells,
                k: state.policy.k(),
                max_noise: state.policy.max_noise(),
                rate_floor: state.bases.floor,
                household_base_measure: state.base_measure.clone(),
            });
        }
        for signal_type in &q.signal_types {
            for month in q.from.through(q.to) {
                let release = self.release(&table, signal_type, month, q.gemeente, now)?;
                self.push_cells(
                    &mut cells,
                    &table,
                    q.level,
                    signal_type.as_str(),
                    &month.to_string(),
                    release,
                );
            }
        }
        if !q.derived.is_empty() {
            let months: Vec<Month> = q.from.through(q.to).collect();
            let totals = self.derived_totals(q.gemeente, &q.derived, &months)?;
            for d in &q.derived {
                for &month in &months {
                    let release = (month < now).then(|| {
                        let month_totals: Vec<(BuurtCode, CellTotal)> = totals[d]
                            .iter()
                            .filter(|((m, _), _)| *m == month)
                            .map(|((_, b), t)| (*b, *t))
                            .collect();
                        (1, table.release(&state.policy, &month_totals))
                    });
                    let label = month.to_string();
                    self.push_cells(&mut cells, &table, q.level, d.name(), &label, release);
                }
            }
        }
        Ok(pb::GetTableResponse {
            cells,
            k: state.policy.k(),
            max_noise: state.policy.max_noise(),
            rate_floor: state.bases.floor,
            household_base_measure: state.base_measure.clone(),
        })
    }

    /// The answer's cells of one release (or pending cells while the month
    /// has not ended) at `level`, with rates.
    fn push_cells(
        &self,
        cells: &mut Vec<pb::Cell>,
        table: &GemeenteTable,
        level: wijkradar_domain::AreaLevel,
        name: &str,
        period: &str,
        release: Option<VersionedRelease>,
    ) {
        let state = &self.state;
        let Some((version, released)) = release else {
            for area in table.codes().iter().filter(|a| a.level() == level) {
                cells.push(pb::Cell {
                    area_code: area.to_string(),
                    signal_type: name.to_owned(),
                    month: period.to_owned(),
                    status: pb::CellStatus::Pending.into(),
                    rate_area_code: area.to_string(),
                    ..Default::default()
                });
            }
            return;
        };
        let rates = state.bases.rates(&released);
        for ((area, released), rate) in released.into_iter().zip(rates) {
            if area.level() != level {
                continue;
            }
            let (status, value) = match released {
                Released::Value(v) => (pb::CellStatus::Released, Some(v)),
                Released::Suppressed => (pb::CellStatus::Suppressed, None),
            };
            let (rate_per_1000, rate_area, household_base) = match rate {
                Rate::Own { per_1000, base } => (Some(per_1000), area, Some(base)),
                Rate::RolledUp {
                    area: wijk,
                    per_1000,
                    base,
                } => (Some(per_1000), wijk, Some(base)),
                Rate::None => (None, area, state.bases.per_area.get(&area).copied()),
            };
            cells.push(pb::Cell {
                area_code: area.to_string(),
                signal_type: name.to_owned(),
                month: period.to_owned(),
                status: status.into(),
                value,
                rate_per_1000,
                rate_area_code: rate_area.to_string(),
                household_base,
                release_version: version,
            });
        }
    }

    /// Materialises the release of every table of a month before
    /// `closed_before` that has no release yet or changed since (within the
    /// version cap); what the scheduler runs. Returns how many it stored.
    pub(crate) fn materialise_ended(&self, closed_before: Month) -> Result<usize, ApiError> {
        let now = crate::ingest::current_month();
        let state = &self.state;
        let mut tables: HashMap<GemeenteCode, GemeenteTable> = HashMap::new();
        let mut stored = 0;
        for (g, signal_type, month, changes) in state.store.tables()? {
            if month >= closed_before || month >= now {
                continue;
            }
            if let Some(s) = state.store.release_snapshot(&signal_type, month, g)?
                && (s.state == changes || s.version >= state.max_versions)
            {
                continue;
            }
            let table = tables
                .entry(g)
                .or_insert_with(|| GemeenteTable::new(&state.hierarchy, g));
            self.release(table, &signal_type, month, g, now)?;
            stored += 1;
        }
        Ok(stored)
    }

    /// A quarter or year table: per signal type and derived indicator, per
    /// whole period overlapping the range, the distinct households of the
    /// period in the buurt of their latest month, released by the same rules
    /// (computed afresh, release version 1); pending until the period ended.
    fn period_cells(
        &self,
        cells: &mut Vec<pb::Cell>,
        table: &GemeenteTable,
        q: &TableQuery,
        now: Month,
    ) -> Result<(), ApiError> {
        let state = &self.state;
        let households = state.store.households_in(q.gemeente)?;
        let keyed: Vec<(u32, &[HouseholdSignal])> = households
            .iter()
            .map(|(p, signals)| (state.server_key.record_key(p), signals.as_slice()))
            .collect();
        let periods = q.period.covering(q.from, q.to);
        type Counts<'c> = &'c dyn Fn(&[HouseholdSignal], Month) -> Option<BuurtCode>;
        let release_of = |months: &[Month], counts: Counts<'_>| {
            let ended = months.last().is_some_and(|&m| m < now);
            ended.then(|| {
                let totals: Vec<(BuurtCode, CellTotal)> =
                    derived::period_totals(keyed.iter().copied(), months, counts)
                        .into_iter()
                        .collect();
                (1, table.release(&state.policy, &totals))
            })
        };
        for signal_type in &q.signal_types {
            // A type never stored counts nobody.
            let counts = derived::of_type(state.store.type_id(signal_type).unwrap_or(u16::MAX));
            for (label, months) in &periods {
                let release = release_of(months, &counts);
                self.push_cells(cells, table, q.level, signal_type.as_str(), label, release);
            }
        }
        for &d in &q.derived {
            let counts = |signals: &[HouseholdSignal], m: Month| derived::counts_in(d, signals, m);
            for (label, months) in &periods {
                let release = release_of(months, &counts);
                self.push_cells(cells, table, q.level, d.name(), label, release);
            }
        }
        Ok(())
    }

    /// Per derived indicator: the households counting per (month, buurt),
    /// with cell keys from their record keys, so the release rules apply as
    /// to signal types.
    pub(crate) fn derived_totals(
        &self,
        g: GemeenteCode,
        which: &[Derived],
        months: &[Month],
    ) -> Result<HashMap<Derived, DerivedTotals>, ApiError> {
        let state = &self.state;
        let households = state.store.households_in(g)?;
        let keyed: Vec<(u32, &[HouseholdSignal])> = households
            .iter()
            .map(|(p, signals)| (state.server_key.record_key(p), signals.as_slice()))
            .collect();
        Ok(which
            .iter()
            .map(|&d| (d, derived::totals(d, keyed.iter().copied(), months)))
            .collect())
    }

    /// The release of one table (gemeente × type × month), `None` while the
    /// month has not ended. A closed month's table is computed once and
    /// stored; late signals make a new version, up to `max_versions`, after
    /// which the last version stays.
    pub(crate) fn release(
        &self,
        table: &GemeenteTable,
        signal_type: &SignalTypeName,
        month: Month,
        g: GemeenteCode,
        now: Month,
    ) -> Result<Option<VersionedRelease>, ApiError> {
        if month >= now {
            return Ok(None);
        }
        let state = &self.state;
        let from_snapshot = |s: &ReleaseSnapshot| -> Vec<(AreaCode, Released)> {
            let cells = s
                .cells
                .iter()
                .map(|c| c.map_or(Released::Suppressed, Released::Value));
            table.codes().iter().copied().zip(cells).collect()
        };
        let Some(changes) = state.store.table_state(signal_type, month, g)? else {
            // No signal of this type was ever stored: nothing to materialise.
            return Ok(Some((1, table.release(&state.policy, &[]))));
        };
        let previous = state.store.release_snapshot(signal_type, month, g)?;
        if let Some(s) = &previous {
            let fits = s.cells.len() == table.codes().len();
            if fits && (s.state == changes || s.version >= state.max_versions) {
                return Ok(Some((s.version, from_snapshot(s))));
            }
        }
        let released = table.release(
            &state.policy,
            &state.store.buurt_counts(signal_type, month, g)?,
        );
        let snapshot = ReleaseSnapshot {
            version: previous.as_ref().map_or(1, |s| s.version + 1),
            state: changes,
            cells: released
                .iter()
                .map(|(_, r)| {
                    if let Released::Value(v) = r {
                        Some(*v)
                    } else {
                        None
                    }
                })
                .collect(),
        };
        let stored = state.store.store_release_snapshot(
            signal_type,
            month,
            g,
            previous.as_ref(),
            snapshot,
        )?;
        tracing::info!(gemeente = %g, %signal_type, %month, version = stored.version, "release materialised");
        Ok(Some((stored.version, from_snapshot(&stored))))
    }

    fn catalogue(
        &self,
        req: pb::GetCatalogueRequest,
    ) -> Result<pb::GetCatalogueResponse, ApiError> {
        let state = &self.state;
        let g = gemeente_from_proto(&req.gemeente_code, &state.hierarchy)?;
        let areas = state
            .hierarchy
            .all_of(g)
            .into_iter()
            .map(|a| pb::Area {
                code: a.code.to_string(),
                name: a.name,
                level: level_to_proto(a.code.level()).into(),
                parent_code: a.code.parent().map(|p| p.to_string()).unwrap_or_default(),
            })
            .collect();
        let signal_types = state
            .catalogue
            .types()
            .iter()
            .map(|t| pb::SignalType {
                name: t.name.to_string(),
                description: t.description.clone(),
                unit: signal_unit(t.unit).into(),
                kind: signal_kind(t.kind).into(),
            })
            .collect();
        let range = state.store.month_range()?;
        Ok(pb::GetCatalogueResponse {
            areas,
            signal_types,
            first_month: range.map(|r| r.0.to_string()).unwrap_or_default(),
            last_month: range.map(|r| r.1.to_string()).unwrap_or_default(),
            k: state.policy.k(),
            max_noise: state.policy.max_noise(),
        })
    }
}

#[tonic::async_trait]
impl QueryService for Query {
    async fn get_catalogue(
        &self,
        request: Request<pb::GetCatalogueRequest>,
    ) -> Result<Response<pb::GetCatalogueResponse>, Status> {
        let analyst = authorize(&request, Role::Analyst)?;
        let answer = self.catalogue(request.into_inner())?;
        tracing::info!(analyst = %analyst, "catalogue answered");
        Ok(Response::new(answer))
    }

    async fn get_alerts(
        &self,
        request: Request<pb::GetAlertsRequest>,
    ) -> Result<Response<pb::GetAlertsResponse>, Status> {
        let analyst = authorize(&request, Role::Analyst)?;
        let this = Query {
            state: self.state.clone(),
        };
        let answer = tokio::task::spawn_blocking(move || this.alerts(request.into_inner()))
            .await
            .map_err(|_| Status::from(ApiError::Internal))??;
        tracing::info!(analyst = %analyst, "alerts answered");
        Ok(Response::new(answer))
    }

    async fn get_table(
        &self,
        request: Request<pb::GetTableRequest>,
    ) -> Result<Response<pb::GetTableResponse>, Status> {
        let analyst = authorize(&request, Role::Analyst)?;
        let this = Query {
            state: self.state.clone(),
        };
        let answer = tokio::task::spawn_blocking(move || this.table(request.into_inner()))
            .await
            .map_err(|_| Status::from(ApiError::Internal))??;
        tracing::info!(analyst = %analyst, "table answered");
        Ok(Response::new(answer))
    }
}
