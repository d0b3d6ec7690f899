//! The query service: the catalogue and protected tables, nothing else.

use std::sync::Arc;

use std::collections::HashMap;
use tonic::{Request, Response, Status};

use crate::access::{Organisation, Role};
use wijkradar_domain::derived::{self, Derived, HouseholdSignal};
use wijkradar_domain::{AreaCode, BuurtCode, CellTotal, GemeenteCode, Month, SignalTypeName};
use wijkradar_proto::v1::{self as pb, query_service_server::QueryService};
use wijkradar_release::{GemeenteTable, Released};
use wijkradar_store::ReleaseSnapshot;

use crate::State;
use crate::answer::Answer;
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
    /// The calling analyst, if it may query gemeente `code`. Checked before
    /// anything is read, with one answer whether or not the other
    /// municipality has data.
    fn analyst_of<T>(
        &self,
        request: &Request<T>,
        call: &str,
        code: &str,
    ) -> Result<Organisation, ApiError> {
        let state = &self.state;
        let analyst = authorize(state, request, Role::Analyst, call)?;
        let g = gemeente_from_proto(code, &state.hierarchy)?;
        if !analyst.may_query(g) {
            tracing::warn!(organisation = %analyst.name, gemeente = %g, "refused a query outside the analyst's municipalities");
            let message = format!(
                "organisation `{}` may not query figures of {g}",
                analyst.name
            );
            state.audit.record(
                &analyst.name,
                crate::call_event(call, &g.to_string(), "", Some(message.clone())),
                false,
            );
            return Err(ApiError::PermissionDenied(message));
        }
        Ok(analyst)
    }

    fn table(&self, req: pb::GetTableRequest) -> Result<pb::GetTableResponse, ApiError> {
        let state = &self.state;
        let q = table_query_from_proto(req, &state.hierarchy, &state.catalogue)?;
        // Every level is answered from the one audited release of the whole
        // gemeente table, so no combination of levels gives more.
        let table = GemeenteTable::new(&state.hierarchy, q.gemeente);
        let now = crate::ingest::current_month();
        let mut answer = Answer::new(&state.bases, &table, q.level, q.columns);
        if q.period != Period::Month {
            self.period_cells(&mut answer, &table, &q, now)?;
        } else {
            self.month_cells(&mut answer, &table, &q, now)?;
        }
        let (cells, columns) = answer.finish();
        Ok(pb::GetTableResponse {
            cells,
            columns,
            k: state.policy.k(),
            max_noise: state.policy.max_noise(),
            rate_floor: state.bases.floor,
            household_base_measure: state.base_measure.clone(),
        })
    }

    /// A month table: per signal type its materialised releases, then the
    /// derived indicators computed afresh.
    fn month_cells(
        &self,
        answer: &mut Answer<'_>,
        table: &GemeenteTable,
        q: &TableQuery,
        now: Month,
    ) -> Result<(), ApiError> {
        let state = &self.state;
        for signal_type in &q.signal_types {
            let first_kept = state.retention.first_kept(signal_type, now);
            for month in q.from.through(q.to) {
                let release = if month < first_kept {
                    Err(pb::CellStatus::Purged)
                } else {
                    self.release(table, signal_type, month, q.gemeente, now)?
                        .ok_or(pb::CellStatus::Pending)
                };
                answer.part(signal_type.as_str(), &month.to_string(), release);
            }
        }
        if !q.derived.is_empty() {
            let months: Vec<Month> = q.from.through(q.to).collect();
            let totals = self.derived_totals(q.gemeente, &q.derived, &months)?;
            // A derived indicator counts every type: it is purged from the
            // month the type kept longest is.
            let first_kept = self.first_kept_of_all(now);
            for d in &q.derived {
                for &month in &months {
                    let release = if month < first_kept {
                        Err(pb::CellStatus::Purged)
                    } else {
                        self.derived_release(table, &totals[d], month, now)
                    };
                    answer.part(d.name(), &month.to_string(), release);
                }
            }
        }
        Ok(())
    }

    /// The earliest month any signal type still keeps.
    fn first_kept_of_all(&self, now: Month) -> Month {
        let state = &self.state;
        state
            .catalogue
            .types()
            .iter()
            .map(|t| state.retention.first_kept(&t.name, now))
            .min()
            .unwrap_or(now)
    }

    /// A derived indicator's month, released afresh (version 1).
    pub(crate) fn derived_release(
        &self,
        table: &GemeenteTable,
        totals: &DerivedTotals,
        month: Month,
        now: Month,
    ) -> Result<VersionedRelease, pb::CellStatus> {
        if month >= now {
            return Err(pb::CellStatus::Pending);
        }
        let month_totals: Vec<(BuurtCode, CellTotal)> = totals
            .iter()
            .filter(|((m, _), _)| *m == month)
            .map(|((_, b), t)| (*b, *t))
            .collect();
        Ok((1, table.release(&self.state.policy, &month_totals)))
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
            // Served by no one yet: one flush for all of them at the end.
            self.release_durably(table, &signal_type, month, g, now, false)?;
            stored += 1;
        }
        if stored > 0 {
            state.store.flush()?;
            if let Err(e) = state.audit.sync() {
                tracing::error!(error = %e, "audit log");
                return Err(ApiError::Internal);
            }
        }
        Ok(stored)
    }

    /// A quarter or year table: per signal type and derived indicator, per
    /// whole period overlapping the range, the distinct households of the
    /// period in the buurt of their latest month, released by the same rules
    /// (computed afresh, release version 1); pending until the period ended.
    fn period_cells(
        &self,
        answer: &mut Answer<'_>,
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
        // A period part of which is past retention is purged whole: a
        // partial count would read as a fall.
        let release_of = |months: &[Month], first_kept: Month, counts: Counts<'_>| {
            if months.first().is_some_and(|&m| m < first_kept) {
                return Err(pb::CellStatus::Purged);
            }
            if months.last().is_none_or(|&m| m >= now) {
                return Err(pb::CellStatus::Pending);
            }
            let totals: Vec<(BuurtCode, CellTotal)> =
                derived::period_totals(keyed.iter().copied(), months, counts)
                    .into_iter()
                    .collect();
            Ok((1, table.release(&state.policy, &totals)))
        };
        for signal_type in &q.signal_types {
            // A type never stored counts nobody.
            let counts = derived::of_type(state.store.type_id(signal_type).unwrap_or(u16::MAX));
            let first_kept = state.retention.first_kept(signal_type, now);
            for (label, months) in &periods {
                let release = release_of(months, first_kept, &counts);
                answer.part(signal_type.as_str(), label, release);
            }
        }
        let first_kept = self.first_kept_of_all(now);
        for &d in &q.derived {
            let counts = |signals: &[HouseholdSignal], m: Month| derived::counts_in(d, signals, m);
            for (label, months) in &periods {
                let release = release_of(months, first_kept, &counts);
                answer.part(d.name(), label, release);
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
        self.release_durably(table, signal_type, month, g, now, true)
    }

    /// [`Query::release`]; a new version is made durable (store and audit
    /// log) before it is returned when `durable`, else by the caller later.
    fn release_durably(
        &self,
        table: &GemeenteTable,
        signal_type: &SignalTypeName,
        month: Month,
        g: GemeenteCode,
        now: Month,
        durable: bool,
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
            durable,
        )?;
        tracing::debug!(gemeente = %g, %signal_type, %month, version = stored.version, "release materialised");
        state.audit.record(
            "aggregator",
            wijkradar_audit::Event::Release {
                gemeente: g.to_string(),
                signal_type: signal_type.to_string(),
                month: month.to_string(),
                version: stored.version,
            },
            durable,
        );
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
        let range = state.store.month_range_of(g)?;
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

/// What the audit log says a table request asked for.
fn describe_table(r: &pb::GetTableRequest) -> String {
    format!(
        "level={} types={} months={}..{} period={}",
        r.level().as_str_name(),
        if r.signal_types.is_empty() {
            "all".to_owned()
        } else {
            r.signal_types
                .iter()
                .map(|t| crate::convert::printable(t))
                .collect::<Vec<_>>()
                .join(",")
        },
        crate::convert::printable(&r.from_month),
        crate::convert::printable(&r.to_month),
        r.period().as_str_name(),
    )
}

impl Query {
    /// Answers one call: the analyst's grant for the gemeente first, then
    /// `work` on a blocking thread, then the audit entry (what was asked and
    /// whether it was answered).
    async fn answer<Req: Send + 'static, Resp: Send + 'static>(
        &self,
        call: &'static str,
        request: Request<Req>,
        gemeente: impl Fn(&Req) -> &str,
        asked: impl Fn(&Req) -> String,
        work: fn(&Query, Req) -> Result<Resp, ApiError>,
    ) -> Result<Response<Resp>, Status> {
        let gemeente = crate::convert::printable(gemeente(request.get_ref()));
        let analyst = self.analyst_of(&request, call, &gemeente)?;
        let asked = asked(request.get_ref());
        let this = Query {
            state: self.state.clone(),
        };
        let answer = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let answer = work(&this, request.into_inner());
            tracing::debug!(call, elapsed = ?started.elapsed(), "answer computed");
            answer
        })
        .await
        .map_err(|_| Status::from(ApiError::Internal))?;
        let refused = answer.as_ref().err().map(|e| e.to_string());
        self.state.audit.record(
            &analyst.name,
            crate::call_event(call, &gemeente, &asked, refused),
            false,
        );
        Ok(Response::new(answer?))
    }
}

#[tonic::async_trait]
impl QueryService for Query {
    async fn get_catalogue(
        &self,
        request: Request<pb::GetCatalogueRequest>,
    ) -> Result<Response<pb::GetCatalogueResponse>, Status> {
        self.answer(
            "GetCatalogue",
            request,
            |r| &r.gemeente_code,
            |_| String::new(),
            Query::catalogue,
        )
        .await
    }

    async fn get_alerts(
        &self,
        request: Request<pb::GetAlertsRequest>,
    ) -> Result<Response<pb::GetAlertsResponse>, Status> {
        self.answer(
            "GetAlerts",
            request,
            |r| &r.gemeente_code,
            |r| format!("month={}", crate::convert::printable(&r.month)),
            Query::alerts,
        )
        .await
    }

    async fn get_table(
        &self,
        request: Request<pb::GetTableRequest>,
    ) -> Result<Response<pb::GetTableResponse>, Status> {
        self.answer(
            "GetTable",
            request,
            |r| &r.gemeente_code,
            describe_table,
            Query::table,
        )
        .await
    }
}
