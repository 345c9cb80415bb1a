"""Composers: build policies and critics (networks plus distributions) from spaces and configs."""
