"""Dashboard builders, one module per area; `ALL` lists every board factory in display order."""
