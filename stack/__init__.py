"""NovaCron monitoring: stack package."""
