"""A small wrapper over grafana-foundation-sdk: NovaCron's variables, panel kinds, layout and encoding."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import bargauge, heatmap, nodegraph, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus as gp
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as mc
from grafana_foundation_sdk.models import dashboard as md
from grafana_foundation_sdk.models import prometheus as mp

# Fixed data source uids: provisioning creates the data sources with exactly these uids, so dashboards
# built here resolve without a lookup (and the `datasource` variable defaults to this one).
PROMETHEUS_UID = "novacron-prometheus"
ALERTMANAGER_UID = "novacron-alertmanager"
DS = md.DataSourceRef(type_val="prometheus", uid="${datasource}")

REFRESH_CHOICES = ["10s", "30s", "1m", "5m", "15m", "30m", "1h", "2h", "1d"]
GRID_WIDTH = 24

# Selector over the identity metric; every VM-scoped query joins through it so the provider, region,
# host and tenant variables (and a tenant copy's constant) filter every panel the same way.
VM_FILTER = 'provider=~"$provider", region=~"$region", host=~"$host", tenant=~"$tenant"'
VM_INFO = f"novacron_vm_info{{{VM_FILTER}}}"


def by_vm(expr: str, labels: str = "vm_name, host, tenant, provider") -> str:
    """Join a per-`vm_id` expression with the filtered identity metric."""
    return f"({expr}) * on(vm_id) group_left({labels}) {VM_INFO}"


def only_vm(expr: str) -> str:
    """Filter a per-`vm_id` expression by the variables without adding labels (for sums and top-N)."""
    return f"({expr}) * on(vm_id) group_left() {VM_INFO}"


@dataclass(frozen=True)
class Query:
    """One PromQL target: expression, legend, and whether it is an instant table query."""

    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False
    ref_id: str = ""


@dataclass
class Board:
    """A dashboard under construction: panels are laid out left to right, wrapping at 24 columns."""

    uid: str
    title: str
    description: str
    tags: list[str]
    folder: str
    tenant_scoped: bool = False
    refresh: str = "1m"
    time_from: str = "now-6h"
    variables: list[Any] = field(default_factory=list)
    links: list[Any] = field(default_factory=list)
    _panels: list[Any] = field(default_factory=list)
    _x: int = 0
    _y: int = 0
    _row_h: int = 0
    _next_id: int = 1

    def row(self, title: str) -> None:
        """Start a new (expanded) row section."""
        self._newline()
        self._panels.append(
            gd.Row(title)
            .id(self._take_id())
            .grid_pos(md.GridPos(h=1, w=GRID_WIDTH, x=0, y=self._y))
            .collapsed(False)
        )
        self._y += 1

    def add(self, panel: Any, w: int = 12, h: int = 8) -> None:
        """Place a panel builder in the flow layout."""
        if self._x + w > GRID_WIDTH:
            self._newline()
        panel.id(self._take_id()).grid_pos(md.GridPos(h=h, w=w, x=self._x, y=self._y))
        self._panels.append(panel)
        self._x += w
        self._row_h = max(self._row_h, h)

    def _newline(self) -> None:
        self._y += self._row_h
        self._x, self._row_h = 0, 0

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def build(self) -> dict[str, Any]:
        """Build with the SDK, then encode to plain JSON-compatible data."""
        builder = (
            gd.Dashboard(self.title)
            .uid(self.uid)
            .description(self.description)
            .tags(self.tags)
            .editable()
            .refresh(self.refresh)
            .time(self.time_from, "now")
            .timezone("browser")
            .tooltip(md.DashboardCursorSync.CROSSHAIR)
            .timepicker(gd.TimePicker().refresh_intervals(REFRESH_CHOICES))
            .annotations(standard_annotations())
            .links(self.links)
        )
        for variable in self.variables:
            builder = builder.with_variable(variable)
        for panel in self._panels:
            builder = builder.with_panel(panel) if not isinstance(panel, gd.Row) else builder.with_row(panel)
        return encode(builder.build())


def encode(obj: Any) -> dict[str, Any]:
    """The SDK's own JSON encoder, round-tripped into dicts (stable key order for committed files)."""
    data: dict[str, Any] = json.loads(json.dumps(obj, cls=JSONEncoder, sort_keys=True))
    return data


def dump(data: dict[str, Any]) -> str:
    """The committed on-disk form: sorted keys, two-space indent, trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


# ---- variables -------------------------------------------------------------------------------------------


def datasource_variable() -> gd.DatasourceVariable:
    return (
        gd.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .current(md.VariableOption(selected=True, text="Prometheus", value=PROMETHEUS_UID))
    )


def query_variable(
    name: str, label: str, query: str, multi: bool = True, regex: str = ""
) -> gd.QueryVariable:
    """A Prometheus label_values variable; 'All' matches everything (even cloud VMs' empty host)."""
    var = (
        gd.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query(query)
        .refresh(md.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(md.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
    )
    if regex:
        var = var.regex(regex)
    if multi:
        var = (
            var.multi(True)
            .include_all(True)
            .all_value(".*")
            .current(md.VariableOption(selected=True, text="All", value="$__all"))
        )
    return var


def fleet_variables(with_vm: bool = False) -> list[Any]:
    """datasource, provider, region, host, tenant (and vm) chained variables plus ad hoc filters."""
    variables: list[Any] = [
        datasource_variable(),
        query_variable("provider", "Provider", "label_values(novacron_vm_info, provider)"),
        query_variable("region", "Region", 'label_values(novacron_vm_info{provider=~"$provider"}, region)'),
        query_variable(
            "host", "Host", 'label_values(novacron_vm_info{provider=~"$provider", region=~"$region"}, host)'
        ),
        query_variable(
            "tenant",
            "Tenant",
            'label_values(novacron_vm_info{provider=~"$provider", region=~"$region", host=~"$host"}, tenant)',
        ),
    ]
    if with_vm:
        # The value is the vm_id (the join key); the text shown is the VM's name.
        variables.append(
            query_variable(
                "vm",
                "VM",
                f"query_result({VM_INFO})",
                multi=False,
                regex='/.*vm_id="(?<value>[^"]*)".*vm_name="(?<text>[^"]*)".*/',
            )
        )
    variables.append(gd.AdHocVariable("filters").label("Filters").datasource(DS))
    return variables


def host_variables() -> list[Any]:
    return [
        datasource_variable(),
        query_variable("host", "Host", "label_values(novacron_host_info, host)", multi=False),
        gd.AdHocVariable("filters").label("Filters").datasource(DS),
    ]


def stack_variables() -> list[Any]:
    return [datasource_variable(), gd.AdHocVariable("filters").label("Filters").datasource(DS)]


def standard_annotations() -> list[Builder[md.AnnotationQuery]]:
    """Grafana's built-in annotations, plus firing alerts drawn on every time series."""
    builtin = (
        gd.AnnotationQuery()
        .name("Annotations & Alerts")
        .datasource(md.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .built_in(1)
        .enable(True)
        .hide(True)
        .icon_color("blue")
        .type("dashboard")
    )
    alerts = (
        gd.AnnotationQuery()
        .name("Firing alerts")
        .datasource(DS)
        .enable(True)
        .icon_color("red")
        .expr('ALERTS{alertstate="firing"}')
    )
    return [builtin, alerts]


# ---- links -----------------------------------------------------------------------------------------------

TIME_AND_DS = "${__url_time_range}&${datasource:queryparam}"


def vm_link(vm_field: str = "vm_id") -> gd.DashboardLink:
    return data_link(
        "VM detail", f"/d/novacron-vm-detail/vm-detail?{TIME_AND_DS}&var-vm=${{__data.fields.{vm_field}}}"
    )


def host_link(host_field: str = "host") -> gd.DashboardLink:
    return data_link(
        "Host detail",
        f"/d/novacron-host-detail/host-detail?{TIME_AND_DS}&var-host=${{__data.fields.{host_field}}}",
    )


def data_link(title: str, url: str) -> gd.DashboardLink:
    return gd.DashboardLink(title).type(md.DashboardLinkType.LINK).url(url)


def nav_links() -> list[gd.DashboardLink]:
    """Top-bar links to every NovaCron dashboard; they keep the time range and the variables."""
    return [
        gd.DashboardLink("NovaCron")
        .type(md.DashboardLinkType.DASHBOARDS)
        .tags(["novacron"])
        .as_dropdown(True)
        .include_vars(True)
        .keep_time(True)
    ]


# ---- panels ----------------------------------------------------------------------------------------------


def _targets(panel: Any, queries: Sequence[Query]) -> Any:
    for index, q in enumerate(queries):
        target = gp.Dataquery().expr(q.expr).ref_id(q.ref_id or chr(ord("A") + index)).datasource(DS)
        if q.legend:
            target = target.legend_format(q.legend)
        target = target.instant() if q.instant else target.range()
        if q.table:
            target = target.format(mp.PromQueryFormat.TABLE)
        panel = panel.with_target(target)
    return panel


def _common(panel: Any, title: str, description: str, unit: str, queries: Sequence[Query]) -> Any:
    panel = panel.title(title).description(description).unit(unit).datasource(DS)
    return _targets(panel, queries)


def ts(
    title: str,
    description: str,
    unit: str,
    *queries: Query,
    stack: bool = False,
    fill: int = 10,
    max_value: float | None = None,
    min_interval: str = "",
) -> timeseries.Panel:
    """A time series panel with a palette (theme-aware) colour scheme and a table legend.

    `min_interval` (Grafana's query option) floors the step for series that change more slowly than they
    are scraped, such as the sidecar's write-back: fewer points, same picture.
    """
    panel = _common(timeseries.Panel(), title, description, unit, queries)
    if min_interval:
        panel = panel.interval(min_interval)
    panel = (
        panel.line_width(1)
        .fill_opacity(fill)
        .color_scheme(gd.FieldColor().mode(md.FieldColorModeId.PALETTE_CLASSIC))
        .legend(gd_legend(mc.LegendDisplayMode.TABLE, mc.LegendPlacement.BOTTOM))
        .tooltip(gd_tooltip())
    )
    if stack:
        panel = panel.stacking(_stacking())
    if max_value is not None:
        panel = panel.max(max_value).min(0)
    return panel


def gd_legend(mode: mc.LegendDisplayMode, placement: mc.LegendPlacement) -> Any:
    from grafana_foundation_sdk.builders import common as bc

    return (
        bc.VizLegendOptions().display_mode(mode).placement(placement).show_legend(True).calcs(["mean", "max"])
    )


def gd_tooltip() -> Any:
    from grafana_foundation_sdk.builders import common as bc

    return bc.VizTooltipOptions().mode(mc.TooltipDisplayMode.MULTI).sort(mc.SortOrder.DESCENDING)


def _stacking() -> Any:
    from grafana_foundation_sdk.builders import common as bc

    return bc.StackingConfig().mode(mc.StackingMode.NORMAL)


def thresholds(*steps: tuple[float | None, str]) -> gd.ThresholdsConfig:
    """Named colours only: Grafana maps them to theme-appropriate shades in light and dark themes."""
    return (
        gd.ThresholdsConfig()
        .mode(md.ThresholdsMode.ABSOLUTE)
        .steps([md.Threshold(value=v, color=c) for v, c in steps])
    )


UTIL_THRESHOLDS = ((None, "green"), (0.7, "orange"), (0.9, "red"))


def stat_panel(
    title: str,
    description: str,
    unit: str,
    *queries: Query,
    steps: Sequence[tuple[float | None, str]] = ((None, "blue"),),
) -> stat.Panel:
    from grafana_foundation_sdk.builders import common as bc

    # Instant queries: a stat shows the latest value, and one evaluation is far cheaper than a range.
    instant = [Query(q.expr, q.legend, instant=True, table=q.table, ref_id=q.ref_id) for q in queries]
    panel = _common(stat.Panel(), title, description, unit, instant)
    return (
        panel.thresholds(thresholds(*steps))
        .color_scheme(gd.FieldColor().mode(md.FieldColorModeId.THRESHOLDS))
        .graph_mode(mc.BigValueGraphMode.NONE)
        .color_mode(mc.BigValueColorMode.VALUE)
        .reduce_options(bc.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def gauge_bars(
    title: str, description: str, unit: str, *queries: Query, max_value: float | None = 1.0
) -> bargauge.Panel:
    """Horizontal bar gauges (top-N lists); without `max_value` the scale follows the data."""
    from grafana_foundation_sdk.builders import common as bc

    panel = _common(bargauge.Panel(), title, description, unit, queries).min(0)
    if max_value is not None:
        panel = panel.max(max_value)
    steps = UTIL_THRESHOLDS if max_value == 1.0 else ((None, "blue"),)
    return (
        panel.thresholds(thresholds(*steps))
        .color_scheme(gd.FieldColor().mode(md.FieldColorModeId.THRESHOLDS))
        .display_mode(mc.BarGaugeDisplayMode.GRADIENT)
        .orientation(mc.VizOrientation.HORIZONTAL)
        .reduce_options(bc.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def table_panel(
    title: str,
    description: str,
    unit: str,
    *queries: Query,
    links: Sequence[gd.DashboardLink] = (),
    hide: Sequence[str] = ("Time", "__name__", "job", "instance"),
    merge: bool = False,
) -> table.Panel:
    """An instant table; `links` become data links (drill-downs) on every cell."""
    panel = _common(table.Panel(), title, description, unit, queries)
    panel = panel.cell_height(mc.TableCellHeight.SM).show_header(True)
    if links:
        panel = panel.data_links(list(links))
    if merge:
        panel = panel.with_transformation(md.DataTransformerConfig(id_val="merge", options={}))
    panel = panel.with_transformation(
        md.DataTransformerConfig(
            id_val="organize", options={"excludeByName": {name: True for name in hide}, "renameByName": {}}
        )
    )
    return panel


# A heatmap cell narrower than a few pixels is unreadable: about 200 columns across a half-width panel.
HEATMAP_MAX_POINTS = 200


def heatmap_panel(title: str, description: str, unit: str, expr: str) -> heatmap.Panel:
    """A heatmap from pre-bucketed rows: `expr` yields one series per bucket, labelled `le` (upper bound)."""
    from grafana_foundation_sdk.builders import heatmap as bh

    panel = _common(heatmap.Panel(), title, description, unit, [Query(expr, "{{le}}")])
    return (
        panel.max_data_points(HEATMAP_MAX_POINTS)
        .calculate(False)
        .rows_frame(bh.RowsHeatmapOptions().layout(mc.HeatmapCellLayout.LE).value("VMs"))
        .color(
            bh.HeatmapColorOptions()
            .mode(_heat_mode())
            .scheme("Oranges")
            .fill("dark-orange")
            .steps(64)
            .exponent(0.5)
            .reverse(False)
        )
        .y_axis(bh.YAxisConfig().unit(unit))
        .cell_values(bh.CellValues().unit("short"))
    )


def _heat_mode() -> Any:
    from grafana_foundation_sdk.models import heatmap as mh

    return mh.HeatmapColorMode.SCHEME


def node_graph(title: str, description: str, nodes: Query, edges: Query) -> nodegraph.Panel:
    """Node graph from two instant tables: nodes (id, title, subtitle) and edges (id, source, target)."""
    panel = _common(nodegraph.Panel(), title, description, "none", [nodes, edges])
    return panel
