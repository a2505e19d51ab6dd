"""Render a manifest into another system's objects, offline: no cluster, no hub is contacted."""
