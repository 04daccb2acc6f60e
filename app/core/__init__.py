"""What the web and the warm job share: the snapshot format, the memcached client, settings and log lines."""
