"""SLOs and self-monitoring of the NovaCron stack (exporters, Prometheus, Alertmanager, services)."""

from __future__ import annotations

from dashboards.sdk import Board, Query, nav_links, stack_variables, stat_panel, table_panel, ts

# The availability SLO every NovaCron target shares: scrapes succeed 99.9% of the time.
OBJECTIVE = 0.999
TARGETS = '{job=~"novacron.*"}'


def _error_ratio(window: str) -> str:
    return f"1 - avg(avg_over_time(up{TARGETS}[{window}]))"


def slo() -> Board:
    board = Board(
        uid="novacron-slo",
        title="NovaCron / SLOs",
        description=f"Availability SLO of NovaCron's targets ({OBJECTIVE:.1%} of scrapes succeed):"
        " burn rates"
        "and remaining error budget.",
        tags=["novacron", "slo"],
        folder="NovaCron",
        variables=stack_variables(),
        links=nav_links(),
        time_from="now-24h",
    )
    budget = 1 - OBJECTIVE
    board.add(
        stat_panel(
            "Availability (30d)",
            "Share of successful scrapes over the SLO window.",
            "percentunit",
            Query(f"avg(avg_over_time(up{TARGETS}[30d]))"),
            steps=((None, "red"), (OBJECTIVE, "green")),
        ),
        w=8,
        h=5,
    )
    board.add(
        stat_panel(
            "Error budget left",
            "Share of the 30-day error budget not yet spent.",
            "percentunit",
            Query(f"1 - ({_error_ratio('30d')}) / {budget:g}"),
            steps=((None, "red"), (0.25, "orange"), (0.5, "green")),
        ),
        w=8,
        h=5,
    )
    board.add(
        stat_panel(
            "Burn rate (1h)",
            "Error ratio over the last hour divided by the budget (1 = on track).",
            "short",
            Query(f"({_error_ratio('1h')}) / {budget:g}"),
            steps=((None, "green"), (6, "orange"), (14.4, "red")),
        ),
        w=8,
        h=5,
    )
    board.add(
        ts(
            "Burn rates",
            "Multi-window burn rates; the page thresholds are 14.4 (1h) and 6 (6h).",
            "short",
            *[Query(f"({_error_ratio(w)}) / {budget:g}", w) for w in ("5m", "1h", "6h", "3d")],
        ),
        w=24,
        h=9,
    )
    board.add(
        table_panel(
            "Availability by job",
            "Per job availability over the last day.",
            "percentunit",
            Query("avg by(job) (avg_over_time(up[1d]))", instant=True, table=True),
        ),
        w=24,
        h=7,
    )
    return board


def self_monitoring() -> Board:
    board = Board(
        uid="novacron-self",
        title="NovaCron / Self-monitoring",
        description="Health of the monitoring stack: targets, scrape cost, Prometheus and Alertmanager.",
        tags=["novacron", "self"],
        folder="NovaCron",
        variables=stack_variables(),
        links=nav_links(),
        time_from="now-3h",
        refresh="30s",
    )
    board.row("Targets")
    board.add(
        stat_panel(
            "Targets down",
            "Scrape targets not answering.",
            "short",
            Query("count(up == 0) or vector(0)"),
            steps=((None, "green"), (1, "red")),
        ),
        w=6,
        h=5,
    )
    board.add(
        stat_panel(
            "Series in head",
            "Active series in Prometheus' head block.",
            "short",
            Query("sum(prometheus_tsdb_head_series)"),
        ),
        w=6,
        h=5,
    )
    board.add(
        table_panel(
            "Targets", "Every target with its up state.", "short", Query("up", instant=True, table=True)
        ),
        w=12,
        h=5,
    )
    board.add(
        ts(
            "Scrape duration",
            "How long each job's scrape takes (exporters must stay under the timeout).",
            "s",
            Query("max by(job) (scrape_duration_seconds)", "{{job}}"),
        ),
        w=12,
    )
    board.add(
        ts(
            "Samples scraped",
            "Samples per scrape by job.",
            "short",
            Query("sum by(job) (scrape_samples_scraped)", "{{job}}"),
        ),
        w=12,
    )
    board.row("Processes")
    board.add(
        ts(
            "Resident memory",
            "Memory of every scraped process.",
            "bytes",
            Query("process_resident_memory_bytes", "{{job}} {{instance}}"),
        ),
        w=12,
    )
    board.add(
        ts(
            "CPU",
            "CPU time per second of every scraped process.",
            "short",
            Query("rate(process_cpu_seconds_total[$__rate_interval])", "{{job}} {{instance}}"),
        ),
        w=12,
    )
    board.add(
        ts(
            "Rule evaluation",
            "Duration of the slowest rule group evaluation.",
            "s",
            Query("max by(rule_group) (prometheus_rule_group_last_duration_seconds)", "{{rule_group}}"),
        ),
        w=12,
    )
    board.add(
        ts(
            "Libvirt exporter",
            "The libvirt exporter's own up and scrape duration.",
            "s",
            Query("novacron_libvirt_scrape_duration_seconds", "{{instance}} duration"),
            Query("novacron_libvirt_up", "{{instance}} up"),
        ),
        w=12,
    )
    return board
