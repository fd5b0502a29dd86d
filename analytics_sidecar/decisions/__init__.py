"""Decision support: scaling, migrations, failover, placement, tenant SLOs and insights (issue 11)."""
