"""The contract with producers and submitters: message schemas, encodings, topology names.

Imports neither pika nor maze_engine nor torch, so the producer-side client can be installed without them.
"""
