"""The web side: reads the published snapshot and renders it; never writes to memcached or the members database."""
