"""NovaCron monitoring: metrics_api package."""
