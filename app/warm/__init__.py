"""The warm side: polls Last.fm, keeps the members database and publishes snapshots; the only writer."""
