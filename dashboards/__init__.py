"""NovaCron monitoring: dashboards package."""
