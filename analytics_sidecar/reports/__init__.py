"""Scheduled reports: templates, CSV/PDF rendering, email delivery, archive."""
