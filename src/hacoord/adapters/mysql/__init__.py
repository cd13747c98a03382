"""MySQL / MariaDB primary failover adapter."""
