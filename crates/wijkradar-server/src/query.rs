//! The query service: the catalogue and protected tables, nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::access::{Organisation, Role};
use wijkradar_domain::derived::{self, Derived};
use wijkradar_domain::{AreaCode, GemeenteCode, Month, SignalTypeName};
use wijkradar_proto::v1::{self as pb, query_service_server::QueryService};
use wijkradar_release::{Period, PeriodKind, Released};

use crate::State;
use crate::answer::Answer;
use crate::auth::authorize;
use crate::convert::{
    gemeente_from_proto, level_to_proto, not_released_to_proto, table_query_from_proto,
};
use crate::error::{ApiError, Violation};
use crate::tables::{Measure, Tables};

/// A table's release version and every cell of it, in node order.
pub(crate) type VersionedRelease = (u32, Vec<(AreaCode, Released)>);

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
        let analyst = authorize(&self.state, request, Role::Analyst, call)?;
        self.may_query(&analyst, call, code)?;
        Ok(analyst)
    }

    /// Whether `analyst` may query gemeente `code`; a refusal is audited.
    pub(crate) fn may_query(
        &self,
        analyst: &Organisation,
        call: &str,
        code: &str,
    ) -> Result<GemeenteCode, ApiError> {
        let state = &self.state;
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
        Ok(g)
    }

    pub(crate) fn table(&self, req: pb::GetTableRequest) -> Result<pb::GetTableResponse, ApiError> {
        let state = &self.state;
        let q = table_query_from_proto(req, &state.hierarchy, &state.catalogue)?;
        // Every level is answered from the one audited release of the whole
        // gemeente table, so no combination of levels gives more.
        let tables = Tables::new(self, q.gemeente, true, None)?;
        let mut answer = Answer::new(&state.bases, &tables.table, q.level, q.columns);
        let periods = q.period.covering(q.from, q.to);
        if let (Some(first), Some(last)) = (periods.first(), periods.last()) {
            tables.household_months.set(Some((
                first.first().plus(-(derived::WINDOW_MONTHS as i32)),
                last.last(),
            )));
        }
        let open = match (q.open_data, &state.open_data) {
            (false, _) => None,
            (true, Some(open)) => Some(open),
            (true, None) => {
                return Err(ApiError::Conflict(
                    "open data is not enabled on this aggregator: its configuration has no [open_data] section".into(),
                ));
            }
        };
        let measures = q
            .signal_types
            .iter()
            .map(Measure::Type)
            .chain(q.derived.iter().map(|&d| Measure::Derived(d)));
        for measure in measures {
            for &period in &periods {
                let release = match open {
                    Some(open) => tables.open_release(measure, period, open)?,
                    None => tables.release(measure, period)?,
                };
                let release = release.map_err(not_released_to_proto);
                let crosses = tables.crosses_key_change(measure, period)?;
                answer.part(measure.name(), &period.to_string(), release, crosses);
            }
        }
        let (cells, columns) = answer.finish();
        // Open data has no threshold and no bound on its noise: its ε says
        // how it is protected.
        let (k, max_noise) = match open {
            Some(_) => (0, 0),
            None => (state.policy.k(), state.policy.max_noise()),
        };
        Ok(pb::GetTableResponse {
            cells,
            columns,
            k,
            max_noise,
            rate_floor: state.bases.floor,
            household_base_measure: state.base_measure.clone(),
            next_page_token: String::new(),
            open_data_epsilon: open.map_or(0.0, |o| o.epsilon_per_release),
        })
    }

    /// [`Query::table`] for gRPC clients: pages of the cells layout, and a
    /// whole cells answer over [`MAX_WHOLE_ANSWER`] refused with what to do
    /// instead.
    pub(crate) fn table_paged(
        &self,
        req: pb::GetTableRequest,
    ) -> Result<pb::GetTableResponse, ApiError> {
        let page = page_of(&req)?;
        let mut answer = self.table(req)?;
        if answer.columns.is_some() {
            return Ok(answer);
        }
        match page {
            Some((size, offset, fingerprint)) => {
                let total = answer.cells.len();
                if offset > total {
                    return Err(bad_token());
                }
                let end = (offset + size).min(total);
                answer.cells = answer.cells.drain(offset..end).collect();
                if end < total {
                    answer.next_page_token = format!("{end}.{fingerprint}");
                }
                Ok(answer)
            }
            None => {
                let bytes = prost::Message::encoded_len(&answer);
                if bytes > MAX_WHOLE_ANSWER {
                    return Err(ApiError::TooLarge(Violation::new(
                        "page_size",
                        format!(
                            "the answer has {} cells ({:.1} MB), more than the 4 MiB a gRPC client takes by default: set page_size (at most {MAX_PAGE_CELLS} cells) and follow next_page_token, or ask TABLE_LAYOUT_COLUMNS",
                            answer.cells.len(),
                            bytes as f64 / 1e6
                        ),
                    )));
                }
                Ok(answer)
            }
        }
    }

    /// The earliest month any signal type still keeps.
    pub(crate) fn first_kept_of_all(&self, now: Month) -> Month {
        let state = &self.state;
        state
            .catalogue
            .types()
            .iter()
            .map(|t| state.retention.first_kept(&t.name, now))
            .min()
            .unwrap_or(now)
    }

    /// Materialises every table of a period that ended before
    /// `closed_before` and has no release yet or changed since (within the
    /// version cap): per gemeente with stored signals, each type's months,
    /// quarters and years, and the derived indicators' (whose windows reach
    /// six months past the last signal). What the scheduler runs. With
    /// `only`, that month's tables of the types and derived indicators only.
    /// Returns how many new versions it stored.
    pub(crate) fn materialise_ended(
        &self,
        closed_before: Month,
        only: Option<Month>,
    ) -> Result<usize, ApiError> {
        let state = &self.state;
        let mut by_gemeente: BTreeMap<GemeenteCode, Vec<(SignalTypeName, Month)>> = BTreeMap::new();
        for (g, signal_type, month, _) in state.store.tables()? {
            by_gemeente.entry(g).or_default().push((signal_type, month));
        }
        // Gemeenten are independent: one worker per core takes the next.
        let by_gemeente: Vec<_> = by_gemeente.into_iter().collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stored: Result<Vec<usize>, ApiError> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut stored = 0;
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some((g, tables_of_g)) = by_gemeente.get(i) else {
                                return Ok(stored);
                            };
                            if state.stopping() {
                                return Ok(stored);
                            }
                            stored +=
                                self.materialise_gemeente(*g, tables_of_g, closed_before, only)?;
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a materialising worker panicked"))
                .collect()
        });
        let stored: usize = stored?.into_iter().sum();
        if stored > 0 {
            state.store.flush()?;
            if let Err(e) = state.audit.sync() {
                tracing::error!(error = %e, "audit log");
                return Err(ApiError::Internal);
            }
        }
        Ok(stored)
    }

    /// [`Query::materialise_ended`] for one gemeente with its (type, month)
    /// tables; returns how many new versions it stored.
    fn materialise_gemeente(
        &self,
        g: GemeenteCode,
        tables_of_g: &[(SignalTypeName, Month)],
        closed_before: Month,
        only: Option<Month>,
    ) -> Result<usize, ApiError> {
        // The operator's one month is released whether or not it is closed.
        let tables = Tables::new(
            self,
            g,
            false,
            Some(only.map_or(closed_before, |m| m.plus(1))),
        )?;
        let window = derived::WINDOW_MONTHS as i32;
        if let Some(m) = only {
            tables.household_months.set(Some((m.plus(-window), m)));
            for (signal_type, _) in tables_of_g.iter().filter(|(_, month)| *month == m) {
                let _ = tables.release(Measure::Type(signal_type), Period::month(m))?;
            }
            for d in Derived::ALL {
                let _ = tables.release(Measure::Derived(d), Period::month(m))?;
            }
            return Ok(tables.new_versions.get());
        }
        let ended = |m: Month| m < closed_before && m < tables.now;
        let first = tables_of_g
            .iter()
            .map(|(_, m)| *m)
            .min()
            .expect("one at least");
        let last = tables_of_g
            .iter()
            .map(|(_, m)| *m)
            .max()
            .expect("one at least");
        let types: BTreeSet<&SignalTypeName> = tables_of_g.iter().map(|(t, _)| t).collect();
        for (signal_type, month) in tables_of_g {
            if self.state.stopping() {
                return Ok(tables.new_versions.get());
            }
            if ended(*month) {
                let _ = tables.release(Measure::Type(signal_type), Period::month(*month))?;
            }
        }
        let derived_last = last.plus(window);
        let measures: Vec<Measure<'_>> = types
            .iter()
            .map(|&t| Measure::Type(t))
            .chain(Derived::ALL.into_iter().map(Measure::Derived))
            .collect();
        // A year at a time: the derived months, quarters and the year read
        // the households of that year (and the window before it) once, and
        // only one year's are in memory.
        for year in PeriodKind::Year.covering(first, derived_last) {
            let from = year.first().max(first);
            let to = year.last().min(derived_last);
            tables.household_months.set(Some((from.plus(-window), to)));
            if self.state.stopping() {
                return Ok(tables.new_versions.get());
            }
            for d in Derived::ALL {
                for m in from.through(to).filter(|&m| ended(m)) {
                    let _ = tables.release(Measure::Derived(d), Period::month(m))?;
                }
            }
            let periods = PeriodKind::Quarter.covering(from, to);
            for period in periods.into_iter().chain([year]) {
                if !ended(period.last()) {
                    continue;
                }
                for &measure in &measures {
                    if self.state.stopping() {
                        return Ok(tables.new_versions.get());
                    }
                    let _ = tables.release(measure, period)?;
                }
            }
        }
        Ok(tables.new_versions.get())
    }

    pub(crate) fn catalogue(
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
                payment_arrears: t.payment_arrears,
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
/// A whole cells answer over gRPC at most this large: the default limit of
/// gRPC clients.
pub const MAX_WHOLE_ANSWER: usize = 4 << 20;
/// Cells per page at most.
pub const MAX_PAGE_CELLS: usize = 20_000;

fn bad_token() -> ApiError {
    ApiError::InvalidArgument(vec![Violation::new(
        "page_token",
        "not a token of this request: repeat the request's other fields and page_size exactly",
    )])
}

/// The page a request asks: (size, first cell, fingerprint of the request),
/// or `None` for the whole table. The fingerprint ties a token to the
/// request it came from.
fn page_of(r: &pb::GetTableRequest) -> Result<Option<(usize, usize, String)>, ApiError> {
    if r.page_size == 0 {
        if !r.page_token.is_empty() {
            return Err(ApiError::InvalidArgument(vec![Violation::new(
                "page_size",
                "must be set with page_token",
            )]));
        }
        return Ok(None);
    }
    let size = usize::try_from(r.page_size)
        .ok()
        .filter(|s| (1..=MAX_PAGE_CELLS).contains(s))
        .ok_or_else(|| {
            ApiError::InvalidArgument(vec![Violation::new(
                "page_size",
                format!("must lie in 0 to {MAX_PAGE_CELLS}"),
            )])
        })?;
    let request = format!(
        "{}|{}|{}|{}",
        crate::convert::printable(&r.gemeente_code),
        describe_table(r),
        r.layout,
        r.page_size
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, request.as_bytes());
    let fingerprint = hex::encode(&digest.as_ref()[..8]);
    let offset = if r.page_token.is_empty() {
        0
    } else {
        let (offset, mark) = r.page_token.split_once('.').ok_or_else(bad_token)?;
        if mark != fingerprint {
            return Err(bad_token());
        }
        offset.parse().map_err(|_| bad_token())?
    };
    Ok(Some((size, offset, fingerprint)))
}

pub(crate) fn describe_table(r: &pb::GetTableRequest) -> String {
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
        let code = crate::convert::printable(gemeente(request.get_ref()));
        let analyst = self.analyst_of(&request, call, &code)?;
        let asked = asked(request.get_ref());
        let answer = self
            .answer_granted(&analyst, call, &code, asked, request.into_inner(), work)
            .await?;
        Ok(Response::new(answer))
    }

    /// `work` for an analyst already checked for gemeente `code` (the
    /// dashboard's session, or a certificate), on a blocking thread, then
    /// the audit entry: the same path for every way in.
    pub(crate) async fn answer_granted<Req: Send + 'static, Resp: Send + 'static>(
        &self,
        analyst: &Organisation,
        call: &str,
        code: &str,
        asked: String,
        request: Req,
        work: fn(&Query, Req) -> Result<Resp, ApiError>,
    ) -> Result<Resp, ApiError> {
        let this = Query {
            state: self.state.clone(),
        };
        let call_name = call.to_owned();
        let answer = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let answer = work(&this, request);
            tracing::debug!(call = %call_name, elapsed = ?started.elapsed(), "answer computed");
            answer
        })
        .await
        .map_err(|_| ApiError::Internal)?;
        let refused = answer.as_ref().err().map(|e| e.to_string());
        self.state.audit.record(
            &analyst.name,
            crate::call_event(call, code, &asked, refused),
            false,
        );
        answer
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
            Query::table_paged,
        )
        .await
    }
}
