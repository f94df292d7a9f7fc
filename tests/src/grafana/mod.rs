//! The four Grafana dashboards as typed definitions, rendered to the JSON in
//! `configs/grafana/dashboards/`.
//!
//! A [`Dashboard`] is a list of [`Row`]s of [`Panel`]s; each panel has a kind, a unit, a size
//! and PromQL [`Target`]s. [`Dashboard::to_json`] lays the panels out left to right, wrapping
//! at Grafana's 24 columns, so no two panels overlap, and writes Grafana's dashboard JSON
//! (schema 39) with every panel and target on the provisioned Prometheus datasource
//! ([`DATASOURCE_UID`], see `configs/grafana/provisioning/`).
//!
//! Queries use only the metrics of `docs/metrics.md` and the recording rules of
//! `configs/prometheus/recording.yml`; `tests/tests/grafana_dashboards.rs` checks that the
//! committed JSON is what this module renders and runs every query against a Prometheus the
//! pipeline filled. To change a dashboard, edit it here and run
//! `VLA_UPDATE_DASHBOARDS=1 cargo test -p vla-e2e --test grafana_dashboards`.
//!
//! ```
//! use vla_e2e::grafana::{Panel, Target};
//! let p = Panel::stat("MRR").unit("currencyUSD").target(Target::new("max(vla_mrr_total)", "MRR"));
//! assert_eq!(p.targets[0].expr, "max(vla_mrr_total)");
//! ```
//!
//! Business gauges (customers, MRR) are fleet-wide numbers that every API replica reports
//! alike, so panels take their `max`, not their `sum`.

use serde_json::{Value, json};

/// The uid of the provisioned Prometheus datasource every panel queries.
pub const DATASOURCE_UID: &str = "prometheus";
/// Grafana's dashboard JSON schema version the files are written in.
pub const SCHEMA_VERSION: u32 = 39;
/// Width of Grafana's grid, in columns.
pub const GRID_WIDTH: u32 = 24;

/// What a panel draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanelKind {
    /// Lines (or bars) over time.
    Timeseries,
    /// One big number.
    Stat,
    /// A dial between min and max.
    Gauge,
    /// Horizontal bars, one per series.
    BarGauge,
    /// Rows of an instant query.
    Table,
    /// Shares of a whole.
    PieChart,
}

impl PanelKind {
    /// Grafana's `type` of the panel.
    pub fn grafana_type(self) -> &'static str {
        match self {
            PanelKind::Timeseries => "timeseries",
            PanelKind::Stat => "stat",
            PanelKind::Gauge => "gauge",
            PanelKind::BarGauge => "bargauge",
            PanelKind::Table => "table",
            PanelKind::PieChart => "piechart",
        }
    }
}

/// One PromQL query of a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The PromQL expression; may use `$__rate_interval`, `$__range` and `$customer`.
    pub expr: String,
    /// Legend template, e.g. `{{model}}`.
    pub legend: String,
    /// Minimum step (`1h`, `1d`) for windows that must not overlap, such as daily counts.
    pub interval: Option<String>,
}

impl Target {
    /// A query with its legend.
    pub fn new(expr: impl Into<String>, legend: impl Into<String>) -> Self {
        Self {
            expr: expr.into(),
            legend: legend.into(),
            interval: None,
        }
    }

    /// Sets the minimum step.
    pub fn every(mut self, interval: impl Into<String>) -> Self {
        self.interval = Some(interval.into());
        self
    }
}

/// A threshold step: from `value` up, the colour is `color` (`None`: the base colour).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Lower bound, `None` for the base step.
    pub value: Option<f64>,
    /// Grafana colour name.
    pub color: &'static str,
}

/// One panel of a dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Title shown on the panel.
    pub title: String,
    /// Hover text: what the panel shows and how it is computed.
    pub description: String,
    /// What it draws.
    pub kind: PanelKind,
    /// Grafana unit id (`reqps`, `s`, `percentunit`, ...).
    pub unit: Option<String>,
    /// Axis or dial bounds.
    pub min: Option<f64>,
    /// Upper bound.
    pub max: Option<f64>,
    /// Colour thresholds, base step first.
    pub thresholds: Vec<Step>,
    /// Timeseries drawn as bars (counts per hour or day).
    pub bars: bool,
    /// Width in grid columns (1 to 24).
    pub width: u32,
    /// Height in grid rows.
    pub height: u32,
    /// The queries.
    pub targets: Vec<Target>,
}

impl Panel {
    /// A panel of `kind` with the default size (12 × 8 for charts, 6 × 5 for single values).
    pub fn new(kind: PanelKind, title: impl Into<String>) -> Self {
        let (width, height) = match kind {
            PanelKind::Stat | PanelKind::Gauge => (6, 5),
            _ => (12, 8),
        };
        Self {
            title: title.into(),
            description: String::new(),
            kind,
            unit: None,
            min: None,
            max: None,
            thresholds: Vec::new(),
            bars: false,
            width,
            height,
            targets: Vec::new(),
        }
    }

    /// A timeseries panel.
    pub fn timeseries(title: impl Into<String>) -> Self {
        Self::new(PanelKind::Timeseries, title)
    }

    /// A stat panel.
    pub fn stat(title: impl Into<String>) -> Self {
        Self::new(PanelKind::Stat, title)
    }

    /// A gauge panel.
    pub fn gauge(title: impl Into<String>) -> Self {
        Self::new(PanelKind::Gauge, title)
    }

    /// A bar gauge panel.
    pub fn bargauge(title: impl Into<String>) -> Self {
        Self::new(PanelKind::BarGauge, title)
    }

    /// A table panel.
    pub fn table(title: impl Into<String>) -> Self {
        Self::new(PanelKind::Table, title)
    }

    /// A pie chart panel.
    pub fn piechart(title: impl Into<String>) -> Self {
        Self::new(PanelKind::PieChart, title)
    }

    /// Sets the description.
    pub fn describe(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    /// Sets the unit.
    pub fn unit(mut self, unit: impl Into<String>) -> Self {
        self.unit = Some(unit.into());
        self
    }

    /// Sets the bounds.
    pub fn range(mut self, min: f64, max: f64) -> Self {
        self.min = Some(min);
        self.max = Some(max);
        self
    }

    /// Sets the thresholds: `base` below the first step, then each `(from, color)`.
    pub fn thresholds(mut self, base: &'static str, steps: &[(f64, &'static str)]) -> Self {
        self.thresholds = std::iter::once(Step {
            value: None,
            color: base,
        })
        .chain(steps.iter().map(|&(v, color)| Step {
            value: Some(v),
            color,
        }))
        .collect();
        self
    }

    /// Draws the timeseries as bars.
    pub fn bars(mut self) -> Self {
        self.bars = true;
        self
    }

    /// Sets the size in grid cells.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.width = width.clamp(1, GRID_WIDTH);
        self.height = height.max(1);
        self
    }

    /// Adds a query.
    pub fn target(mut self, target: Target) -> Self {
        self.targets.push(target);
        self
    }

    fn to_json(&self, id: u32, pos: GridPos) -> Value {
        let instant = self.kind != PanelKind::Timeseries;
        let targets: Vec<Value> = self
            .targets
            .iter()
            .zip(ref_ids())
            .map(|(t, ref_id)| {
                let mut v = json!({
                    "datasource": datasource(),
                    "editorMode": "code",
                    "expr": t.expr,
                    "format": if self.kind == PanelKind::Table { "table" } else { "time_series" },
                    "instant": instant,
                    "legendFormat": t.legend,
                    "range": !instant,
                    "refId": ref_id,
                });
                if let (Some(i), Some(obj)) = (&t.interval, v.as_object_mut()) {
                    obj.insert("interval".into(), json!(i));
                }
                v
            })
            .collect();
        let (color_mode, steps) = if self.thresholds.is_empty() {
            (
                "palette-classic",
                json!([{ "color": "green", "value": null }]),
            )
        } else {
            let steps = self.thresholds.iter();
            let steps: Vec<Value> = steps
                .map(|s| json!({ "color": s.color, "value": s.value }))
                .collect();
            ("thresholds", json!(steps))
        };
        let mut defaults = json!({
            "color": { "mode": color_mode },
            "thresholds": { "mode": "absolute", "steps": steps },
        });
        if let Some(obj) = defaults.as_object_mut() {
            if let Some(u) = &self.unit {
                obj.insert("unit".into(), json!(u));
            }
            if let Some(m) = self.min {
                obj.insert("min".into(), json!(m));
            }
            if let Some(m) = self.max {
                obj.insert("max".into(), json!(m));
            }
            if self.kind == PanelKind::Timeseries {
                obj.insert(
                    "custom".into(),
                    json!({
                        "drawStyle": if self.bars { "bars" } else { "line" },
                        "fillOpacity": if self.bars { 80 } else { 10 },
                        "lineWidth": 1,
                        "showPoints": "never",
                        "spanNulls": false,
                        "stacking": {
                            "group": "A",
                            "mode": if self.bars { "normal" } else { "none" },
                        },
                    }),
                );
            }
        }
        json!({
            "datasource": datasource(),
            "description": self.description,
            "fieldConfig": { "defaults": defaults, "overrides": [] },
            "gridPos": pos.to_json(),
            "id": id,
            "options": self.options(),
            "targets": targets,
            "title": self.title,
            "type": self.kind.grafana_type(),
        })
    }

    fn options(&self) -> Value {
        let reduce = json!({ "calcs": ["lastNotNull"], "fields": "", "values": false });
        match self.kind {
            PanelKind::Timeseries => json!({
                "legend": {
                    "calcs": [],
                    "displayMode": "list",
                    "placement": "bottom",
                    "showLegend": true,
                },
                "tooltip": { "mode": "multi", "sort": "desc" },
            }),
            PanelKind::Stat => json!({
                "colorMode": "value",
                "graphMode": "none",
                "justifyMode": "auto",
                "orientation": "auto",
                "reduceOptions": reduce,
                "textMode": "auto",
            }),
            PanelKind::Gauge => json!({
                "orientation": "auto",
                "reduceOptions": reduce,
                "showThresholdLabels": false,
                "showThresholdMarkers": true,
            }),
            PanelKind::BarGauge => json!({
                "displayMode": "gradient",
                "orientation": "horizontal",
                "reduceOptions": reduce,
                "showUnfilled": true,
            }),
            PanelKind::Table => json!({
                "cellHeight": "sm",
                "footer": { "show": false, "reducer": ["sum"], "fields": "" },
                "showHeader": true,
                "sortBy": [{ "displayName": "Value", "desc": true }],
            }),
            PanelKind::PieChart => json!({
                "displayLabels": ["percent"],
                "legend": {
                    "displayMode": "table",
                    "placement": "right",
                    "showLegend": true,
                    "values": ["value", "percent"],
                },
                "pieType": "pie",
                "reduceOptions": reduce,
                "tooltip": { "mode": "single", "sort": "none" },
            }),
        }
    }
}

/// A titled band of panels.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Title of the row header.
    pub title: String,
    /// Panels, laid out left to right.
    pub panels: Vec<Panel>,
}

impl Row {
    /// A row of `panels`.
    pub fn new(title: impl Into<String>, panels: Vec<Panel>) -> Self {
        Self {
            title: title.into(),
            panels,
        }
    }
}

/// A query template variable (`$name`), filled from the datasource.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    /// Name used as `$name` in queries.
    pub name: String,
    /// Label shown in the picker.
    pub label: String,
    /// Grafana's Prometheus variable query, e.g. `label_values(metric, label)`.
    pub query: String,
}

/// A panel's place on the 24-column grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridPos {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width in columns.
    pub w: u32,
    /// Height in rows.
    pub h: u32,
}

impl GridPos {
    fn to_json(self) -> Value {
        json!({ "h": self.h, "w": self.w, "x": self.x, "y": self.y })
    }
}

/// One dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Dashboard {
    /// Stable uid (URLs and links use it).
    pub uid: String,
    /// Title.
    pub title: String,
    /// What it is for.
    pub description: String,
    /// File name under `configs/grafana/dashboards/`.
    pub file_name: String,
    /// Search tags.
    pub tags: Vec<String>,
    /// Auto-refresh period, e.g. `10s`.
    pub refresh: String,
    /// Start of the default time range, e.g. `now-1h` (it ends at `now`).
    pub time_from: String,
    /// Template variables.
    pub variables: Vec<Variable>,
    /// Rows of panels, top to bottom.
    pub rows: Vec<Row>,
}

impl Dashboard {
    /// Every panel with its grid position, rows first in their band: `(row index, panel
    /// index or None for the row header, position)`.
    pub fn layout(&self) -> Vec<(usize, Option<usize>, GridPos)> {
        let mut out = Vec::new();
        let mut y = 0;
        for (r, row) in self.rows.iter().enumerate() {
            out.push((
                r,
                None,
                GridPos {
                    x: 0,
                    y,
                    w: GRID_WIDTH,
                    h: 1,
                },
            ));
            y += 1;
            let (mut x, mut line) = (0, 0);
            for (p, panel) in row.panels.iter().enumerate() {
                let w = panel.width.clamp(1, GRID_WIDTH);
                if x + w > GRID_WIDTH {
                    y += line;
                    (x, line) = (0, 0);
                }
                out.push((
                    r,
                    Some(p),
                    GridPos {
                        x,
                        y,
                        w,
                        h: panel.height,
                    },
                ));
                x += w;
                line = line.max(panel.height);
            }
            y += line;
        }
        out
    }

    /// Grafana's dashboard JSON.
    pub fn to_json(&self) -> Value {
        let panels: Vec<Value> = self
            .layout()
            .into_iter()
            .zip(1u32..)
            .filter_map(|((r, p, pos), id)| {
                let row = self.rows.get(r)?;
                Some(match p {
                    None => json!({
                        "collapsed": false,
                        "gridPos": pos.to_json(),
                        "id": id,
                        "panels": [],
                        "title": row.title,
                        "type": "row",
                    }),
                    Some(p) => row.panels.get(p)?.to_json(id, pos),
                })
            })
            .collect();
        let variables: Vec<Value> = self
            .variables
            .iter()
            .map(|v| {
                json!({
                    "current": {},
                    "datasource": datasource(),
                    "definition": v.query,
                    "hide": 0,
                    "includeAll": false,
                    "label": v.label,
                    "multi": false,
                    "name": v.name,
                    "options": [],
                    "query": {
                        "qryType": 1,
                        "query": v.query,
                        "refId": "PrometheusVariableQueryEditor-VariableQuery",
                    },
                    "refresh": 2,
                    "regex": "",
                    "skipUrlSync": false,
                    "sort": 1,
                    "type": "query",
                })
            })
            .collect();
        json!({
            "annotations": { "list": [] },
            "description": self.description,
            "editable": true,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": null,
            "links": [],
            "panels": panels,
            "refresh": self.refresh,
            "schemaVersion": SCHEMA_VERSION,
            "tags": self.tags,
            "templating": { "list": variables },
            "time": { "from": self.time_from, "to": "now" },
            "timepicker": {},
            "timezone": "browser",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
        })
    }

    /// The JSON as committed: pretty-printed with a final newline.
    pub fn render(&self) -> String {
        format!("{:#}\n", self.to_json())
    }

    /// Every panel, in layout order.
    pub fn panels(&self) -> impl Iterator<Item = &Panel> {
        self.rows.iter().flat_map(|r| r.panels.iter())
    }
}

fn datasource() -> Value {
    json!({ "type": "prometheus", "uid": DATASOURCE_UID })
}

/// Grafana's query ids: A, B, C, ...
fn ref_ids() -> impl Iterator<Item = String> {
    ('A'..='Z').map(String::from)
}

mod dashboards;

pub use dashboards::{business, customer_analytics, operations, safety};

/// The four dashboards of the monitoring stack.
pub fn dashboards() -> Vec<Dashboard> {
    vec![operations(), business(), safety(), customer_analytics()]
}

/// Every query: `(dashboard uid, panel title, expr)` for each panel target, then
/// `(dashboard uid, "$name", query)` for each template variable, in Grafana's syntax (a
/// variable's `label_values(metric, label)` is not PromQL).
pub fn all_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for d in dashboards() {
        for p in d.panels() {
            for t in &p.targets {
                out.push((d.uid.clone(), p.title.clone(), t.expr.clone()));
            }
        }
        for v in &d.variables {
            out.push((d.uid.clone(), format!("${}", v.name), v.query.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::dashboards::dashboard;
    use super::*;

    #[test]
    fn layout_wraps_rows_at_24_columns() {
        let p = |w| Panel::stat("x").size(w, 4);
        let d = Dashboard {
            rows: vec![
                Row::new("a", vec![p(12), p(8), p(8), p(24)]),
                Row::new("b", vec![p(6)]),
            ],
            ..dashboard(("u", "t", "x"), ("1m", "now-1h"), "", vec![])
        };
        let pos: Vec<(u32, u32, u32)> =
            d.layout().iter().map(|(_, _, g)| (g.x, g.y, g.w)).collect();
        assert_eq!(
            pos,
            [
                (0, 0, 24),
                (0, 1, 12),
                (12, 1, 8),
                (0, 5, 8),
                (0, 9, 24),
                (0, 13, 24),
                (0, 14, 6)
            ]
        );
    }

    #[test]
    fn queries_are_listed_with_their_dashboard_and_panel() {
        let q = all_queries();
        assert!(q.contains(&(
            "vla-customer".into(),
            "$customer".into(),
            "label_values(vla_customer_requests_total, customer_id)".into()
        )));
        let panels: usize = dashboards()
            .iter()
            .flat_map(|d| d.panels())
            .map(|p| p.targets.len())
            .sum();
        assert_eq!(q.len(), panels + 1);
    }
}
