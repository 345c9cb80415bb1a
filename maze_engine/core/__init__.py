"""Spaces, the env hierarchy, actor ids, events and statistics: the layer everything else stands on."""
