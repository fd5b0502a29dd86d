"""NovaCron monitoring: alert_bridge package."""
