"""Recorded experience: served episodes published to the stream ``<prefix>.experience`` (docs/experience.md).

``record`` is the record format and its codec, ``buffer`` the steps of one episode on the way there,
``recorder`` which episodes are recorded, ``publisher`` the thread that publishes them, ``reader`` reads the
stream back into episodes, ``export`` writes them as a Minari dataset (``maze-worker experience export``).
"""
