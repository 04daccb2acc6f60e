"""Development tools: run from a checkout, never installed with the package (setup.cfg, deploy/install.sh)."""
